"""The index on disk: SQLite metadata + FAISS vectors + BM25, published atomically.

Layout of an index directory::

    CURRENT                    {"generation": "gen-000007"}, replaced atomically
    .lock                      held by the one writer at a time
    generations/gen-000007/    one complete, immutable state
        manifest.json          format version, model, chunking, fingerprint, sources, counts
        index.sqlite           documents and chunks (chunk_id = FAISS vector id)
        vectors.faiss          IndexIDMap2 over inner product of normalized vectors
        bm25/                  bm25s index + positions.npy (BM25 row → chunk_id)

A writer builds the next generation in a hidden temporary folder, renames it into place and
then swaps CURRENT. Readers resolve CURRENT once and only ever see a complete generation; a
writer killed half-way leaves only a temporary folder that the next writer deletes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import INDEX_FORMAT_VERSION
from .documents import source_file
from .errors import IndexNotFoundError, StoreError
from .types import Chunk, Document, IndexedDocument, StoredChunk

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
import faiss  # noqa: E402

CURRENT_FILE = "CURRENT"
GENERATIONS = "generations"
MANIFEST = "manifest.json"
SQLITE = "index.sqlite"
VECTORS = "vectors.faiss"
BM25_DIR = "bm25"
BM25_K1, BM25_B = 1.2, 0.75

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source_path TEXT NOT NULL,
    url TEXT,
    date TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
CREATE TABLE IF NOT EXISTS sentences (
    chunk_id INTEGER NOT NULL REFERENCES chunks(chunk_id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sentences_by_chunk ON sentences(chunk_id);
"""
SENTENCE_DTYPE = np.float16  # sentence vectors only rank sentences inside retrieved passages


@dataclass(frozen=True)
class Manifest:
    generation: str
    format_version: int
    fingerprint: str
    settings: dict[str, Any]
    embedding: dict[str, Any]
    sources: list[str]
    documents: int
    chunks: int
    created_at: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ----------------------------------------------------------------------------- reading

def current_generation(index_dir: Path) -> Path | None:
    pointer = index_dir / CURRENT_FILE
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["generation"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise StoreError(f"{pointer} is damaged ({exc}): rebuild with `rag index --full PATH`") from None
    path = index_dir / GENERATIONS / name
    if not path.is_dir():
        raise StoreError(f"{pointer} names {name}, which is missing: rebuild with `rag index --full PATH`")
    return path


def read_manifest(generation_dir: Path) -> Manifest:
    try:
        data = json.loads((generation_dir / MANIFEST).read_text(encoding="utf-8"))
        manifest = Manifest.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{generation_dir / MANIFEST} is unreadable ({exc}): "
                         "rebuild with `rag index --full PATH`") from None
    if manifest.format_version != INDEX_FORMAT_VERSION:
        raise StoreError(
            f"the index at {generation_dir.parent.parent} has format version "
            f"{manifest.format_version}, this version reads {INDEX_FORMAT_VERSION}: rebuild it "
            "with `rag index --full PATH`")
    return manifest


