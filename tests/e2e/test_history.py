"""Saved chats in a real browser, on servers of this module's own (a temporary RAG_HOME each):
a chat comes back from the sidebar with its answer and source cards and continues with its
history; feedback reaches `rag feedback export`; deleting a chat deletes its rows and files;
with login, each user sees only their own chats, also after a restart of the server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from rag import history
from rag.auth import hash_password
from rag.provision import ensure_default_model

from ..conftest import ROOT, SEEDS
from .conftest import screenshot, start_chat, stop
from .test_chat import ASSISTANT, SPOKESMAN, ask, finished_message

pytestmark = pytest.mark.e2e

SOURCE = "000_4180ecd25a632971.txt"
FOLLOW_UP = "وكيف رد ماسك على ذلك؟"
COMMENT = "الاقتباس الثاني لا يجيب عن السؤال"


@pytest.fixture(scope="module")
def saved_chats(model_dir, tmp_path_factory):
    """A chat server without login: history on, the local user logged in by the header login."""
    ensure_default_model(model_dir)
    home = tmp_path_factory.mktemp("history-home")
    process, url = start_chat(home, model_dir, SEEDS)
    yield url, home
    stop(process)


def open_chat(browser, url: str, path: str = ""):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    page.goto(url + path)
    page.wait_for_selector("#upload-button", timeout=60_000)
    return page


def rows(home, query: str, *args) -> list[tuple]:
    with sqlite3.connect(history.database_path(home)) as db:
        return db.execute(query, args).fetchall()


def answered_thread(home, question: str) -> str:
    """The id of the (newest) saved thread whose first message is `question`."""
    found = rows(home, 'SELECT "threadId" FROM steps WHERE "type" = \'user_message\' AND "output" = ? '
                       'ORDER BY "createdAt" DESC', question)
    assert found, f"no saved message {question!r}"
    return found[0][0]


def cards(message) -> list[str]:
    message.locator(".inline-text").first.wait_for()
    return [" ".join(text.split()) for text in message.locator(".inline-text").all_inner_texts()]


def answer_text(message) -> str:
    """The answer without its source cards."""
    return message.locator(".message-content .prose:not(.inline-text)").first.inner_text()


def test_a_chat_reopens_from_the_sidebar_with_its_cards_and_continues(browser, saved_chats):
    url, home = saved_chats
    page = open_chat(browser, url)
    first = ask(page, SPOKESMAN, count=1)
    shown = cards(first)
    answer = answer_text(first)
    assert SOURCE in " ".join(shown) and "[1]" in answer
    thread_id = answered_thread(home, SPOKESMAN)

    page.goto(url)  # a new chat, in a new page
    page.wait_for_selector("#upload-button", timeout=60_000)
    saved = page.locator(f"#thread-{thread_id}")
    saved.wait_for(timeout=30_000)
    assert page.locator(ASSISTANT).count() == 0
    assert saved.inner_text().strip().startswith("ماذا قال المتحدث")  # named by its first question
    screenshot(page, "20-history-sidebar")

    saved.click()
    page.wait_for_url(f"**/thread/{thread_id}", timeout=30_000)
    reopened = finished_message(page, 1)
    assert cards(reopened) and answer_text(reopened) == answer
    assert cards(reopened) == shown  # the same cards, in the same order, highlighted the same way
    assert reopened.locator(".bg-card .font-bold").count() == first.locator(".bg-card .font-bold").count() >= 1
    screenshot(page, "21-history-reopened")

    # the follow-up only makes sense with the reopened chat's history: it stays on the article
    follow_up = ask(page, FOLLOW_UP, count=2)
    assert SOURCE in " ".join(cards(follow_up))
    assert answered_thread(home, FOLLOW_UP) == thread_id  # saved in the same chat
    user_turns = rows(home, 'SELECT COUNT(*) FROM steps WHERE "threadId" = ? AND "type" = \'user_message\'',
                      thread_id)
    assert user_turns == [(2,)]

    follow_up.hover()
    follow_up.locator(".negative-feedback-off").click()
    page.locator("textarea").last.fill(COMMENT)
    page.click("#submit-feedback")
    follow_up.locator(".negative-feedback-on").wait_for(timeout=10_000)
    screenshot(page, "22-history-feedback")

    export = subprocess.run([sys.executable, "-m", "rag.cli", "feedback", "export", "--json"], cwd=ROOT,
                            env={**os.environ, "RAG_HOME": str(home), "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    records = [json.loads(line) for line in export.stdout.splitlines()]
    rated = [r for r in records if r["thread_id"] == thread_id]
    assert len(rated) == 1, records
    record = rated[0]
    assert (record["rating"], record["comment"], record["question"]) == ("down", COMMENT, FOLLOW_UP)
    assert record["citations"] and all(c["quote"] for c in record["citations"])
    assert SOURCE in [c["doc_id"] for c in record["citations"]]
    assert record["user"] == "local" and record["answer"].strip()
    page.context.close()


def test_deleting_a_chat_deletes_its_rows_and_stored_cards(browser, saved_chats):
    url, home = saved_chats
    question = "Who launched the Christchurch Call?"
    page = open_chat(browser, url)
    message = ask(page, question, count=1)
    cards(message)
    message.hover()
    message.locator(".positive-feedback-off").click()
    page.locator("#submit-feedback").click()
    message.locator(".positive-feedback-on").wait_for(timeout=10_000)
    thread_id = answered_thread(home, question)
    files = history.FileStore(home / history.FILES_FOLDER)
    keys = [key for (key,) in rows(home, 'SELECT "objectKey" FROM elements WHERE "threadId" = ?', thread_id)]
    assert keys and all(files.path(key).is_file() for key in keys)
    assert rows(home, 'SELECT COUNT(*) FROM feedbacks WHERE "threadId" = ?', thread_id) == [(1,)]

    page.reload()
    page.wait_for_selector("#upload-button", timeout=60_000)
    saved = page.locator(f"#thread-{thread_id}")
    saved.hover()
    saved.locator("#thread-options").click()
    page.click("#delete-thread")
    page.get_by_role("alertdialog").get_by_role("button", name="Confirm").click()
    saved.wait_for(state="detached", timeout=15_000)

    for table, column in [("threads", "id"), ("steps", "threadId"), ("elements", "threadId"),
                          ("feedbacks", "threadId")]:
        assert rows(home, f'SELECT COUNT(*) FROM {table} WHERE "{column}" = ?', thread_id) == [(0,)], table
    assert not any(files.path(key).exists() for key in keys)
    page.context.close()


def test_each_user_sees_only_their_own_chats_also_after_a_restart(browser, model_dir, tmp_path):
    ensure_default_model(model_dir)
    users = {"أمل": "كلمة سر أمل", "bob": "bob's password"}
    env = {"RAG_CHAT_USERS": ";".join(f"{name}:{hash_password(secret)}" for name, secret in users.items())}
    process, url = start_chat(tmp_path, model_dir, SEEDS, env)
    try:
        pages = {}
        for name, secret in users.items():
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            page = context.new_page()
            page.goto(url)
            page.fill("#email", name)
            page.fill("#password", secret)
            page.keyboard.press("Enter")
            page.wait_for_selector("#upload-button", timeout=60_000)
            pages[name] = page
        amal, bob = pages["أمل"], pages["bob"]
        cards(ask(amal, SPOKESMAN, count=1))
        amal_thread = answered_thread(tmp_path, SPOKESMAN)
        cards(ask(bob, "Who launched the Christchurch Call?", count=1))
        bob_thread = answered_thread(tmp_path, "Who launched the Christchurch Call?")
        owners = dict(rows(tmp_path, 'SELECT "id", "userIdentifier" FROM threads'))
        assert owners == {amal_thread: "أمل", bob_thread: "bob"}

        stop(process)  # the same RAG_HOME again: the login cookies and the chats are still good
        process, url = start_chat(tmp_path, model_dir, SEEDS, env)
        for name, page in pages.items():
            page.goto(url)
            try:
                page.wait_for_selector("#upload-button", timeout=120_000)
            except Exception:
                screenshot(page, f"23-history-restart-failed-{page.url.rsplit('/', 1)[-1] or 'home'}")
                shown = page.inner_text("body")[:500]
                raise AssertionError(f"{name}'s page after the restart, at {page.url}:\n{shown}\n"
                                     f"server log:\n{(tmp_path / 'server.log').read_text()[-2000:]}") from None
        amal.locator(f"#thread-{amal_thread}").wait_for(timeout=30_000)
        bob.locator(f"#thread-{bob_thread}").wait_for(timeout=30_000)
        assert amal.locator(f"#thread-{bob_thread}").count() == 0
        assert bob.locator(f"#thread-{amal_thread}").count() == 0
        screenshot(bob, "23-history-own-chats-only")

        # nor by address: bob's cookie opens neither amal's chat nor her stored cards
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in bob.context.cookies())
        key = rows(tmp_path, 'SELECT "objectKey" FROM elements WHERE "threadId" = ?', amal_thread)[0][0]
        card_url = f"{url}/sanad/saved-file?" + urllib.parse.urlencode({"key": key})
        for address in (f"{url}/project/thread/{amal_thread}", card_url):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(address, headers={"Cookie": cookie}), timeout=30)
            assert refused.value.code in (401, 404), address
        amal_cookie = "; ".join(f"{c['name']}={c['value']}" for c in amal.context.cookies())
        with urllib.request.urlopen(urllib.request.Request(card_url, headers={"Cookie": amal_cookie}),
                                    timeout=30) as response:
            assert response.headers["content-type"].startswith("text/plain")
            assert "4180ecd25a632971" in response.read().decode()

        bob.goto(f"{url}/thread/{amal_thread}")
        bob.wait_for_timeout(2000)
        assert bob.locator(ASSISTANT).count() == 0  # nothing of hers is shown
        for page in pages.values():
            page.context.close()
    finally:
        stop(process)
