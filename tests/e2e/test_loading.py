"""A chat server that is still loading its index says so on the page until it is ready."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest

from ..conftest import EVAL, SEEDS
from .conftest import screenshot, start_chat, stop
from .test_chat import ask


@pytest.fixture()
def loading_chat(model_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    squad = json.loads((EVAL / "xquad_ar" / "xquad.ar.json").read_text(encoding="utf-8"))
    paragraphs = [p["context"] for article in squad["data"] for p in article["paragraphs"]][:80]
    for number, text in enumerate(paragraphs):  # enough to embed that the loading can be seen
        (corpus / f"xquad-{number:03d}.txt").write_text(text, encoding="utf-8")
    process, url = start_chat(tmp_path, model_dir, corpus)  # returns at /health: the index is not built yet
    yield url
    stop(process)


def status(url: str, lang: str) -> dict:
    with urllib.request.urlopen(f"{url}/sanad/status?lang={lang}", timeout=10) as response:
        return json.loads(response.read())


def test_the_page_shows_loading_until_the_index_is_ready_then_answers_at_once(browser, loading_chat):
    first = status(loading_chat, "ar")
    assert first == {"ready": False, "text": "تحميل الفهرس والنموذج … يُجاب عن الأسئلة بعد اكتماله"}
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(loading_chat)
        page.wait_for_selector("#chat-input", timeout=60_000)  # the page is up (after its login redirect)
        banner = page.locator("#sanad-loading")
        banner.wait_for(timeout=30_000)
        assert "Loading the index and the model" in banner.inner_text()
        screenshot(page, "40-loading-banner")
        deadline = time.monotonic() + 240
        while status(loading_chat, "en") != {"ready": True}:
            assert time.monotonic() < deadline, "the index was not ready within 240 s"
            assert banner.count() == 1  # still saying so
            time.sleep(0.5)
        banner.wait_for(state="detached", timeout=5_000)  # the page polls every 0.5 s
        began = time.monotonic()
        reply = ask(page, "من أطلق نداء كرايست تشيرش؟", count=1)
        assert "كرايست" in reply.inner_text()
        assert time.monotonic() - began < 30  # nothing left to load (the bench measures the real figure)
    finally:
        context.close()
