"""rag.llm against a local OpenAI-compatible server over real HTTP (tests/openai_server.py)."""

from __future__ import annotations

import time

import pytest

from rag.errors import LLMError
from rag.llm import LLM, failure_notice

from .openai_server import fake_openai_server

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_openai_server() as fake:
        yield fake


def test_local_server_needs_no_api_key(server):
    # llama.cpp's server started without --api_key: litellm's OpenAI client still wants a key
    server.replies = ["مرحبا [1]."]
    llm = LLM("openai/smollm2-135m-instruct", api_base=server.url, timeout=10)
    assert "".join(llm.stream(MESSAGES)) == "مرحبا [1]."
    assert llm.complete(MESSAGES) == "مرحبا [1]."
    request = server.requests[0]
    assert request["body"]["model"] == "smollm2-135m-instruct" and request["body"]["stream"] is True
    assert request["body"]["messages"] == MESSAGES


def test_a_configured_key_is_sent_as_is(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-secret")
    server.replies = ["ok"]
    assert LLM("openai/m", api_base=server.url, timeout=10).complete(MESSAGES) == "ok"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-local-secret"
    assert LLM("openai/m", api_base=server.url, timeout=10,
               options={"api_key": "from-options"}).complete(MESSAGES) == "ok"
    assert server.requests[1]["headers"]["authorization"] == "Bearer from-options"


def test_unreachable_server_says_how_to_fix_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMError) as error:
        LLM("openai/m", api_base="http://127.0.0.1:9/v1", timeout=5).complete(MESSAGES)
    assert "cannot be reached" in str(error.value) and "Missing credentials" not in str(error.value)


# ----------------------------------------------------------------------------- failures a person can act on

def failure(model: str, **kwargs) -> LLMError:
    with pytest.raises(LLMError) as error:
        LLM(model, **kwargs).complete(MESSAGES)
    return error.value


def test_a_missing_openai_key_says_which_variable_to_set_at_once_offline(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    began = time.monotonic()
    error = failure("openai/gpt-4o-mini", timeout=30)
    assert time.monotonic() - began < 10  # refused before any request, not after a network timeout
    assert error.kind == "no_key" and "Missing credentials" in error.detail
    line = failure_notice(error, "en")
    assert line.startswith("No API key for openai: set OPENAI_API_KEY, or choose the offline mode.")
    assert "\n" not in line and "Exception" not in line and "Missing credentials" not in line
    arabic = failure_notice(error, "ar")
    assert "OPENAI_API_KEY" in arabic and "مفتاح" in arabic and "\n" not in arabic
    assert "OPENAI_API_KEY" in str(error) and "Missing credentials" in str(error)  # the English message has both


def test_a_missing_anthropic_key_names_its_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    error = failure("anthropic/claude-3-5-haiku-latest", timeout=30)
    assert error.kind == "no_key" and "AuthenticationError" in error.detail
    assert "set ANTHROPIC_API_KEY" in failure_notice(error, "en")


def test_refused_connection_names_the_address(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    error = failure("openai/local", api_base="http://127.0.0.1:9/v1", timeout=5)
    assert error.kind == "unreachable"
    assert failure_notice(error, "en").startswith(
        "The LLM openai/local cannot be reached (http://127.0.0.1:9/v1): check the network")


def test_a_model_without_provider_is_an_unknown_model():
    error = failure("gpt-nonsense-4", timeout=5)
    assert error.kind == "unknown_model" and "provider/name" in failure_notice(error, "en")


def _exceptions():
    import litellm

    where = {"llm_provider": "openai", "model": "gpt-4o-mini"}
    return [
        ("auth", litellm.AuthenticationError(message="Incorrect API key provided: sk-wr***", **where),
         "openai refused the API key: check OPENAI_API_KEY"),
        ("timeout", litellm.Timeout(message="Request timed out.", **where),
         "openai/gpt-4o-mini did not answer within 7 s: try again, raise llm_timeout"),
        ("unknown_model", litellm.NotFoundError(message="The model `gpt-4o-mini` does not exist", **where),
         "Unknown model openai/gpt-4o-mini: check its name"),
        ("rate_limit", litellm.RateLimitError(message="Rate limit reached for requests", **where),
         "openai is limiting requests: wait a moment"),
        ("failed", litellm.InternalServerError(message="The server had an error", **where),
         "The LLM openai/gpt-4o-mini could not be used: check the model name"),
    ]


@pytest.mark.parametrize("kind, exception, line", _exceptions(), ids=[k for k, _, _ in _exceptions()])
def test_each_provider_failure_is_one_line_with_what_to_do(kind, exception, line, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    for call in ("complete", "stream"):
        llm = LLM("openai/gpt-4o-mini", timeout=7, options={"mock_response": exception})
        with pytest.raises(LLMError) as error:
            list(llm.stream(MESSAGES)) if call == "stream" else llm.complete(MESSAGES)
        assert error.value.kind == kind, call
        notice = failure_notice(error.value, "en")
        assert notice.startswith(line) and notice.endswith("This answer is extracted from the sources.")
        assert "\n" not in notice and type(exception).__name__ in error.value.detail
        assert str(exception).split(" - ")[-1][:20] in error.value.detail
        assert "\n" not in failure_notice(error.value, "ar")
