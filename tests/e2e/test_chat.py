"""The chat in a real browser: streamed cited answers, highlighted sources, RTL, starters,
settings with a failing LLM, uploads (good and bad) and optional login."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from playwright.sync_api import expect

from .conftest import screenshot, start_chat, stop

pytestmark = pytest.mark.e2e

SPOKESMAN = "ماذا قال المتحدث باسم رئيس الوزراء البريطاني عن تعليقات ماسك؟"
GOLD_QUOTE = "لا يوجد مبرر لمثل هذه التعليقات"
ASSISTANT = ".step[data-step-type='assistant_message']"
NEW_ARTICLE = (
    "غرامة على منصة بث في النمسا\n"
    "فرضت هيئة الإعلام النمساوية غرامة قدرها ثلاثة ملايين ونصف مليون يورو على منصة البث المباشر "
    "سترِيمكس بسبب تقاعسها عن حذف مقاطع تحرض على الكراهية.\n"
    "وقالت الهيئة إن المنصة أمامها ثلاثون يومًا للطعن في القرار.\n")


def ask(page, question: str, *, count: int) -> object:
    """Send a question and wait for the `count`-th assistant message to finish."""
    page.fill("#chat-input", question)
    # Chainlit ignores Enter while it counts a task as running (the send button is disabled then)
    page.wait_for_selector("#chat-submit:not([disabled])", timeout=60_000)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#chat-input').value === ''", timeout=10_000)
    return finished_message(page, count)


def finished_message(page, count: int):
    page.wait_for_function(
        """([selector, count]) => document.querySelectorAll(selector).length >= count
             && !document.querySelector('#stop-button')""", arg=[ASSISTANT, count], timeout=180_000)
    return page.locator(ASSISTANT).nth(count - 1)


def test_arabic_question_streams_a_cited_answer_with_highlighted_source(page):
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    page.reload()
    page.wait_for_selector("#upload-button", timeout=60_000)
    screenshot(page, "01-welcome")
    welcome = page.locator("#welcome-screen").inner_text()
    assert "سند" in welcome and "Sanad" in welcome
    assert page.title().startswith("Sanad")

    message = ask(page, SPOKESMAN, count=1)
    content = message.locator(".message-content").first
    text = content.inner_text()
    assert "[1]" in text and GOLD_QUOTE in text
    assert any('"stream_token"' in f or "stream_token" in f for f in frames), "the answer was not streamed"
    # expect() retries: Chainlit may re-render the message once more after the task ends
    expect(content).to_have_css("direction", "rtl")
    expect(content).to_have_css("text-align", re.compile(r"^(start|right)$"))

    message.locator(".inline-text").first.wait_for()
    cards = message.locator(".bg-card")
    assert cards.first.inner_text().lstrip().startswith("[1]")
    gold_card = cards.filter(has=page.locator(".font-bold", has_text=GOLD_QUOTE))
    assert gold_card.count() == 1  # the cited words are highlighted in their source card
    assert "000_4180ecd25a632971.txt" in gold_card.inner_text()
    screenshot(page, "02-arabic-answer")
    assert page.external_requests == [], page.external_requests


def test_english_question_reads_left_to_right(page):
    message = ask(page, "Which newspaper reported on Musk's fight with the Center for Countering Digital Hate?",
                  count=1)
    content = message.locator(".message-content").first
    assert content.inner_text().startswith(("Answer:", "According to the sources"))
    expect(content).to_have_css("direction", "ltr")
    # the Arabic quote inside the English answer runs right to left in its own paragraph
    quote_block = content.locator("[dir='auto']", has_text="التليجراف").first
    expect(quote_block).to_have_css("direction", "rtl")


def test_refusal_offers_the_closest_passages(page):
    message = ask(page, "Who won the 2022 football World Cup?", count=1)
    assert "The sources do not contain this" in message.locator(".message-content").first.inner_text()
    message.locator(".inline-text").first.wait_for()  # the cards follow the message
    screenshot(page, "03-refusal")


def test_starter_question_works(page):
    starters = page.locator("#starters button")
    assert starters.count() == 4
    page.locator("#starter-ماذا-قال-ماسك-عن-الحرب-الأهلية؟").click()
    message = finished_message(page, 1)
    message.locator(".inline-text").first.wait_for()
    assert "[1]" in message.inner_text() and "000_4180ecd25a632971.txt" in message.inner_text()


def test_follow_up_uses_the_conversation(page):
    ask(page, SPOKESMAN, count=1)
    follow_up = ask(page, "وكيف رد ماسك على ذلك؟", count=2)
    follow_up.locator(".inline-text").first.wait_for()
    assert "000_4180ecd25a632971.txt" in follow_up.inner_text()


def test_fact_line_first_then_quotes_with_cards_numbered_in_order(page):
    message = ask(page, "كم عدد متابعي ماسك حول العالم؟", count=1)
    message.locator(".inline-text").first.wait_for()
    content = message.locator(".message-content").first
    fact = content.locator(".fact-line")
    assert fact.count() == 1 and "193 مليون" in fact.inner_text() and "[1]" in fact.inner_text()
    assert fact.evaluate("e => getComputedStyle(e).fontWeight") in ("700", "bold")
    titles = [t.strip() for t in message.locator(".bg-card").all_inner_texts()]
    numbers = [int(t[1:t.index("]")]) for t in titles if t.startswith("[")]
    assert numbers == list(range(1, len(numbers) + 1)), titles
    # an article without a headline is titled by its first words, never a file hash
    assert not any(t.split("\n")[0].endswith("586579299e5116f1") for t in titles), titles
    screenshot(page, "08-fact-answer")


def test_partly_answerable_question_says_what_is_missing(page):
    message = ask(page, "ماذا قال ماسك وبوتين عن أعمال الشغب في بريطانيا؟", count=1)
    message.locator(".inline-text").first.wait_for()
    text = message.locator(".message-content").first.inner_text()
    assert "لا تذكر المقالات شيئًا عن: بوتين." in text and "[1]" in text
    screenshot(page, "09-uncovered")


def test_topic_switch_after_a_question_answers_the_new_topic(page):
    ask(page, "ما الغرامة التي أقرتها ألمانيا على شبكات التواصل الاجتماعي؟", count=1)
    switched = ask(page, "Who launched the Christchurch Call?", count=2)
    switched.locator(".inline-text").first.wait_for()
    cards = switched.locator(".inline-text").all_inner_texts()
    assert "001_4cc70f0e583a2e76.txt" in cards[0] and not any("004_bc7fe0a8626652c3.txt" in c for c in cards[:1])
    assert "ماكرون" in switched.inner_text()
    screenshot(page, "10-topic-switch")


def test_summary_quotes_each_article_under_its_title(page):
    message = ask(page, "لخص ما تقوله المقالات عن ماسك", count=1)
    message.locator(".inline-text").first.wait_for()
    text = message.locator(".message-content").first.inner_text()
    assert text.startswith("أبرز ما تقوله المقالات") and text.count("من «") >= 2
    screenshot(page, "11-summary")


def test_failing_llm_says_so_and_shows_the_extractive_answer(page):
    page.click("#chat-settings-open-modal")
    page.click("button#mode")
    page.get_by_role("option", name="LLM (litellm)").click()
    page.fill("input#model", "openai/unreachable-model")
    page.click("#confirm")
    message = ask(page, SPOKESMAN, count=1)
    text = message.inner_text()
    assert "openai/unreachable-model" in text and "⚠" in text
    assert GOLD_QUOTE in text and "[1]" in text
    screenshot(page, "04-llm-fallback")


def test_upload_then_ask_about_it(page, tmp_path):
    article = tmp_path / "austria_fine.txt"
    article.write_text(NEW_ARTICLE, encoding="utf-8")
    page.set_input_files("#upload-button-input", str(article))
    page.wait_for_selector("#chat-submit:not([disabled])", timeout=90_000)
    page.click("#chat-submit")
    reply = finished_message(page, 1)
    reply_text = reply.inner_text()
    assert "Indexed austria_fine.txt" in reply_text and "1 document" in reply_text, reply_text
    screenshot(page, "05-upload")
    answer = ask(page, "كم بلغت الغرامة التي فرضتها هيئة الإعلام النمساوية على منصة البث؟", count=2)
    answer.locator(".inline-text").first.wait_for()
    assert "austria_fine.txt" in answer.locator(".inline-text").first.inner_text()
    assert "ثلاثة ملايين ونصف مليون يورو" in answer.locator(".message-content").first.inner_text()


def test_bad_uploads_are_rejected_with_reasons(page, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    unknown = tmp_path / "notes.docx"
    unknown.write_bytes(b"PK\x03\x04 not a text file")
    garbage = tmp_path / "garbled.txt"
    garbage.write_bytes(bytes(range(256)) * 40)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    page.set_input_files("#upload-button-input", [str(empty), str(unknown), str(garbage), str(deep)])
    page.wait_for_selector("#chat-submit:not([disabled])", timeout=90_000)
    page.click("#chat-submit")
    text = finished_message(page, 1).inner_text()
    assert "Rejected empty.txt: the file is empty" in text
    assert "Rejected notes.docx: unsupported type .docx" in text
    assert "Rejected garbled.txt" in text and "UTF-8" in text
    assert "Rejected deep.json: nests too deeply to be read" in text
    screenshot(page, "06-rejected-upload")


def test_arabic_login_with_a_password_hash_and_throttled_guessing(browser, model_dir, tmp_path):
    from rag.auth import hash_password

    from ..conftest import SEEDS

    username, password = "محلل", "كلمة سرّ ١٢٣"
    process, url = start_chat(tmp_path, model_dir, SEEDS, {
        "RAG_CHAT_USERNAME": username, "RAG_CHAT_PASSWORD_HASH": hash_password(password)})
    try:
        with urllib.request.urlopen(url + "/auth/config", timeout=10) as response:
            assert json.load(response)["requireLogin"] is True

        def login(name: str, secret: str) -> tuple[int, dict]:
            data = urllib.parse.urlencode({"username": name, "password": secret}).encode()
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "/login", data=data), timeout=30) as r:
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers)

        # the real login page (it posts multipart form data) with Arabic credentials
        context = browser.new_context(locale="ar")
        page = context.new_page()
        page.goto(url)
        page.fill("#email", username)
        page.fill("#password", password)
        page.keyboard.press("Enter")
        page.wait_for_selector("#chat-input", timeout=60_000)
        screenshot(page, "11-arabic-login")
        context.close()

        assert login(username, password)[0] == 200
        assert [login(username, f"guess-{n}")[0] for n in range(5)] == [401] * 5
        status, headers = login(username, password)  # even the right password waits now
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert login("someone-else", "guess")[0] == 401  # another name is not held up yet
        time.sleep(int(headers["retry-after"]) + 0.2)
        assert login(username, password)[0] == 200
    finally:
        stop(process)


REMOVABLE = (
    "حظر حسابات في الدنمارك\n"
    "أعلنت هيئة الرقابة الدنماركية أنها أمرت بإغلاق سبعمئة وأربعين حسابًا على منصة المراسلة "
    "تلغرامكس بعد نشرها تهديدات لصحفيين.\n")
REMOVABLE_QUESTION = "كم حسابًا أمرت هيئة الرقابة الدنماركية بإغلاقه على منصة تلغرامكس؟"


def test_docs_lists_the_articles_and_remove_takes_an_upload_out(page, tmp_path):
    article = tmp_path / "denmark_[x](http:evil).txt"
    article.write_text(REMOVABLE, encoding="utf-8")
    page.set_input_files("#upload-button-input", str(article))
    page.wait_for_selector("#chat-submit:not([disabled])", timeout=90_000)
    page.click("#chat-submit")
    assert "Indexed denmark_" in finished_message(page, 1).inner_text()
    doc_id = article.name
    before = ask(page, REMOVABLE_QUESTION, count=2)
    before.locator(".inline-text").first.wait_for()
    assert "سبعمئة وأربعين" in before.locator(".message-content").first.inner_text()

    listing = ask(page, "/docs", count=3)
    text = listing.inner_text()
    assert "articles in the index" in text and "000_4180ecd25a632971.txt" in text
    assert f"{doc_id} · حظر حسابات في الدنمارك" in text and "uploaded" in text
    assert listing.locator("a").count() == 0  # the hostile file name is shown as text, not a link

    refused = ask(page, "/remove 000_4180ecd25a632971.txt", count=4).inner_text()
    assert "is not an upload" in refused and "would come back" in refused
    removed = ask(page, f"/remove {doc_id}", count=5).inner_text()
    assert f"Removed {doc_id}" in removed
    after = ask(page, REMOVABLE_QUESTION, count=6)
    page.wait_for_timeout(500)
    assert doc_id not in after.inner_text() and "سبعمئة وأربعين" not in after.inner_text()
    assert doc_id not in ask(page, "/docs", count=7).inner_text()
    screenshot(page, "12-docs-remove")

    # an LLM failure: one line saying what to do, the provider's error collapsed below it
    page.reload()
    page.wait_for_selector("#chat-settings-open-modal", timeout=60_000)
    page.click("#chat-settings-open-modal")
    page.click("button#mode")
    page.get_by_role("option", name="LLM (litellm)").click()
    page.fill("input#model", "openai/unreachable-model")
    page.click("#confirm")
    failed = ask(page, "What did the British prime minister's spokesman say about Musk's comments?", count=1)
    assert "The LLM openai/unreachable-model cannot be reached" in failed.inner_text().replace("\u2060", "")
    details = page.locator(".step[data-step-type='tool']").last
    details.wait_for()
    assert "Connection error" not in details.inner_text()  # collapsed
    details.get_by_text("Technical details").first.click()
    page.wait_for_function("() => document.body.innerText.includes('Connection error')", timeout=10_000)
    screenshot(page, "13-llm-failure-details")
