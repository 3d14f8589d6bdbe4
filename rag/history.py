"""Saved chats: the SQLite file the chat's data layer (Chainlit's SQLAlchemyDataLayer) writes,
the folder its source cards are kept in, and the feedback export.

Chainlit does not create its tables: `create_schema` makes the ones its SQL queries (users,
threads, steps, elements, feedbacks), idempotently, at every start. Each answer's step keeps
what the conversation and the export need in its metadata under "sanad" (`saved_turn`): the
question, the answer as generated (before escaping for the page), the cited document ids and
the citations. Only the standard library is used here; the Chainlit glue is in chat_app/app.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, StoreError
from .types import Answer, Citation

DATABASE_NAME = "chat.sqlite3"
FILES_FOLDER = "chat-files"
SECRET_NAME = "chat-auth-secret"
METADATA_KEY = "sanad"
HISTORY_TURNS = 12  # messages of earlier turns the answerer is given, as app.py keeps them

# Column names are Chainlit's (quoted: camelCase); every key of a StepDict/ElementDict/Feedback
# it inserts must have a column, or SQLAlchemyDataLayer's insert fails (and it only logs that).
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    "id" TEXT PRIMARY KEY,
    "identifier" TEXT NOT NULL UNIQUE,
    "metadata" TEXT NOT NULL DEFAULT '{}',
    "createdAt" TEXT
);
CREATE TABLE IF NOT EXISTS threads (
    "id" TEXT PRIMARY KEY,
    "createdAt" TEXT,
    "name" TEXT,
    "userId" TEXT REFERENCES users("id") ON DELETE CASCADE,
    "userIdentifier" TEXT,
    "tags" TEXT,
    "metadata" TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    "id" TEXT PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "threadId" TEXT NOT NULL REFERENCES threads("id") ON DELETE CASCADE,
    "parentId" TEXT,
    "streaming" BOOLEAN NOT NULL DEFAULT 0,
    "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN,
    "metadata" TEXT,
    "tags" TEXT,
    "input" TEXT,
    "output" TEXT,
    "createdAt" TEXT,
    "command" TEXT,
    "modes" TEXT,
    "start" TEXT,
    "end" TEXT,
    "generation" TEXT,
    "showInput" TEXT,
    "language" TEXT,
    "indent" INTEGER,
    "defaultOpen" BOOLEAN,
    "autoCollapse" BOOLEAN,
    "icon" TEXT
);
CREATE INDEX IF NOT EXISTS steps_thread ON steps ("threadId", "createdAt");
CREATE TABLE IF NOT EXISTS elements (
    "id" TEXT PRIMARY KEY,
    "threadId" TEXT REFERENCES threads("id") ON DELETE CASCADE,
    "type" TEXT,
    "url" TEXT,
    "chainlitKey" TEXT,
    "name" TEXT NOT NULL,
    "display" TEXT,
    "objectKey" TEXT,
    "size" TEXT,
    "page" INTEGER,
    "language" TEXT,
    "forId" TEXT,
    "mime" TEXT,
    "props" TEXT,
    "autoPlay" BOOLEAN,
    "playerConfig" TEXT
);
CREATE INDEX IF NOT EXISTS elements_thread ON elements ("threadId");
CREATE INDEX IF NOT EXISTS elements_object ON elements ("objectKey");
CREATE TABLE IF NOT EXISTS feedbacks (
    "id" TEXT PRIMARY KEY,
    "forId" TEXT NOT NULL,
    "threadId" TEXT REFERENCES threads("id") ON DELETE CASCADE,
    "value" INTEGER NOT NULL,
    "comment" TEXT,
    "createdAt" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS feedbacks_step ON feedbacks ("forId");
"""


def database_path(home: Path) -> Path:
    return home / DATABASE_NAME


def database_url(path: Path) -> str:
    """The SQLAlchemy address of the history file (async driver: aiosqlite)."""
    return f"sqlite+aiosqlite:///{path}"


