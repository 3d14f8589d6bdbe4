"""Sanad chat: Chainlit handlers over the `rag` library.

Run from the repository root: `make chat`, or
    CHAINLIT_APP_ROOT=chat_app .venv/bin/chainlit run chat_app/app.py --port 8000
The index and the embedding model load once per process, in the background from start-up;
every blocking call runs in a worker thread. `/docs` lists the indexed articles; `/remove ID`
takes an uploaded one out (with its file).

Environment: the `rag` settings (RAG_HOME, RAG_INDEX_DIR, RAG_LLM_MODEL, RAG_K, …);
RAG_CHAT_SOURCES — folders the chat's index must include (default: the repository's seeds/;
the index keeps its other sources, such as uploads); RAG_CHAT_USERNAME + RAG_CHAT_PASSWORD_HASH
(made by `rag chat-password`) or RAG_CHAT_PASSWORD — turn on password login.

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
from concurrent.futures import Future
from pathlib import Path

import chainlit as cl
import chainlit.config
import chainlit.server
import chainlit.session
from chainlit.config import config as chainlit_config
from chainlit.input_widget import Select, Slider, TextInput

import rag
from rag import auth, web
from rag.markdown import MarkdownStream, escape, source_card

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
    async with cl.Step(name="Preparing the index", type="tool") as step:
        step.output = "Loading the embedding model and indexing the articles (first start only) …"
        index = await cl.make_async(future.result)()
        step.output = f"{len(index.document_sources())} articles ready"
    return index


@cl.on_app_startup
def start_loading() -> None:
    index_future()


# ----------------------------------------------------------------------------- login (optional)

CREDENTIALS = auth.Credentials.from_env()
if CREDENTIALS is not None:
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", secrets.token_urlsafe(32))
    chainlit.server.app.add_middleware(web.LoginGuard, throttle=auth.LoginThrottle(),
                                       path=f"{chainlit_config.run.root_path}/login")

    @cl.password_auth_callback
    async def login(username: str, password: str) -> cl.User | None:
        # a hashed password costs ~50 ms of CPU: not on the event loop
        if await asyncio.to_thread(CREDENTIALS.check, username, password):
            return cl.User(identifier=CREDENTIALS.username)
        return None


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
    modes = {"Extractive (offline)": "extractive", "LLM (litellm)": "llm"}
    await cl.ChatSettings([
        Select(id="mode", label="Answer mode", items=modes,
               initial_value="llm" if settings.llm_model else "extractive"),
        TextInput(id="model", label="LLM model (litellm string)", initial=settings.llm_model or "",
                  placeholder="openai/gpt-4o-mini · ollama/qwen2.5 · anthropic/…"),
        Slider(id="k", label="Passages", initial=settings.k, min=1, max=10, step=1),
        TextInput(id="since", label="Published since (YYYY-MM-DD; undated articles are left out)", initial=""),
        TextInput(id="until", label="Published until (YYYY-MM-DD; undated articles are left out)", initial=""),
        TextInput(id="sources", label="Sources: outlets or document ids, separated by commas", initial=""),
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
    async with cl.Step(name="Indexing uploaded files", type="tool") as step:
        step.input = escape(", ".join(f.name for f in files))
        result = await cl.make_async(index.add_uploads)([(f.name, f.path) for f in files])
        step.output = "done"
    lines = []
    if result.report is not None:
        report = result.report
        docs = report.added.documents + report.changed.documents
        chunks = report.added.chunks + report.changed.chunks
        lines.append(f"✓ Indexed {escape(', '.join(result.accepted))}: {docs} document(s) added or updated, "
                     f"{chunks} passage(s). You can ask about them now.")
    for kept in result.renamed:
        lines.append(f"✓ Another file named {escape(kept.name)} is already in the index, so this one is kept "
                     f"as {escape(kept.stored_as)}: both can be searched.")
    for kept in result.already_there:
        lines.append(f"= {escape(kept.name)} is already in the index with the same content "
                     f"(as {escape(kept.stored_as)}): nothing was added.")
    for rejected in result.rejected:
        lines.append(f"✗ Rejected {escape(rejected.name)}: {escape(rejected.reason)}")
    await cl.Message(content="\n\n".join(lines)).send()


LISTED_DOCUMENTS = 200  # a longer library is listed by `rag docs`


async def list_documents(index: rag.Index) -> None:
    documents = await cl.make_async(index.documents)()
    lines = [escape(f"{len(documents)} articles in the index. Remove an uploaded one with /remove ID:")]
    lines += [escape(" · ".join([d.doc_id, d.title, *filter(None, (d.outlet, (d.date or "")[:10]))])
                     + f" · {d.chunks} passages" + (" · uploaded" if d.uploaded else ""))
              for d in documents[:LISTED_DOCUMENTS]]
    if len(documents) > LISTED_DOCUMENTS:
        lines.append(escape(f"… and {len(documents) - LISTED_DOCUMENTS} more: `rag docs` lists them all."))
    await cl.Message(content="\n\n".join(lines)).send()


async def remove_document(index: rag.Index, doc_id: str) -> None:
    if not doc_id:
        await cl.Message(content=escape("Give the id of an uploaded article: /remove ID (/docs lists them).")).send()
        return
    try:
        report = await cl.make_async(index.remove)([doc_id], uploads_only=True)
    except rag.DocumentError as exc:
        await cl.Message(content=escape(f"✗ {exc}")).send()
        return
    removed = ", ".join(d.doc_id for d in report.removed)
    await cl.Message(content=escape(f"✓ Removed {removed} ({report.chunks} passages) and its uploaded file: "
                                    "the next answers no longer use it.")).send()


async def answer(index: rag.Index, question: str) -> None:
    chosen = cl.user_session.get("chat_settings") or {}
    history = cl.user_session.get("history") or []
    model, note = "extractive", None
    if chosen.get("mode") == "llm":
        model = (chosen.get("model") or "").strip() or None
        if model is None:
            model, note = "extractive", "No LLM model is set in the settings: extractive answer shown."
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
    message.content = escape(final.answer) + "".join(f"\n\n_⚠ {escape(n)}_" for n in notes)
    # The card title is shown as plain text; the card body is Markdown.
    cards = [cl.Text(name=f"[{view.n}] {view.title}", content=source_card(view), display="inline")
             for view in final.sources()]
    await message.send()
    for card in cards:  # one by one: Message.send sends its elements concurrently, in any order
        await card.send(for_id=message.id)
    if final.notice_detail:
        async with cl.Step(name="Technical details", type="tool", default_open=False) as details:
            details.output = escape(final.notice_detail)
    history += [{"role": "user", "content": question},
                {"role": "assistant", "content": final.answer,
                 "doc_ids": list(dict.fromkeys(c.doc_id for c in final.citations))}]
    cl.user_session.set("history", history[-12:])
