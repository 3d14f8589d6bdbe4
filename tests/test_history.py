"""Saved chats on a real SQLite file, written through Chainlit's own SQLAlchemyDataLayer: the
schema, the conversation a reopened chat continues, deletion, the feedback export (and its
command), the login secret. The browser tests (tests/e2e/test_history.py) drive the app."""

from __future__ import annotations

import json
import sqlite3
import stat
import uuid

import pytest

from rag import history
from rag.cli import main
from rag.errors import ConfigError
from rag.types import Answer, Citation

from .conftest import run_coroutine

QUESTION = "ماذا قال المتحدث باسم رئيس الوزراء البريطاني عن تعليقات ماسك؟"
QUOTE = "لا يوجد مبرر لمثل هذه التعليقات"
ANSWER = Answer(question=QUESTION, answer=f"قال المتحدث: «{QUOTE}» [1]",
                citations=(Citation(n=1, doc_id="000_4180ecd25a632971.txt", title="ماسك والحرب الأهلية",
                                    quote=QUOTE, start=120, end=151),),
                passages=(), refused=False, mode="extractive")
TABLES = {"users", "threads", "steps", "elements", "feedbacks"}


def tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def count(path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


async def save_chat(path, user: str, turns: list[tuple[str, Answer, int | None, str | None]]) -> tuple[str, list]:
    """A thread as the chat saves it, through Chainlit's API: per turn the user's message, the
    answer with its saved_turn metadata and, if rated, its feedback. → (thread id, step ids)."""
    from chainlit.context import init_http_context
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
    from chainlit.types import Feedback
    from chainlit.user import User

    layer = SQLAlchemyDataLayer(conninfo=history.database_url(path))
    try:
        persisted = await layer.create_user(User(identifier=user))
        thread_id = str(uuid.uuid4())
        init_http_context(thread_id=thread_id, user=persisted)
        await layer.update_thread(thread_id, name=turns[0][0], user_id=persisted.id)
        answer_ids = []
        for n, (question, answer, rating, comment) in enumerate(turns):
            asked, answered = f"2025-01-01T10:0{n}:00.000Z", f"2025-01-01T10:0{n}:05.000Z"
            await layer.create_step({"id": str(uuid.uuid4()), "threadId": thread_id, "name": user,
                                     "type": "user_message", "output": question, "createdAt": asked,
                                     "streaming": False, "metadata": {}})
            # as in the chat: the answer is a child of the message's run, and the page rates the run
            run_id, step_id = str(uuid.uuid4()), str(uuid.uuid4())
            await layer.create_step({"id": run_id, "threadId": thread_id, "name": "on_message", "type": "run",
                                     "createdAt": asked, "streaming": False, "metadata": {}})
            await layer.create_step({"id": step_id, "threadId": thread_id, "parentId": run_id, "name": "Sanad",
                                     "type": "assistant_message", "output": "escaped text shown on the page",
                                     "createdAt": answered, "streaming": False,
                                     "metadata": history.saved_turn(question, answer)})
            if rating is not None:
                await layer.upsert_feedback(Feedback(forId=run_id if n % 2 == 0 else step_id, value=rating,
                                                     comment=comment, threadId=thread_id))
            answer_ids.append(step_id)
        return thread_id, answer_ids
    finally:
        await layer.close()


async def with_layer(path, action):
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer

    layer = SQLAlchemyDataLayer(conninfo=history.database_url(path))
    try:
        return await action(layer)
    finally:
        await layer.close()


def test_schema_is_created_once_and_kept_when_made_again(tmp_path):
    path = history.database_path(tmp_path / "home")
    history.create_schema(path)
    assert TABLES <= tables(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    thread_id, _ = run_coroutine(save_chat(path, "local", [(QUESTION, ANSWER, None, None)]))
    history.create_schema(path)  # every start of the chat
    assert count(path, "steps") == 3 and count(path, "threads") == 1


def test_a_file_that_is_not_a_database_is_named_with_the_fix(tmp_path):
    path = tmp_path / "chat.sqlite3"
    path.write_bytes(b"not sqlite" * 100)
    with pytest.raises(history.StoreError, match="RAG_CHAT_HISTORY=0"):
        history.create_schema(path)


def test_a_reopened_chat_continues_with_the_saved_questions_answers_and_documents(tmp_path):
    path = history.database_path(tmp_path)
    history.create_schema(path)
    second = Answer(question="ومتى حدث ذلك؟", answer="في أغسطس [1]", citations=ANSWER.citations,
                    passages=(), refused=False, mode="extractive")
    thread_id, _ = run_coroutine(save_chat(path, "local", [(QUESTION, ANSWER, None, None),
                                                 ("ومتى حدث ذلك؟", second, None, None)]))
    thread = run_coroutine(with_layer(path, lambda layer: layer.get_thread(thread_id)))
    assert history.conversation(thread["steps"]) == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER.answer, "doc_ids": ["000_4180ecd25a632971.txt"]},
        {"role": "user", "content": "ومتى حدث ذلك؟"},
        {"role": "assistant", "content": "في أغسطس [1]", "doc_ids": ["000_4180ecd25a632971.txt"]},
    ]


