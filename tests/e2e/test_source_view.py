"""A source opens whole: the answer's [n] links, a card's title and the last "Full articles" line
open the article in the side view, its cited words highlighted and scrolled into view; the
chat's own words follow the browser's language (Arabic or English), Chainlit's own UI too."""

from __future__ import annotations

import secrets

import pytest

from ..conftest import SEEDS
from .conftest import screenshot
from .test_chat import GOLD_QUOTE, SPOKESMAN, ask, finished_message

pytestmark = pytest.mark.e2e

SIDE_TEXT = "#side-view-content .side-text"


def card_number(message, has_text: str) -> int:
    title = message.locator(".bg-card", has_text=has_text).first.locator(".text-2xl").inner_text().strip()
    return int(title[1:title.index("]")])


def in_view(page, selector: str) -> bool:
    """The element is on screen and inside the visible part of every scrolling box around it."""
    return page.evaluate("""selector => {
        const element = document.querySelector(selector);
        if (!element) return false;
        const r = element.getBoundingClientRect();
        if (r.height === 0 || r.top < 0 || r.bottom > innerHeight || r.left < 0 || r.right > innerWidth) return false;
        for (let box = element.parentElement; box; box = box.parentElement) {
            const style = getComputedStyle(box);
            if (!/(auto|scroll|hidden)/.test(style.overflowY)) continue;
            const b = box.getBoundingClientRect();
            if (r.top < b.top - 1 || r.bottom > b.bottom + 1) return false;
        }
        return true; }""", selector)


def test_a_marker_opens_the_whole_article_with_the_quote_highlighted_in_view(page):
    message = ask(page, SPOKESMAN, count=1)
    message.locator(".inline-text").first.wait_for()
    page.wait_for_timeout(1500)
    # Chainlit opens its side view by itself when side elements arrive: not wanted, closed at once
    assert page.locator("#side-view-content").count() == 0
    n = card_number(message, "000_4180ecd25a632971.txt")
    links = message.locator(".message-content a.element-link", has_text=f"[{n}]")
    assert links.count() >= 2  # the marker in the answer and the "Full articles" line
    links.first.click()
    side = page.locator(SIDE_TEXT)
    side.wait_for()
    assert page.locator("#side-view-title").inner_text().strip() == f"[{n}]"
    article = (SEEDS / "000_4180ecd25a632971.txt").read_text(encoding="utf-8")
    shown = side.inner_text()
    lines = [line.strip() for line in article.splitlines() if line.strip()]
    assert all(line in shown for line in lines), [line for line in lines if line not in shown][:2]
    highlight = side.locator(".font-bold", has_text=GOLD_QUOTE)
    assert highlight.count() == 1
    assert highlight.evaluate("e => getComputedStyle(e).backgroundColor") not in ("rgba(0, 0, 0, 0)", "transparent")
    page.wait_for_timeout(800)  # the panel slides in
    assert in_view(page, f"{SIDE_TEXT} .font-bold"), "the first highlighted quote is not scrolled into view"
    assert side.evaluate("e => e.getAttribute('dir')") == "rtl"
    screenshot(page, "30-source-side-view")
    assert page.external_requests == [], page.external_requests


def test_a_card_title_opens_its_article_even_for_the_closest_passages_of_a_refusal(page):
    message = ask(page, "Who won the 2022 football World Cup?", count=1)
    message.locator(".inline-text").first.wait_for()
    content = message.locator(".message-content").first.inner_text()
    assert "Full articles:" in content
    title = message.locator(".bg-card .text-2xl").nth(1)
    number = title.inner_text().strip().split("]")[0] + "]"
    assert title.evaluate("e => getComputedStyle(e).cursor") == "pointer"
    title.click()
    page.locator(SIDE_TEXT).wait_for()
    assert page.locator("#side-view-title").inner_text().strip() == number
    assert page.locator(f"{SIDE_TEXT} .font-bold").count() >= 1  # the passage the card shows
    page.wait_for_timeout(800)  # the panel slides in
    assert in_view(page, f"{SIDE_TEXT} .font-bold")
    assert in_view(page, "#chat-input"), "the chat moved sideways when the article opened"
    screenshot(page, "31-refusal-source-side-view")


def open_settings_labels(page) -> str:
    page.click("#chat-settings-open-modal")
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    page.click("button#mode")
    options = page.get_by_role("listbox").inner_text()
    page.keyboard.press("Escape")
    return dialog.inner_text() + "\n" + options


def upload_reply(page, tmp_path) -> str:
    """Upload an article of its own (the server is shared: another test's would be there already)."""
    token = secrets.token_hex(4)
    article = tmp_path / f"local_news_{token}.txt"
    article.write_text(f"خبر محلي رقم {token}\nأعلنت البلدية افتتاح مكتبة عامة جديدة.\n", encoding="utf-8")
    page.set_input_files("#upload-button-input", str(article))
    page.wait_for_selector("#chat-submit:not([disabled])", timeout=90_000)
    page.click("#chat-submit")
    return finished_message(page, 1).inner_text()


@pytest.mark.parametrize("locale", ["ar-SA", "ar"])
def test_an_arabic_browser_gets_the_chat_in_arabic(browser, chat_url, tmp_path, locale):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
    page = context.new_page()
    try:
        page.goto(chat_url)
        page.wait_for_selector("#upload-button", timeout=60_000)
        # Chainlit's own words, from its translation files (ar-SA.json; "ar" falls back to it)
        labels = open_settings_labels(page)
        for arabic in ("لوحة الإعدادات", "تأكيد", "طريقة الإجابة", "النموذج اللغوي", "عدد المقاطع",
                       "اقتباس من المقالات (دون اتصال)", "نموذج لغوي (litellm)"):
            assert arabic in labels, labels
        assert "Answer mode" not in labels and "Passages" not in labels
        screenshot(page, f"32-arabic-settings-{locale}")
        page.keyboard.press("Escape")
        reply = upload_reply(page, tmp_path)
        assert "تمت فهرسة local_news_" in reply and "Indexed" not in reply, reply
        docs = ask(page, "/docs", count=2).inner_text()
        assert "عدد المقالات في الفهرس" in docs and "مرفوعة" in docs, docs
        answer = ask(page, SPOKESMAN, count=3)
        answer.locator(".inline-text").first.wait_for()
        assert "المقالات كاملة:" in answer.inner_text()
        screenshot(page, f"33-arabic-chat-{locale}")
    finally:
        context.close()


def test_an_english_browser_gets_the_chat_in_english(page, tmp_path):
    labels = open_settings_labels(page)
    for english in ("Settings panel", "Confirm", "Answer mode", "LLM model (litellm string)", "Passages",
                    "Extractive (offline)", "LLM (litellm)"):
        assert english in labels, labels
    assert "طريقة الإجابة" not in labels
    page.keyboard.press("Escape")
    reply = upload_reply(page, tmp_path)
    assert "Indexed local_news_" in reply, reply