class Store:
    """A read-only view of one published generation. Safe to share between threads."""

    def __init__(self, index_dir: Path, generation_dir: Path) -> None:
        self.index_dir = index_dir
        self.generation_dir = generation_dir
        self.manifest = read_manifest(generation_dir)
        self._db = sqlite3.connect(f"file:{generation_dir / SQLITE}?mode=ro&immutable=1",
                                   uri=True, check_same_thread=False)
        self._vectors = faiss.read_index(str(generation_dir / VECTORS))
        self._bm25, self._bm25_positions = _load_bm25(generation_dir / BM25_DIR)

    @classmethod
    def open(cls, index_dir: str | Path) -> Store:
        index_dir = Path(index_dir).expanduser()
        for _ in range(5):
            generation = current_generation(index_dir)
            if generation is None:
                raise IndexNotFoundError(
                    f"no index at {index_dir}: build one with `rag index seeds` "
                    "(or another folder of articles)")
            try:
                return cls(index_dir, generation)
            except (OSError, RuntimeError, sqlite3.Error, StoreError):
                # A writer keeps the two newest generations; if CURRENT has moved on, ours was
                # removed while we opened it, so open the new one. Otherwise it is a real error.
                if current_generation(index_dir) == generation:
                    raise
        raise StoreError(f"the index at {index_dir} changed five times while it was being opened: try again")

    def is_current(self) -> bool:
        return current_generation(self.index_dir) == self.generation_dir

    def close(self) -> None:
        self._db.close()

    @property
    def size(self) -> int:
        return int(self._vectors.ntotal)

    def dense_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self.size == 0 or k <= 0:
            return []
        scores, ids = self._vectors.search(np.asarray(query, dtype=np.float32).reshape(1, -1),
                                           min(k, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def dense_scores(self, query: np.ndarray, chunk_ids: Sequence[int]) -> dict[int, float]:
        """Exact inner products for given chunks (vectors are reconstructed from the index)."""
        if not chunk_ids:
            return {}
        vectors = np.vstack([self._vectors.reconstruct(int(i)) for i in chunk_ids])
        return dict(zip(map(int, chunk_ids), (vectors @ query.astype(np.float32)).tolist()))

    def bm25_scores(self, tokens: list[str]) -> dict[int, float]:
        """chunk_id → BM25 score, for every chunk that matches at least one token."""
        if not tokens or self._bm25 is None:
            return {}
        scores = self._bm25.get_scores(tokens)
        hits = np.flatnonzero(scores > 0)
        return dict(zip(self._bm25_positions[hits].tolist(), scores[hits].tolist()))

    def document_frequencies(self, tokens: Iterable[str]) -> dict[str, int]:
        """In how many chunks each lexical token occurs (0 for tokens the corpus lacks)."""
        if self._bm25 is None:
            return {token: 0 for token in tokens}
        vocab, indptr = self._bm25.vocab_dict, self._bm25.scores["indptr"]
        return {token: int(indptr[vocab[token] + 1] - indptr[vocab[token]]) if token in vocab else 0
                for token in set(tokens)}

    def chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        ids = list(dict.fromkeys(int(i) for i in chunk_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f'SELECT c.chunk_id, c.doc_id, d.title, c.ordinal, c.start, c."end", c.text '
            f"FROM chunks c JOIN documents d USING (doc_id) WHERE c.chunk_id IN ({marks})", ids)
        return {row[0]: StoredChunk(*row) for row in rows}

    def sentences_in(self, doc_id: str, start: int, end: int) -> list[tuple[int, int, np.ndarray]]:
        """(start, end, vector) of the stored sentences of a document inside [start, end), in
        document order; a sentence stored twice (chunk overlap) is listed once."""
        rows = self._db.execute(
            'SELECT s.start, s."end", s.vector FROM sentences s JOIN chunks c USING (chunk_id) '
            'WHERE c.doc_id = ? AND s.start >= ? AND s."end" <= ? ORDER BY s.start, c.chunk_id',
            (doc_id, start, end))
        seen: dict[tuple[int, int], np.ndarray] = {}
        for s_start, s_end, blob in rows:
            seen.setdefault((s_start, s_end), np.frombuffer(blob, dtype=SENTENCE_DTYPE).astype(np.float32))
        return [(s, e, v) for (s, e), v in seen.items()]

    def text_span(self, doc_id: str, start: int, end: int) -> str:
        row = self._db.execute("SELECT substr(text, ?, ?) FROM documents WHERE doc_id = ?",
                               (start + 1, end - start, doc_id)).fetchone()
        return row[0] if row else ""

    def document(self, doc_id: str) -> Document | None:
        row = self._db.execute(
            "SELECT doc_id, title, text, sha256, source_path, url, date FROM documents "
            "WHERE doc_id = ?", (doc_id,)).fetchone()
        return Document(*row) if row else None

    def document_sources(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT doc_id, source_path FROM documents"))

    def document_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def indexed_documents(self, uploads_dir: Path) -> list[IndexedDocument]:
        return _indexed_documents(self._db, uploads_dir)


def indexed_documents(generation_dir: Path, uploads_dir: Path) -> list[IndexedDocument]:
    """Every document of a generation, by id, without loading its vectors."""
    db = sqlite3.connect(f"file:{generation_dir / SQLITE}?mode=ro&immutable=1", uri=True)
    try:
        return _indexed_documents(db, uploads_dir)
    finally:
        db.close()


def _indexed_documents(db: sqlite3.Connection, uploads_dir: Path) -> list[IndexedDocument]:
    uploads = {uploads_dir.expanduser().absolute(), uploads_dir.expanduser().resolve()}
    rows = db.execute(
        "SELECT d.doc_id, d.title, d.source_path, COUNT(c.chunk_id), length(d.text), d.url, d.date "
        "FROM documents d LEFT JOIN chunks c USING (doc_id) GROUP BY d.doc_id ORDER BY d.doc_id")
    return [IndexedDocument(doc_id=doc_id, title=title, source_path=source, chunks=chunks, characters=characters,
                            uploaded=not uploads.isdisjoint(source_file(source).parents), url=url, date=date)
            for doc_id, title, source, chunks, characters, url, date in rows]


def stored_document_hashes(generation_dir: Path) -> dict[str, tuple[str, int]]:
    """doc_id → (content hash, number of chunks) in a generation."""
    db = sqlite3.connect(f"file:{generation_dir / SQLITE}?mode=ro&immutable=1", uri=True)
    try:
        rows = db.execute(
            "SELECT d.doc_id, d.sha256, COUNT(c.chunk_id) FROM documents d "
            "LEFT JOIN chunks c USING (doc_id) GROUP BY d.doc_id").fetchall()
    finally:
        db.close()
    return {doc_id: (sha, n) for doc_id, sha, n in rows}


def _load_bm25(folder: Path):
    if not (folder / "positions.npy").is_file():
        return None, np.zeros(0, dtype=np.int64)
    import bm25s

    positions = np.load(folder / "positions.npy")
    if positions.size == 0:
        return None, positions
    model = bm25s.BM25.load(str(folder), mmap=False, show_progress=False)
    return model, positions


# ----------------------------------------------------------------------------- writing

@contextmanager
def writer_lock(index_dir: Path, on_wait=None):
    """Serialize writers of one index directory (across processes)."""
    from filelock import FileLock, Timeout

    index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(index_dir / ".lock"))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        if on_wait:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class GenerationWriter:
    """Builds the next generation next to the current one. Use only under `writer_lock`."""

    def __init__(self, index_dir: Path, base: Path | None, dimension: int) -> None:
        self.index_dir = index_dir
        generations = index_dir / GENERATIONS
        generations.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(generations)
        self.name = _next_generation_name(generations)
        self.staging = generations / f".staging-{self.name}-{os.getpid()}"
        self.staging.mkdir()
        db_path = self.staging / SQLITE
        if base is not None:
            source = sqlite3.connect(f"file:{base / SQLITE}?mode=ro", uri=True)
            self.db = sqlite3.connect(db_path)
            source.backup(self.db)
            source.close()
            self.vectors = faiss.read_index(str(base / VECTORS))
            if self.vectors.d != dimension:
                raise StoreError(f"vector dimension {self.vectors.d} in {base} does not match "
                                 f"the model's {dimension}: run `rag index --full`")
        else:
            self.db = sqlite3.connect(db_path)
            self.vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(_SCHEMA)

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        doc_ids = list(doc_ids)
        if not doc_ids:
            return 0
        chunk_ids: list[int] = []
        for i in range(0, len(doc_ids), 500):
            batch = doc_ids[i:i + 500]
            marks = ",".join("?" * len(batch))
            chunk_ids += [r[0] for r in self.db.execute(
                f"SELECT chunk_id FROM chunks WHERE doc_id IN ({marks})", batch)]
            self.db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", batch)
            self.db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", batch)
        if chunk_ids:
            self.vectors.remove_ids(np.asarray(chunk_ids, dtype=np.int64))
        return len(chunk_ids)

    def add_document(self, doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                     sentence_vectors: Sequence[np.ndarray]) -> None:
        if not (len(chunks) == len(vectors) == len(sentence_vectors)):
            raise StoreError(f"{doc.doc_id}: {len(chunks)} chunks but {len(vectors)} vectors")
        self.db.execute(
            "INSERT INTO documents (doc_id, title, text, sha256, source_path, url, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc.doc_id, doc.title, doc.text, doc.sha256, doc.source_path, doc.url, doc.date))
        ids = []
        for chunk, sentence_block in zip(chunks, sentence_vectors):
            cursor = self.db.execute(
                'INSERT INTO chunks (doc_id, ordinal, start, "end", text, n_tokens) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                (doc.doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.n_tokens))
            ids.append(cursor.lastrowid)
            self.db.executemany(
                'INSERT INTO sentences (chunk_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                [(cursor.lastrowid, start, end, vector.astype(SENTENCE_DTYPE).tobytes())
                 for (start, end), vector in zip(chunk.sentences, sentence_block)])
        if ids:
            self.vectors.add_with_ids(np.asarray(vectors, dtype=np.float32),
                                      np.asarray(ids, dtype=np.int64))

    def publish(self, manifest: dict[str, Any], lexical_tokens) -> Manifest:
        """Write BM25, vectors and manifest, then make this generation current in one step.

        lexical_tokens(title, text) → tokens of one chunk for the BM25 index."""
        self.db.commit()
        rows = list(self.db.execute(
            "SELECT c.chunk_id, d.title, c.text FROM chunks c JOIN documents d USING (doc_id) "
            "ORDER BY c.chunk_id"))
        n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        self.db.close()
        _write_bm25(self.staging / BM25_DIR, rows, lexical_tokens)
        faiss.write_index(self.vectors, str(self.staging / VECTORS))
        if self.vectors.ntotal != len(rows):
            raise StoreError(f"internal error: {self.vectors.ntotal} vectors for {len(rows)} chunks")
        full = Manifest(generation=self.name, format_version=INDEX_FORMAT_VERSION,
                        documents=n_docs, chunks=len(rows),
                        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest)
        (self.staging / MANIFEST).write_text(
            json.dumps(full.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_tree(self.staging)
        final = self.index_dir / GENERATIONS / self.name
        os.replace(self.staging, final)
        _atomic_write(self.index_dir / CURRENT_FILE, json.dumps({"generation": self.name}) + "\n")
        _remove_old_generations(self.index_dir / GENERATIONS, keep={self.name})
        return full

    def abandon(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        shutil.rmtree(self.staging, ignore_errors=True)


def _write_bm25(folder: Path, rows: list[tuple[int, str, str]], lexical_tokens) -> None:
    folder.mkdir()
    positions = np.asarray([r[0] for r in rows], dtype=np.int64)
    np.save(folder / "positions.npy", positions)
    if not rows:
        return
    import bm25s

    corpus = [lexical_tokens(title, text) or [""] for _, title, text in rows]
    model = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    model.index(corpus, show_progress=False)
    model.save(str(folder), show_progress=False)


def _next_generation_name(generations: Path) -> str:
    numbers = [int(p.name.split("-")[1]) for p in generations.glob("gen-*") if p.name[4:].isdigit()]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def _remove_abandoned(generations: Path) -> None:
    """Staging folders of writers that died; safe because the caller holds the writer lock."""
    for path in generations.glob(".staging-*"):
        shutil.rmtree(path, ignore_errors=True)


def _remove_old_generations(generations: Path, keep: set[str]) -> None:
    """Keep the new generation and the one before it (a reader may still be opening it)."""
    names = sorted(p.name for p in generations.glob("gen-*"))
    for name in names[:-2]:
        if name not in keep:
            shutil.rmtree(generations / name, ignore_errors=True)


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
