"""Sanad chat: Chainlit handlers over the `rag` library.

Run from the repository root: `make chat`, or
    CHAINLIT_APP_ROOT=chat_app .venv/bin/chainlit run chat_app/app.py --port 8000
The index and the embedding model load once per process, in the background from start-up;
every blocking call runs in a worker thread. `/docs` lists the indexed articles; `/remove ID`
takes an uploaded one out (with its file).

Environment: the `rag` settings (RAG_HOME, RAG_INDEX_DIR, RAG_LLM_MODEL, RAG_K, …);
RAG_CHAT_SOURCES — folders the chat's index must include (default: the repository's seeds/;
the index keeps its other sources, such as uploads); RAG_CHAT_USERNAME + RAG_CHAT_PASSWORD_HASH
(made by `rag chat-password`) or RAG_CHAT_PASSWORD, and/or RAG_CHAT_USERS (name:hash;…) — turn on
password login; RAG_CHAT_HISTORY=0 — do not save chats (saved: Chainlit's SQLAlchemy data layer
on <RAG_HOME>/chat.sqlite3, see rag.history).

Everything shown on the page is untrusted text (articles, LLM output, file names, the user's
own question): it goes through `rag.markdown` before it reaches Chainlit's Markdown renderer,
and the server's Content-Security-Policy keeps the page from loading anything from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import threading
import urllib.parse
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import chainlit as cl
import chainlit.config
import chainlit.server
import chainlit.session
from chainlit.config import config as chainlit_config
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.input_widget import Select, Slider, TextInput

import rag
from rag import auth, ui_text, web
from rag import history as saved
from rag.markdown import MarkdownStream, escape, link, linked_answer, source_article, source_card

log = logging.getLogger("sanad.chat")

SEEDS = Path(__file__).resolve().parent.parent / "seeds"

STARTERS = [
    ("ماذا قال ماسك عن الحرب الأهلية؟", "ماذا قال ماسك عن الحرب الأهلية في بريطانيا؟"),
    ("نداء كرايست تشيرش", "ما هي مبادرة نداء كرايست تشيرش ومن أطلقها؟"),
    ("ماسك ومركز مكافحة الكراهية", "بماذا اتهم ماسك مركز مكافحة الكراهية الرقمية في دعواه القضائية؟"),
    ("Facebook's civil courage initiative", "What is Facebook's Online Civil Courage Initiative in Britain?"),
]

WELCOME = """**أهلًا بك في سند.** اسأل عن مقالات إخبارية عربية حول خطاب الكراهية والتطرف على الإنترنت وتنظيم المنصات: ماسك ومنصة إكس والحكومات، نداء كرايست تشيرش، غرامات ألمانيا، أعمال الشغب في بريطانيا. كل إجابة تقتبس المقالات حرفيًا مع مصادرها.