def create_schema(path: Path) -> None:
    """Make the tables Chainlit's SQLAlchemy data layer uses, if they are not there yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # other people's questions: private from the first byte (SQLite gives its -wal and -shm
        # files the database's mode)
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
        with sqlite3.connect(path) as db:
            # several chat sessions write at once; WAL lets them read while one writes
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise StoreError(f"the chat history {path} cannot be used ({exc}): move it away to start a new one, "
                         "or turn history off with RAG_CHAT_HISTORY=0") from None


def auth_secret(home: Path) -> str:
    """The secret that signs the chat's login cookies, kept in <home>/chat-auth-secret (mode 0600)
    so that a restarted server still accepts them and the saved chats stay reachable."""
    path = home / SECRET_NAME
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) < 32:
            raise ConfigError(f"the chat's login secret {path} is empty or too short: delete it "
                              "(a new one is made; everyone logs in again)") from None
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    return secret


class FileStore:
    """The chat's stored elements (source cards, uploaded files) as files under one folder.

    A key is Chainlit's object key (`user/element/name`, with the user's text in it); the file
    name is its SHA-256, so no key can name a path outside the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode("utf-8")).hexdigest()

    def write(self, key: str, data: bytes | str) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(key)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        partial.replace(path)
        return path

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True


# ----------------------------------------------------------------------------- what each answer keeps


def saved_turn(question: str, answer: Answer) -> dict[str, Any]:
    """The step metadata of an answer: enough to continue the conversation and export it."""
    return {METADATA_KEY: {
        "question": question,
        "answer": answer.answer,
        "doc_ids": list(dict.fromkeys(c.doc_id for c in answer.citations)),
        "citations": [{"n": c.n, "doc_id": c.doc_id, "title": c.title, "quote": c.quote,
                       "start": c.start, "end": c.end} for c in answer.citations],
    }}


def _metadata(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):  # SQLite hands JSON back as text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _turn(step: Mapping[str, Any]) -> dict[str, Any] | None:
    turn = _metadata(step.get("metadata")).get(METADATA_KEY)
    return turn if isinstance(turn, dict) and "question" in turn and "answer" in turn else None


def conversation(steps: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The history the answerer is given (as the chat keeps it while a chat is open), rebuilt
    from a saved thread's steps: user/assistant pairs, the assistant's with its doc_ids."""
    history: list[dict[str, Any]] = []
    for step in steps:
        turn = _turn(step)
        if turn is not None:
            history += [{"role": "user", "content": turn["question"]},
                        {"role": "assistant", "content": turn["answer"], "doc_ids": list(turn.get("doc_ids", []))}]
    return history[-HISTORY_TURNS:]


# ----------------------------------------------------------------------------- feedback export


@dataclass(frozen=True)
class FeedbackRecord:
    """One rated answer, as the chat saved it: what was asked, what was answered and quoted."""

    thread_id: str
    step_id: str
    user: str | None
    question: str
    answer: str
    citations: tuple[Citation, ...]
    rating: str  # "up" or "down"
    comment: str | None
    rated_at: str | None
    answered_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feedback_records(path: Path) -> list[FeedbackRecord]:
    """Every rated answer in the history file `path`, oldest answer first."""
    if not path.is_file():
        raise ConfigError(f"there is no chat history at {path}: the chat saves one in its RAG_HOME while "
                          "RAG_CHAT_HISTORY is on; run this with the chat server's RAG_HOME")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            # The page rates the run of a message (Chainlit's on_message step), whose child is the
            # answer; an answer rated itself is found too.
            rows = db.execute("""
                SELECT f."value", f."comment", f."createdAt" AS rated_at, a."id" AS step_id,
                       a."threadId" AS thread_id, a."metadata", a."output", a."createdAt" AS answered_at,
                       t."userIdentifier" AS user,
                       (SELECT u."output" FROM steps u WHERE u."threadId" = a."threadId"
                          AND u."type" = 'user_message' AND u."createdAt" <= a."createdAt"
                        ORDER BY u."createdAt" DESC LIMIT 1) AS asked
                FROM feedbacks f
                JOIN steps a ON a."id" = (
                    SELECT c."id" FROM steps c WHERE c."type" = 'assistant_message'
                      AND (c."id" = f."forId" OR c."parentId" = f."forId")
                    ORDER BY c."metadata" LIKE '%"sanad"%' DESC, c."createdAt" DESC LIMIT 1)
                LEFT JOIN threads t ON t."id" = a."threadId"
                ORDER BY a."createdAt", f."createdAt"
            """).fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the chat history {path} cannot be read ({exc}): is it a Sanad chat history?") from None
    records = []
    for row in rows:
        turn = _turn({"metadata": row["metadata"]}) or {}
        records.append(FeedbackRecord(
            thread_id=row["thread_id"], step_id=row["step_id"], user=row["user"],
            question=turn.get("question", row["asked"] or ""),
            answer=turn.get("answer", row["output"] or ""),
            citations=tuple(Citation(**c) for c in turn.get("citations", [])),
            rating="up" if row["value"] == 1 else "down", comment=row["comment"] or None,
            rated_at=row["rated_at"], answered_at=row["answered_at"]))
    return records
