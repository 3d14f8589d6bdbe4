"""rag.llm against a local OpenAI-compatible server over real HTTP (tests/openai_server.py)."""

from __future__ import annotations

import pytest

from rag.errors import LLMError
from rag.llm import LLM

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
