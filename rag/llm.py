"""Chat completions through litellm: the only module that imports it.

Any litellm model string works ("openai/gpt-4o-mini", "anthropic/…", "ollama/qwen2.5", or
"openai/<name>" with `api_base` for an OpenAI-compatible local server), with the provider's
usual environment variables for keys. Provider failures become `LLMError`s that say what went
wrong and how to fix it; the caller falls back to the extractive answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import LLMError
from .prompts import text


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
        kind, values = self._classify(exc)
        name, first_line = type(exc).__name__, (str(exc).strip().splitlines() or ["-"])[0][:300]
        detail = first_line if name in first_line else f"{name}: {first_line}"
        return LLMError(f"{text('en', 'llm_' + kind, **values)} ({detail})", model=self.model, kind=kind,
                        detail=detail, values=values)

    def _classify(self, exc: Exception) -> tuple[str, dict[str, str]]:
        """The kind of failure (LLMError.kind) and the values its user-facing line names."""
        litellm = _litellm()
        message = str(exc).lower()
        provider = self._provider()
        missing = self._missing_keys()
        values = {"model": self.model, "provider": provider, "seconds": f"{self.timeout:g}",
                  "env": " / ".join(missing) or f"{provider.upper()}_API_KEY",
                  "where": self._address(provider) or provider}
        # litellm's OpenAI client reports a missing key as an InternalServerError
        no_credentials = bool(re.search(r"missing credentials|missing \w+ api key|api_key client option", message))
        if isinstance(exc, litellm.Timeout):
            return "timeout", values
        if missing and (no_credentials or isinstance(exc, litellm.AuthenticationError)):
            return "no_key", values
        if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)) or no_credentials:
            return "auth", values
        if isinstance(exc, litellm.APIConnectionError) or "connection error" in message:
            return "unreachable", values
        if isinstance(exc, litellm.NotFoundError) or (isinstance(exc, litellm.BadRequestError)
                                                      and "provider not provided" in message):
            return "unknown_model", values
        if isinstance(exc, litellm.RateLimitError):
            return "rate_limit", values
        return "failed", values

    def _provider(self) -> str:
        try:
            return _litellm().get_llm_provider(self.model, api_base=self.api_base)[1]
        except Exception:  # noqa: BLE001 - an unknown model names no provider
            return self.model.split("/")[0]

    def _address(self, provider: str) -> str | None:
        """The server asked: the configured api_base, else the provider's base-URL variable."""
        return (self.options.get("api_base") or self.api_base or os.environ.get(f"{provider.upper()}_BASE_URL")
                or os.environ.get(f"{provider.upper()}_API_BASE"))

    def _missing_keys(self) -> list[str]:
        """The provider's key variables litellm finds unset (none when a key is passed in options)."""
        if self.options.get("api_key") or (self.api_base and self.model.startswith("openai/")):
            return []
        try:
            missing = _litellm().validate_environment(model=self.model)["missing_keys"]
        except Exception:  # noqa: BLE001 - an unknown provider has no known keys
            return []
        return [name for name in missing if "KEY" in name]



def failure_notice(error: LLMError, lang: str) -> str:
    """The one line a reader sees when the LLM failed and the answer fell back to the extractive
    one, in their language (rag.prompts)."""
    return f"{text(lang, 'llm_' + error.kind, **error.values)} {text(lang, 'llm_extracted')}"