**Welcome to Sanad.** Ask about Arabic news articles on online hate speech, extremism and platform regulation. Every answer quotes the articles word for word and names its sources. Attach files to add articles."""


# ----------------------------------------------------------------------------- the index

_loading: Future | None = None
_loading_lock = threading.Lock()


def _load_index() -> rag.Index:
    index = rag.Index(rag.Settings.load())
    configured = [p for p in os.environ.get("RAG_CHAT_SOURCES", "").split(os.pathsep) if p]
    # Builds the index on a first start; later starts pick up files changed in any source.
    index.update(configured or [str(SEEDS)], progress=True, notify=print)
    index.load_models()  # now, not on the first question
    print(f"sanad: index ready ({len(index.document_sources())} documents)", flush=True)
    return index


def index_future() -> Future:
    """The one Index of this process, loading in a background thread from the first call."""
    global _loading
    with _loading_lock:
        if _loading is None:
            _loading = Future()

            def run() -> None:
                try:
                    _loading.set_result(_load_index())
                except BaseException as exc:  # delivered to whoever awaits the index
                    _loading.set_exception(exc)

            threading.Thread(target=run, name="sanad-index", daemon=True).start()
        return _loading


async def ready_index() -> rag.Index:
    future = index_future()
    if future.done():
        return future.result()
    async with cl.Step(name=say("index.step"), type="tool") as step:
        step.output = escape(say("index.loading"))
        index = await cl.make_async(future.result)()
        step.output = escape(say("index.ready", count=len(index.document_sources())))
    return index


@cl.on_app_startup
def start_loading() -> None:
    index_future()


# The page shows a "loading" banner (public/status.js) until the index and the models are ready,
# so that the first question is answered at once rather than after the loading.
@chainlit.server.app.get(chainlit_config.run.root_path + "/sanad/status")
async def loading_status(lang: str = "en") -> dict[str, object]:
    future, language = index_future(), ui_text.language(lang)
    if not future.done():
        return {"ready": False, "text": ui_text.text("index.banner", language)}
    if future.exception() is not None:
        return {"ready": False, "failed": True,
                "text": ui_text.text("index.failed", language, error=str(future.exception()))}
    return {"ready": True}


chainlit.server.app.router.routes.insert(0, chainlit.server.app.router.routes.pop())  # before the page's catch-all


# ----------------------------------------------------------------------------- login (optional)

ACCOUNTS = auth.Accounts.from_env()
SAVED_CHATS = rag.Settings.load().chat_history
if ACCOUNTS is not None or SAVED_CHATS:
    # With saved chats the secret is kept under RAG_HOME: a restarted server accepts the login
    # cookies it signed, and each user finds their chats again.
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", saved.auth_secret(rag.Settings.load().home) if SAVED_CHATS
                          else secrets.token_urlsafe(32))
if ACCOUNTS is not None:
    chainlit.server.app.add_middleware(web.LoginGuard, throttle=auth.LoginThrottle(),
                                       path=f"{chainlit_config.run.root_path}/login")

    @cl.password_auth_callback
    async def login(username: str, password: str) -> cl.User | None:
        # a hashed password costs ~50 ms of CPU: not on the event loop
        name = await asyncio.to_thread(ACCOUNTS.check, username, password)
        return cl.User(identifier=name) if name is not None else None


# ----------------------------------------------------------------------------- saved chats (optional)

LOCAL_USER = "local"
SAVED_FILES_ROUTE = "/sanad/saved-file"


class LocalStorage(BaseStorageClient):
    """Chainlit's storage client over `rag.history.FileStore`: the source cards of saved chats
    are files under RAG_HOME, read back through SAVED_FILES_ROUTE by their owner only."""

    def __init__(self, files: saved.FileStore) -> None:
        self.files = files

    async def upload_file(self, object_key: str, data: bytes | str, mime: str = "application/octet-stream",
                          overwrite: bool = True, content_disposition: str | None = None) -> dict[str, Any]:
        await asyncio.to_thread(self.files.write, object_key, data)
        return {"object_key": object_key, "url": await self.get_read_url(object_key)}

    async def delete_file(self, object_key: str) -> bool:
        return await asyncio.to_thread(self.files.delete, object_key)

    async def get_read_url(self, object_key: str) -> str:
        return (f"{chainlit_config.run.root_path}{SAVED_FILES_ROUTE}?"
                + urllib.parse.urlencode({"key": object_key}))

    async def close(self) -> None:
        pass


class SavedChats(SQLAlchemyDataLayer):
    """Chainlit's SQLAlchemy data layer on the SQLite file of `rag.history`."""

    def __init__(self, home: Path) -> None:
        path = saved.database_path(home)
        saved.create_schema(path)
        # a busy SQLite waits for the other writer instead of failing (Chainlit only logs failures)
        super().__init__(conninfo=saved.database_url(path), connect_args={"timeout": 30},
                         storage_provider=LocalStorage(saved.FileStore(home / saved.FILES_FOLDER)))
        self._element_order = asyncio.Lock()

    async def create_element(self, element) -> None:
        # Element.send() stores each card in its own task; the lock (first come, first served)
        # keeps them in the order they were sent, which is the order a reopened chat shows.
        async with self._element_order:
            await super().create_element(element)

    async def element_of(self, object_key: str) -> tuple[str, str] | None:
        """(thread id, element type) of a stored file."""
        rows = await self.execute_sql('SELECT "threadId", "type" FROM elements WHERE "objectKey" = :key',
                                      {"key": object_key})
        return (rows[0]["threadId"], rows[0]["type"]) if isinstance(rows, list) and rows else None