def test_deleting_a_chat_deletes_its_steps_and_feedback(tmp_path):
    path = history.database_path(tmp_path)
    history.create_schema(path)
    kept, _ = run_coroutine(save_chat(path, "local", [(QUESTION, ANSWER, 1, None)]))
    gone, _ = run_coroutine(save_chat(path, "local", [(QUESTION, ANSWER, 0, "wrong")]))
    run_coroutine(with_layer(path, lambda layer: layer.delete_thread(gone)))
    with sqlite3.connect(path) as db:
        assert db.execute('SELECT COUNT(*) FROM steps WHERE "threadId" = ?', (gone,)).fetchone()[0] == 0
        assert db.execute('SELECT COUNT(*) FROM threads WHERE "id" = ?', (gone,)).fetchone()[0] == 0
    assert count(path, "feedbacks") == 1 and count(path, "steps") == 3
    assert [r.thread_id for r in history.feedback_records(path)] == [kept]


def test_feedback_export_has_question_answer_citations_rating_and_comment(tmp_path):
    path = history.database_path(tmp_path)
    history.create_schema(path)
    unrated = Answer(question="سؤال بلا تقييم", answer="جواب", citations=(), passages=(), refused=True,
                     mode="extractive")
    thread_id, (down_id, _, up_id) = run_coroutine(save_chat(path, "analyst", [
        (QUESTION, ANSWER, 0, "الاقتباس لا يجيب عن السؤال"), ("سؤال بلا تقييم", unrated, None, None),
        ("Who launched the Christchurch Call?", ANSWER, 1, None)]))
    down, up = history.feedback_records(path)
    assert (down.thread_id, down.step_id, down.user) == (thread_id, down_id, "analyst")
    assert (down.question, down.answer, down.rating) == (QUESTION, ANSWER.answer, "down")
    assert down.comment == "الاقتباس لا يجيب عن السؤال"
    assert down.citations == (Citation(n=1, doc_id="000_4180ecd25a632971.txt",
                                                    title="ماسك والحرب الأهلية", quote=QUOTE, start=120, end=151),)
    assert down.answered_at == "2025-01-01T10:00:05.000Z" and down.rated_at.startswith("20")
    assert (up.step_id, up.rating, up.comment) == (up_id, "up", None)
    assert up.question == "Who launched the Christchurch Call?"


def test_feedback_export_command_writes_jsonl_and_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_HOME", str(tmp_path))
    path = history.database_path(tmp_path)
    history.create_schema(path)
    run_coroutine(save_chat(path, "local", [(QUESTION, ANSWER, 0, "ناقص"), ("Who launched it?", ANSWER, 1, None)]))

    assert main(["feedback", "export", "--json"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["rating"] for r in records] == ["down", "up"] and records[0]["comment"] == "ناقص"
    assert records[0]["citations"][0]["quote"] == QUOTE and records[0]["question"] == QUESTION
    assert "2 rated answers: 1 up, 1 down" in err

    target = tmp_path / "eval.jsonl"
    assert main(["feedback", "export", "--out", str(target)]) == 0
    assert [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()] == records
    assert f"written to {target}" in capsys.readouterr().err

    assert main(["feedback", "export"]) == 0
    summary = capsys.readouterr().out
    assert "- " in summary and QUESTION in summary and "ناقص" in summary and "1 up, 1 down" in summary


def test_feedback_export_without_a_history_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "elsewhere"))
    assert main(["feedback", "export"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "elsewhere" / "chat.sqlite3") in err and "RAG_HOME" in err


def test_login_secret_is_private_and_the_same_after_a_restart(tmp_path):
    secret = history.auth_secret(tmp_path)
    path = tmp_path / history.SECRET_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(secret) >= 32
    assert history.auth_secret(tmp_path) == secret
    path.write_text("short")
    with pytest.raises(ConfigError, match="delete it"):
        history.auth_secret(tmp_path)


def test_stored_files_stay_in_their_folder_whatever_the_key(tmp_path):
    store = history.FileStore(tmp_path / "files")
    key = "user/element/../../../etc/[1] عنوان المقال"
    written = store.write(key, "**بطاقة** المصدر")
    assert written.parent == tmp_path / "files"
    assert store.read(key) == "**بطاقة** المصدر".encode()
    assert store.delete(key) and store.read(key) is None and not store.delete(key)
