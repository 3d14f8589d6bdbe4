"""The Python entry points: an `Index` object and module-level shortcuts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .embeddings import Embedder, resolve_device
from .errors import ConfigError, DocumentError
from .filters import parse_filters
from .indexing import remove_documents, update_index
from .reader import WEIGHTS, Reader
from .retrieval import MODES, Retriever
from .store import Store, current_generation
from .types import Answer, Document, IndexedDocument, Passage, RemovalReport, UpdateReport
from .uploads import UploadResult, add_uploads

if TYPE_CHECKING:
    from .answer import AnswerStream, AsyncAnswerStream


class Index:
    """One index directory with its embedding model. Loads lazily, follows new generations
    published by other processes, and is safe to share between threads."""

    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings or Settings.load()
        self.embedder = embedder or Embedder(self.settings)
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._reader: Reader | None = None

    @property
    def reader(self) -> Reader | None:
        """The answer reader (loads on first use), or None when turned off or not installed."""
        if not self.settings.answer_reader:
            return None
        with self._lock:
            if self._reader is None:
                self._reader = Reader(self.settings.models_dir, self.settings.reader_weights or WEIGHTS,
                                      device=resolve_device(self.settings.device),
                                      backend=self.settings.reader_backend)
        return self._reader if self._reader.available else None

    def load_models(self) -> None:
        """Load the embedding model and the reader now rather than on the first question."""
        self.embedder.load()
        if self.reader is not None:
            self.reader.load()

    @property
    def index_dir(self) -> Path:
        return self.settings.resolved_index_dir

    def exists(self) -> bool:
        return current_generation(self.index_dir) is not None

    @property
    def store(self) -> Store:
        """The current generation, reopened when a newer one has been published."""
        with self._lock:
            if self._store is None or not self._store.is_current():
                fresh = Store.open(self.index_dir)
                self._check_compatible(fresh)
                old, self._store = self._store, fresh
                if old is not None:
                    old.close()
            return self._store

    def _check_compatible(self, store: Store) -> None:
        """Searching with other settings than the index was built with gives wrong results."""
        if store.manifest.fingerprint == self.settings.fingerprint():
            return
        store.close()
        built, wanted = store.manifest.settings, self.settings.index_params()
        changes = ", ".join(f"{key}={built.get(key)!r} (settings say {wanted.get(key)!r})"
                            for key in sorted(set(built) | set(wanted)) if built.get(key) != wanted.get(key))
        raise ConfigError(
            f"the index at {self.index_dir} was built with {changes}: run `rag index` to rebuild "
            "it with the current settings, or change the settings back")

    def update(self, paths: Sequence[str | Path] | None = None, *, full: bool = False,
               replace: bool = False, optimize: bool = False, check: bool = False, progress: bool = False,
               notify: Callable[[str], None] | None = None) -> UpdateReport:
        """Add `paths` to the index's sources (or make them the only ones with replace=True),
        then index new and changed documents and drop the ones whose files are gone;
        `optimize` then merges the index's segments into one; `check` compares every index file
        with its checksum (otherwise only those changed since their last check)."""
        return update_index(self.settings, paths, embedder=self.embedder, full=full, replace=replace,
                            optimize=optimize, check=check, progress=progress, notify=notify)

    def sources(self) -> list[str]:
        """The folders/files the index was last built from."""
        return list(self.store.manifest.sources) if self.exists() else []

    def document_sources(self) -> dict[str, str]:
        """doc_id → source path of every indexed document."""
        return self.store.document_sources()

    def documents(self) -> list[IndexedDocument]:
        """Every indexed document, by id: title, source file, chunks, characters, url/date if known."""
        return self.store.indexed_documents(self.settings.uploads_dir)

    def document(self, doc_id: str) -> Document:
        """One indexed document, its whole text included (what a citation's offsets point into)."""
        document = self.store.document(doc_id)
        if document is None:
            raise DocumentError(f"no document {doc_id!r} in the index at {self.index_dir}: "
                                "`rag docs` lists the indexed ids")
        return document

    def remove(self, ids_or_paths: str | Path | Sequence[str | Path], *, uploads_only: bool = False,
               notify: Callable[[str], None] | None = None) -> RemovalReport:
        """Take documents out of the index by id or by the path of their file (or folder); nothing
        is re-embedded. Uploaded files are deleted with their documents; a document from another
        source folder comes back with the next `update` of that folder (the report lists it in
        `will_return`). An id or path that matches nothing is a DocumentError, and nothing is
        removed. `uploads_only` refuses documents that are not uploads."""
        selectors = [ids_or_paths] if isinstance(ids_or_paths, (str, Path)) else list(ids_or_paths)
        return remove_documents(self.settings, selectors, uploads_only=uploads_only, notify=notify)

    def add_uploads(self, files: Sequence[tuple[str, str | Path]],
                    notify: Callable[[str], None] | None = None) -> UploadResult:
        """Check uploaded files ((name, path) pairs), keep the good ones in the uploads folder
        and index them; the others come back with the reason they were refused."""
        return add_uploads(self, files, max_bytes=int(self.settings.max_upload_mb * 1e6), notify=notify)

    def search(self, query: str, k: int | None = None, mode: str | None = None, *,
               since: str | date | None = None, until: str | date | None = None,
               sources: str | Sequence[str] | None = None) -> list[Passage]:
        """The k best passages. since/until ("YYYY-MM-DD" or a date, inclusive) keep documents
        published in that range — documents without a date are left out; sources keep documents
        whose outlet (any case) or id is one of them, or whose id begins with one as a folder or
        file ("news/", "feed.jsonl"); commas separate several. A bad value, or filters that match
        no document, is a FilterError that says so."""
        mode = mode or self.settings.search_mode
        if mode not in MODES:
            raise ConfigError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        return self._retriever(since, until, sources).search(query, k or self.settings.k, mode)

    def _retriever(self, since: str | date | None, until: str | date | None,
                   sources: str | Sequence[str] | None) -> Retriever:
        return Retriever(self.store, self.embedder, parse_filters(since, until, sources))

    def stream(self, question: str, history: Sequence[dict[str, str]] | None = None, *,
               k: int | None = None, model: str | None = None,
               llm_options: dict[str, Any] | None = None, since: str | date | None = None,
               until: str | date | None = None, sources: str | Sequence[str] | None = None) -> AnswerStream:
        """Start answering: iterate the result for the text as it is produced, then call its
        `.answer()` for the final, verified `Answer`.

        model: a litellm model string, "extractive" for the offline answerer, or None for the
        settings' llm_model (offline extractive when unset). history: earlier turns as
        {"role": "user" | "assistant", "content": …} dicts. llm_options go to litellm as is.
        since, until, sources: which articles the answer may use, as for `search`."""
        from .answer import REFUSAL_THRESHOLD, stream_answer
        from .llm import LLM

        chosen = self.settings.llm_model if model is None else model
        llm = None
        if chosen and chosen != "extractive":
            llm = LLM(chosen, api_base=self.settings.llm_api_base, timeout=self.settings.llm_timeout,
                      max_tokens=self.settings.llm_max_tokens, options=dict(llm_options or {}))
        elif self.reader is not None and not self.reader.loaded:
            # the reader loads beside the embedding model rather than after it (a cold `rag ask`).
            # Not daemons: a process that ends first (a refused `rag ask`) waits for them; one that
            # exited mid-load aborted in native code ("terminate called without an active exception").
            threading.Thread(target=self.reader.load, name="rag-reader-load").start()
            if not self.embedder.loaded:
                threading.Thread(target=self.embedder.load, name="rag-embedder-load").start()
        retriever = self._retriever(since, until, sources)  # a bad filter fails here, before streaming
        return stream_answer(
            question, retriever=retriever, reader=self.reader,
            k=k or self.settings.k, llm=llm,
            history=history, context_tokens=self.settings.llm_context_tokens,
            refusal_threshold=(REFUSAL_THRESHOLD if self.settings.refusal_threshold is None
                               else self.settings.refusal_threshold))

    def ask(self, question: str, history: Sequence[dict[str, str]] | None = None, *,
            k: int | None = None, model: str | None = None,
            llm_options: dict[str, Any] | None = None, since: str | date | None = None,
            until: str | date | None = None, sources: str | Sequence[str] | None = None) -> Answer:
        """Answer a question with verified citations (see `stream`)."""
        return self.stream(question, history, k=k, model=model, llm_options=llm_options,
                           since=since, until=until, sources=sources).answer()

    def astream(self, question: str, history: Sequence[dict[str, str]] | None = None,
                **options: Any) -> AsyncAnswerStream:
        """`stream` for event loops: `async for piece in index.astream(…)`, then
        `await stream.answer()`. The work runs in a worker thread. Takes the options of `stream`
        (k, model, since, until, sources …): a bad filter value raises here, filters that match
        no document raise their FilterError from the stream."""
        from .answer import AsyncAnswerStream

        parse_filters(options.get("since"), options.get("until"), options.get("sources"))
        return AsyncAnswerStream(lambda: self.stream(question, history, **options))

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


_shared: dict[tuple, Index] = {}
_shared_lock = threading.Lock()


def _settings(index_dir: str | Path | None, settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    settings = settings or Settings.load()
    return settings.replace(index_dir=Path(index_dir).expanduser() if index_dir else None, **overrides)


def open(index_dir: str | Path | None = None, settings: Settings | None = None, **overrides: Any) -> Index:
    """Open an existing index (default: settings' index directory).

    Raises IndexNotFoundError, whose message says how to build one."""
    index = Index(_settings(index_dir, settings, overrides))
    index.store  # noqa: B018 - fail now, with the "run `rag index`" message, if there is none
    return index


def _shared_index(index_dir: str | Path | None, settings: Settings | None) -> Index:
    resolved = _settings(index_dir, settings, {})
    key = (str(resolved.resolved_index_dir), resolved.fingerprint(), resolved.embedding_model)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Index(resolved)
        return _shared[key]


def update(paths: Sequence[str | Path] | None = None, index_dir: str | Path | None = None,
           settings: Settings | None = None, *, full: bool = False, replace: bool = False) -> UpdateReport:
    return _shared_index(index_dir, settings).update(paths, full=full, replace=replace)


def search(query: str, k: int | None = None, index_dir: str | Path | None = None,
           settings: Settings | None = None, mode: str | None = None, **filters: Any) -> list[Passage]:
    """`Index.search` on the shared index; filters: since, until, sources."""
    return _shared_index(index_dir, settings).search(query, k=k, mode=mode, **filters)


def ask(question: str, history: Sequence[dict[str, str]] | None = None, *, k: int | None = None,
        model: str | None = None, index_dir: str | Path | None = None,
        settings: Settings | None = None, llm_options: dict[str, Any] | None = None, **filters: Any) -> Answer:
    return _shared_index(index_dir, settings).ask(question, history, k=k, model=model,
                                                  llm_options=llm_options, **filters)


def stream(question: str, history: Sequence[dict[str, str]] | None = None, *, k: int | None = None,
           model: str | None = None, index_dir: str | Path | None = None,
           settings: Settings | None = None, llm_options: dict[str, Any] | None = None, **filters: Any
           ) -> AnswerStream:
    return _shared_index(index_dir, settings).stream(question, history, k=k, model=model,
                                                     llm_options=llm_options, **filters)