if SAVED_CHATS:
    _saved_chats = SavedChats(rag.Settings.load().home)

    @cl.data_layer
    def saved_chats() -> SavedChats:
        return _saved_chats

    @chainlit.server.app.get(chainlit_config.run.root_path + SAVED_FILES_ROUTE)
    async def saved_file(key: str, current_user: chainlit.server.UserParam) -> chainlit.server.Response:
        element = await _saved_chats.element_of(key)
        owner = await _saved_chats.get_thread_author(element[0]) if element else None
        data = await asyncio.to_thread(_saved_chats.storage_provider.files.read, key) if owner else None
        if data is None or current_user is None or owner != current_user.identifier:
            return chainlit.server.JSONResponse({"detail": "no such file in your saved chats"}, status_code=404)
        if element[1] == "text":  # a source card: Markdown the page renders as it did the first time
            return chainlit.server.Response(data, media_type="text/plain; charset=utf-8")
        return chainlit.server.Response(data, media_type="application/octet-stream",
                                        headers={"Content-Disposition": "attachment"})

    # Chainlit's catch-all route (the page itself) was registered first: this one goes before it.
    chainlit.server.app.router.routes.insert(0, chainlit.server.app.router.routes.pop())

    if ACCOUNTS is None:
        # Without accounts the one user is whoever sits at this machine (see rag.web.LocalOnly).
        chainlit.server.app.add_middleware(
            web.LocalOnly, path=f"{chainlit_config.run.root_path}/auth/header",
            message="This chat keeps its saved chats for the local user only: open it on the server's own "
                    "machine, or have its administrator set RAG_CHAT_USERNAME (login) or RAG_CHAT_HISTORY=0.")

        @cl.header_auth_callback
        async def local_user(headers) -> cl.User:
            return cl.User(identifier=LOCAL_USER)


# ----------------------------------------------------------------------------- what the page may load

# Same-origin only, Chainlit's own inline scripts allowed by hash (see rag.web). Added last, so
# it is the outermost middleware and every answer gets the headers, the login's 429 too.
chainlit.server.app.add_middleware(web.SecurityHeaders, headers={
    "Content-Security-Policy": web.content_security_policy(
        chainlit.server.get_html_template(os.environ.get("CHAINLIT_PARENT_ROOT_PATH", "")
                                          + os.environ.get("CHAINLIT_ROOT_PATH", ""))),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
})

# ----------------------------------------------------------------------------- uploads

