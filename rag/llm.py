"""Chat completions through litellm: the only module that imports it.

Any litellm model string works ("openai/gpt-4o-mini", "anthropic/…", "ollama/qwen2.5", or
"openai/<name>" with `api_base` for an OpenAI-compatible local server), with the provider's
usual environment variables for keys. Provider failures become `LLMError`s that say what went
wrong and how to fix it; the caller falls back to the extractive answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import LLMError


def _litellm():
    # litellm downloads a model price list when imported unless told to use its bundled copy;
    # offline by default means no request leaves the machine before the user's own call.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


LOCAL_SERVER_KEY = "no-key"  # for openai/<name> at an api_base when OPENAI_API_KEY is unset


@dataclass(frozen=True)
class LLM:
    model: str
    api_base: str | None = None
    timeout: float = 60.0
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # passed to litellm.completion as is

    def _kwargs(self, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream,
                                  "timeout": self.timeout, "temperature": 0.0, "num_retries": 0,
                                  "max_retries": 0}
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        if self.api_base:
            kwargs["api_base"] = self.api_base
            if self.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
                # litellm's OpenAI client refuses to send a request without a key, but a local
                # OpenAI-compatible server (llama.cpp, vLLM) started without --api-key takes any.
                kwargs["api_key"] = LOCAL_SERVER_KEY
        kwargs.update(self.options)
        return kwargs

    def complete(self, messages: list[dict[str, str]]) -> str:
        litellm = _litellm()
        try:
            response = litellm.completion(**self._kwargs(messages, stream=False))
            return response.choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - every provider error becomes one LLMError
            raise self._error(exc) from exc

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        litellm = _litellm()
        try:
            for chunk in litellm.completion(**self._kwargs(messages, stream=True)):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> LLMError:
        litellm = _litellm()
        name = type(exc).__name__
        detail = str(exc).splitlines()[0][:300] if str(exc) else name
        where = f" at {self.api_base}" if self.api_base else ""
        if isinstance(exc, litellm.AuthenticationError):
            hint = "set the provider's API key in the environment (e.g. OPENAI_API_KEY)"
        elif isinstance(exc, litellm.RateLimitError):
            hint = "the provider is rate limiting requests: wait and try again, or use another model"
        elif isinstance(exc, litellm.Timeout):
            hint = f"no answer within {self.timeout:.0f} s: raise llm_timeout or check the server"
        elif isinstance(exc, litellm.APIConnectionError) or "connection error" in detail.lower():
            hint = f"the provider{where} cannot be reached: check the address and that the server runs"
        elif isinstance(exc, litellm.NotFoundError):
            hint = "the model was not found: check the model name"
        elif isinstance(exc, litellm.BadRequestError) and "provider" in detail.lower():
            hint = "write the model as provider/name, e.g. openai/gpt-4o-mini or ollama/qwen2.5"
        else:
            hint = "check the model name, key and api_base"
        return LLMError(f"LLM {self.model}{where} failed ({name}: {detail}); {hint}",
                        model=self.model, reason=f"{name}: {detail}; {hint}")
