"""Real outputs of small local models (captured by bench/llm_live.py from llama.cpp's server,
kept in tests/data/llm_outputs/) replayed through the whole LLM path: litellm over HTTP with
streaming, the real prompt, the real verification."""

from __future__ import annotations

import pytest

from rag.api import Index

from .openai_server import captured, fake_openai_server
from .test_answer import GOLD_QUOTE, SPOKESMAN, assert_verbatim

LOCAL_MODEL = "openai/smollm2-135m-instruct"


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_openai_server() as fake:
        yield fake


@pytest.fixture()
def local_index(seed_index, server):
    """The seed index, answering with the local server's model."""
    index = Index(seed_index.settings.replace(llm_api_base=server.url, llm_timeout=20),
                  embedder=seed_index.embedder)
    yield index
    index.close()


def test_echoed_passage_tag_is_not_shown(local_index, server):
    # SmolLM2-135M continued the last passage and closed it: "…والفقائة.\n</passage>"
    server.replies = [captured("smollm2_dev-01.txt")]
    stream = local_index.stream(SPOKESMAN, model=LOCAL_MODEL)
    pieces = list(stream)
    answer = stream.answer()
    assert answer.mode == "llm" and not answer.fell_back
    assert "".join(pieces) == server.replies[0]  # the raw stream, as the model sent it
    assert "</passage>" not in answer.answer and "passage" not in answer.answer
    assert answer.answer == "وأنه قام شخصياً بتضخيم منشورات تحضع السيد ماسك ببلة والفقائة."
    assert answer.unverified and not answer.citations and answer.notice
    assert_verbatim(local_index, answer)


def test_generation_is_bounded(local_index, server):
    # SmolLM2-135M looped on dev-02, repeating one paragraph until the bench's 400-token cap;
    # without a cap it goes on until the server's context is full (minutes on a CPU).
    server.replies = [captured("smollm2_dev-02.txt")]
    question = "في أي مدينة تواجه ناشطون من اليمين المتطرف مع متظاهرين مناهضين للعنصرية؟"
    answer = local_index.ask(question, model=LOCAL_MODEL)
    assert answer.mode == "llm" and answer.unverified
    assert server.requests[-1]["body"]["max_tokens"] == local_index.settings.llm_max_tokens == 1024
    capped = Index(local_index.settings.replace(llm_max_tokens=64), embedder=local_index.embedder)
    capped.ask(question, model=LOCAL_MODEL)
    assert server.requests[-1]["body"]["max_tokens"] == 64
    capped.close()


def test_a_model_that_echoes_its_prompt_falls_back(local_index, server):
    # Gemma-3-270M (base) copied the system prompt and the passage blocks; the quotes inside
    # the copied passages verified, so the echo looked like an answer with four citations.
    server.replies = [captured("gemma3_dev-01.txt")]
    answer = local_index.ask(SPOKESMAN, model=LOCAL_MODEL)
    assert answer.fell_back and answer.mode == "extractive" and answer.model is None
    assert "كرّر النموذج اللغوي" in answer.notice and LOCAL_MODEL in answer.notice
    assert "Rules" not in answer.answer and "وفقًا للمصادر:" in answer.answer
    assert any(GOLD_QUOTE in c.quote for c in answer.citations)
    assert_verbatim(local_index, answer)


def test_an_answer_that_quotes_a_passage_is_not_an_echo(local_index, server):
    server.replies = [f"قال المتحدث باسم رئيس الوزراء إنه «{GOLD_QUOTE}» [1]."]
    answer = local_index.ask(SPOKESMAN, model=LOCAL_MODEL)
    assert answer.mode == "llm" and not answer.fell_back
    assert [c.quote for c in answer.citations] == [GOLD_QUOTE]