# Chainlit keeps uploads in transit in APP_ROOT/.files and deletes that whole folder when the
# server stops, so a second server from the same checkout (another port, a test) would pull the
# folder from under the first one's uploads. Each process gets its own, under RAG_HOME.
def _transit_folder() -> Path:
    parent = rag.Settings.load().home / "chat-uploads"
    for stale in parent.glob("*"):  # left by a server that was killed
        if stale.name.isdigit() and not _running(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = parent / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_transit = _transit_folder()
chainlit.config.FILES_DIRECTORY = chainlit.server.FILES_DIRECTORY = _transit

# Chainlit 2.12 refuses to store an empty upload (HTTP 500, "Upload failed" in the browser), so
# the user would never learn why the file was not added. Store it as the empty file it is and
# let `rag` reject it with its reason.
_persist_file = chainlit.session.BaseSession.persist_file


async def _persist_empty_files_too(self, name, mime, path=None, content=None):
    if path is None and content in (b"", ""):
        self.files_dir.mkdir(parents=True, exist_ok=True)
        empty = self.files_dir / f"empty-{secrets.token_hex(8)}"
        empty.touch()
        try:
            return await _persist_file(self, name, mime, path=str(empty))
        finally:
            empty.unlink(missing_ok=True)
    return await _persist_file(self, name, mime, path=path, content=content)


chainlit.session.BaseSession.persist_file = _persist_empty_files_too


# ----------------------------------------------------------------------------- the chat's language

def say(key: str, **values: object) -> str:
    """The chat's own text `key` (rag.ui_text) in the browser's language, which Chainlit takes
    from the Accept-Language of the page's socket; plain text, to be escaped."""
    return ui_text.text(key, ui_text.language(getattr(cl.context.session, "language", None)), **values)


# ----------------------------------------------------------------------------- chat

def chat_profiles() -> list[cl.ChatProfile]:
    return [cl.ChatProfile(
        name="Sanad", markdown_description=WELCOME, icon="/public/logo.svg", default=True,
        starters=[cl.Starter(label=label, message=message) for label, message in STARTERS])]


@cl.set_chat_profiles
async def profiles(user: cl.User | None = None, language: str | None = None) -> list[cl.ChatProfile]:
    return chat_profiles()


# Chainlit 2.12 gives each new socket.io session its configuration by running set_chat_profiles
# through loop.run_until_complete() inside the running event loop (re-entrant by nest_asyncio):
# every session connecting meanwhile runs one event-loop level deeper on the same stack, so ~50
# sessions connecting at once exhaust the recursion limit (engineio's RecursionError) and the
# outer connects wait for all the inner ones (timeouts). The profiles are known here without
# the event loop, so the configuration is computed directly.
def _session_config(self: chainlit.session.WebsocketSession):
    if getattr(self, "config", None):
        return self.config
    profile = next((p for p in chat_profiles() if p.name == self.chat_profile), None)
    overrides = getattr(profile, "config_overrides", None)
    return chainlit_config.with_overrides(overrides) if overrides else chainlit_config


chainlit.session.WebsocketSession.get_config = _session_config


@cl.on_chat_start
async def on_chat_start() -> None:
    settings = rag.Settings.load()
    modes = {say("settings.mode.extractive"): "extractive", say("settings.mode.llm"): "llm"}
    await cl.ChatSettings([
        Select(id="mode", label=say("settings.mode"), items=modes,
               initial_value="llm" if settings.llm_model else "extractive"),
        TextInput(id="model", label=say("settings.model"), initial=settings.llm_model or "",
                  placeholder="openai/gpt-4o-mini · ollama/qwen2.5 · anthropic/…"),
        Slider(id="k", label=say("settings.k"), initial=settings.k, min=1, max=10, step=1),
        TextInput(id="since", label=say("settings.since"), initial=""),
        TextInput(id="until", label=say("settings.until"), initial=""),
        TextInput(id="sources", label=say("settings.sources"), initial=""),
    ]).send()
    cl.user_session.set("history", [])
    index_future()


# Test hook: a server started with SANAD_TEST_LLM_REPLY in its environment gets this text from
# every LLM request (litellm's mock_response, no network), so browser tests can show hostile LLM
# output. Only the server's own environment sets it; nothing a chat user sends can.
TEST_LLM_REPLY = os.environ.get("SANAD_TEST_LLM_REPLY")
if TEST_LLM_REPLY is not None:
    log.warning("SANAD_TEST_LLM_REPLY is set: every LLM answer is that fixed text (tests only)")


@cl.on_message
async def on_message(message: cl.Message) -> None:
    try:
        index = await ready_index()
        files = [e for e in message.elements if getattr(e, "path", None)]
        if files:
            await add_files(index, files)
        text = message.content.strip()
        command, _, argument = text.partition(" ")
        if command == "/docs":
            await list_documents(index)
        elif command == "/remove":
            await remove_document(index, argument.strip())
        elif text:
            await answer(index, text)
    except Exception as exc:  # noqa: BLE001 - shown escaped, not as Chainlit's raw Markdown error
        log.exception("the message could not be handled")
        await cl.ErrorMessage(content=escape(str(exc) or type(exc).__name__)).send()


async def add_files(index: rag.Index, files: list) -> None:
    async with cl.Step(name=say("upload.step"), type="tool") as step:
        step.input = escape(", ".join(f.name for f in files))
        result = await cl.make_async(index.add_uploads)([(f.name, f.path) for f in files])
        step.output = escape(say("upload.done"))
    lines = []
    if result.report is not None:
        report = result.report
        lines.append(say("upload.indexed", names=", ".join(result.accepted),
                         documents=report.added.documents + report.changed.documents,
                         passages=report.added.chunks + report.changed.chunks))
    lines += [say("upload.renamed", name=kept.name, stored_as=kept.stored_as) for kept in result.renamed]
    lines += [say("upload.already_there", name=kept.name, stored_as=kept.stored_as) for kept in result.already_there]
    lines += [say("upload.rejected", name=rejected.name, reason=rejected.reason) for rejected in result.rejected]
    await cl.Message(content="\n\n".join(escape(line) for line in lines)).send()


LISTED_DOCUMENTS = 200  # a longer library is listed by `rag docs`


async def list_documents(index: rag.Index) -> None:
    documents = await cl.make_async(index.documents)()
    lines = [escape(say("docs.header", count=len(documents)))]
    lines += [escape(say("docs.line", doc_id=d.doc_id, chunks=d.chunks,
                         title=" · ".join([d.title, *filter(None, (d.outlet, (d.date or "")[:10]))]))
                     + (say("docs.uploaded") if d.uploaded else ""))
              for d in documents[:LISTED_DOCUMENTS]]
    if len(documents) > LISTED_DOCUMENTS:
        lines.append(escape(say("docs.more", count=len(documents) - LISTED_DOCUMENTS)))
    await cl.Message(content="\n\n".join(lines)).send()


async def remove_document(index: rag.Index, doc_id: str) -> None:
    if not doc_id:
        await cl.Message(content=escape(say("remove.usage"))).send()
        return
    try:
        report = await cl.make_async(index.remove)([doc_id], uploads_only=True)
    except rag.DocumentError as exc:
        await cl.Message(content=escape(f"✗ {exc}")).send()
        return
    removed = ", ".join(d.doc_id for d in report.removed)
    await cl.Message(content=escape(say("remove.done", doc_ids=removed, chunks=report.chunks))).send()


async def answer(index: rag.Index, question: str) -> None:
    chosen = cl.user_session.get("chat_settings") or {}
    history = cl.user_session.get("history") or []
    model, note = "extractive", None
    if chosen.get("mode") == "llm":
        model = (chosen.get("model") or "").strip() or None
        if model is None:
            model, note = "extractive", say("answer.no_model")
    llm_options = {"mock_response": TEST_LLM_REPLY} if TEST_LLM_REPLY is not None else None
    message = cl.Message(content="")
    escaped = MarkdownStream()  # escaped pieces add up to escape(the streamed text)
    stream = index.astream(question, history, k=int(chosen.get("k") or index.settings.k), model=model,
                           llm_options=llm_options, since=chosen.get("since") or None,
                           until=chosen.get("until") or None, sources=chosen.get("sources") or None)
    async for piece in stream:
        await message.stream_token(escaped.feed(piece))
    await message.stream_token(escaped.close())
    final = await stream.answer()
    notes = [line for n in (note, final.notice) if n for line in n.splitlines() if line.strip()]
    views = final.sources()
    message.content = (linked_answer(final.answer, final.markers(), {view.n for view in views})
                       + "".join(f"\n\n_⚠ {escape(n)}_" for n in notes) + full_articles_line(views))
    # The card title is shown as plain text; the card body is Markdown.
    cards = [cl.Text(name=f"[{view.n}] {view.title}", content=source_card(view), display="inline")
             for view in views]
    message.metadata = saved.saved_turn(question, final)  # what a reopened chat and `rag feedback` read
    await message.send()
    for card in cards:  # one by one: Message.send sends its elements concurrently, in any order
        await card.send(for_id=message.id)
    for article in await cl.make_async(full_articles)(index, views):
        await article.send(for_id=message.id)
    if final.notice_detail:
        async with cl.Step(name=say("details.step"), type="tool", default_open=False) as details:
            details.output = escape(final.notice_detail)
    history += [{"role": "user", "content": question},
                {"role": "assistant", "content": final.answer,
                 "doc_ids": list(dict.fromkeys(c.doc_id for c in final.citations))}]
    cl.user_session.set("history", history[-12:])


# Each source also opens as its whole article in Chainlit's side view: an element named `[n]`
# (display="side") turns every bare `[n]` of its message into a link that opens it. The answer's
# markers are such links (rag.markdown.linked_answer), and so is a last line naming every source,
# for the sources no marker names (a refusal's closest passages). public/sources.js scrolls the
# first highlighted quote into view and lets a card's title open its article too.
def full_articles_line(views: list[rag.SourceView]) -> str:
    if not views:
        return ""
    return f"\n\n{escape(say('answer.full_articles'))} " + " ".join(link(view.n) for view in views)


def full_articles(index: rag.Index, views: list[rag.SourceView]) -> list[cl.Text]:
    return [cl.Text(name=link(view.n), content=source_article(view, index.document(view.doc_id).text),
                    display="side") for view in views]


# ----------------------------------------------------------------------------- reopening a saved chat

if SAVED_CHATS:
    @cl.on_chat_resume
    async def on_chat_resume(thread: dict) -> None:
        # Chainlit restored the chat's settings from the thread; on_chat_start sends the settings
        # panel again (with its defaults), so they are put back after it.
        restored = dict(cl.context.session.chat_settings or {})
        await on_chat_start()
        if restored:
            cl.context.session.chat_settings = restored
        cl.user_session.set("history", saved.conversation(thread.get("steps") or []))
