"""The index on disk: SQLite metadata + FAISS vectors + BM25, published atomically.

Layout of an index directory::

    CURRENT                    {"generation": "gen-000007", "check": …}, replaced atomically
    .lock                      held by the one writer at a time
    generations/gen-000007/    one complete, immutable state
        manifest.json          format version, model, chunking, fingerprint, sources, counts,
                               size and sha256 of every other file, its own sha256
        index.sqlite           documents, chunks (chunk_id = FAISS vector id), chunk vectors
        vectors.faiss          IndexIDMap2 over inner product of normalized vectors
        bm25/                  bm25s index + positions.npy (BM25 row → chunk_id)

A writer builds the next generation in a hidden temporary folder, renames it into place and
then swaps CURRENT. Readers resolve CURRENT once and only ever see a complete generation; a
writer killed half-way leaves only a temporary folder that the next writer deletes.

Opening a generation compares every file's size with the manifest (a few stat calls); `rag info
--check` and every `rag index` also compare checksums. SQLite is the one file that cannot be
rebuilt from the others: BM25 comes from its chunk text and FAISS from its copy of the chunk
vectors, so `rag index` repairs those without the model (see `find_update_base`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
MANIFEST_CHECKSUM = "manifest_sha256"
REPAIR = "run `rag index` to repair"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source_path TEXT NOT NULL,
    url TEXT,
    date TEXT,
    outlet TEXT
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
CREATE TABLE IF NOT EXISTS chunk_vectors (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(chunk_id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
"""
SENTENCE_DTYPE = np.float16  # sentence vectors only rank sentences inside retrieved passages
# Columns added to a table after indexes were first written: an older SQLite file gets them
# (empty) in the next generation built on it, and reading one without them sees NULL.
ADDED_COLUMNS = {"documents": {"outlet": "TEXT"}}


@dataclass(frozen=True)
class StoredFile:
    """A file of a generation as it was published."""
    size: int
    sha256: str


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
    files: dict[str, StoredFile] = field(default_factory=dict)  # empty in indexes from before checksums

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k != "files"}
        files = {name: StoredFile(**record) for name, record in data.get("files", {}).items()}
        return cls(**values, files=files)

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["files"] = {name: {"size": f.size, "sha256": f.sha256} for name, f in self.files.items()}
        return data


@dataclass(frozen=True)
class DamagedFile:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} is damaged ({self.reason})"

    def error(self) -> StoreError:
        return StoreError(f"{self}: {REPAIR}")


@dataclass(frozen=True)
class UpdateBase:
    """What `rag index` can build on, after checking every file of the index on disk."""
    generation: Path | None  # newest generation whose manifest and SQLite are intact
    manifest: Manifest | None  # that generation's manifest
    sources: list[str]  # from the newest readable manifest (it may be newer than `generation`)
    damage: tuple[str, ...]  # one line per problem found; empty when all is well
    vectors_lost: bool  # the generation's FAISS file is damaged: rebuild it from SQLite
    unchecked: bool  # written before checksums: publish once to record them
    fallback: bool  # `generation` is not the one CURRENT names

    @property
    def needs_publish(self) -> bool:
        return bool(self.damage) or self.unchecked


# ----------------------------------------------------------------------------- reading

def current_generation(index_dir: Path) -> Path | None:
    """The generation CURRENT names; None when there is no CURRENT (and so no index)."""
    path, damage = _pointed_generation(index_dir)
    if damage is not None:
        raise damage.error()
    return path


def _pointed_generation(index_dir: Path) -> tuple[Path | None, DamagedFile | None]:
    pointer = index_dir / CURRENT_FILE
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        name = data["generation"]
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, DamagedFile(pointer, _one_line(exc))
    if "check" in data and data["check"] != _name_check(name):  # absent in older indexes
        return None, DamagedFile(pointer, "its check does not match the generation it names")
    path = index_dir / GENERATIONS / str(name)
    if not path.is_dir():
        return None, DamagedFile(pointer, f"it names {name}, which is missing")
    return path, None


def _name_check(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def read_manifest(generation_dir: Path) -> Manifest:
    path = generation_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        recorded = data.pop(MANIFEST_CHECKSUM, None)  # absent in indexes from before checksums
        if recorded is not None and recorded != _manifest_checksum(data):
            raise DamagedFile(path, "its checksum does not match its content").error()
        manifest = Manifest.from_dict(data)
    except FileNotFoundError:
        raise DamagedFile(path, "missing").error() from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedFile(path, _one_line(exc)).error() from None
    if manifest.format_version != INDEX_FORMAT_VERSION:
        raise StoreError(
            f"the index at {generation_dir.parent.parent} has format version "
            f"{manifest.format_version}, this version reads {INDEX_FORMAT_VERSION}: rebuild it "
            "with `rag index --full PATH`")
    return manifest


def _manifest_checksum(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def find_damage(generation_dir: Path, manifest: Manifest, *, checksums: bool) -> list[DamagedFile]:
    """The files of a generation that differ from what its manifest recorded: sizes only (a few
    stat calls), or checksums too (reads every file). An index from before checksums has no
    records: with `checksums` its SQLite and FAISS files are probed instead."""
    if not manifest.files:
        return _probe_unrecorded(generation_dir) if checksums else []
    damaged = []
    for name, record in manifest.files.items():
        path = generation_dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            damaged.append(DamagedFile(path, "missing"))
            continue
        if size != record.size:
            damaged.append(DamagedFile(path, f"{size} bytes, the manifest says {record.size}"))
        elif checksums and _sha256(path) != record.sha256:
            damaged.append(DamagedFile(path, "its checksum does not match the manifest"))
    return damaged


def check_generation(generation_dir: Path, manifest: Manifest, *, checksums: bool) -> None:
    """Raise a StoreError naming the first damaged file (see `find_damage`)."""
    damage = find_damage(generation_dir, manifest, checksums=checksums)
    if damage:
        raise damage[0].error()


def _probe_unrecorded(generation_dir: Path) -> list[DamagedFile]:
    damaged = []
    db_path = generation_dir / SQLITE
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
        if verdict != "ok" or not {"documents", "chunks"} <= tables:
            damaged.append(DamagedFile(db_path, _one_line(verdict if verdict != "ok" else "no tables")))
    except sqlite3.DatabaseError as exc:
        damaged.append(DamagedFile(db_path, _one_line(exc)))
    try:
        _read_vectors(generation_dir / VECTORS)
    except StoreError:
        damaged.append(DamagedFile(generation_dir / VECTORS, "FAISS cannot read it"))
    return damaged


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _one_line(exc: object, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " …"


def _read_vectors(path: Path):
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports every read problem as RuntimeError
        raise DamagedFile(path, _one_line(str(exc).splitlines()[-1] if str(exc) else exc)).error() from None


class Store:
    """A read-only view of one published generation. Safe to share between threads."""

    def __init__(self, index_dir: Path, generation_dir: Path, *, check: bool = False) -> None:
        self.index_dir = index_dir
        self.generation_dir = generation_dir
        self.manifest = read_manifest(generation_dir)
        check_generation(generation_dir, self.manifest, checksums=check)
        # read on first use, then kept: a generation never changes (a race only reads them twice)
        self._metadata: list[tuple[str, str | None, str | None]] | None = None
        self._chunks_by_doc: dict[str, list[int]] | None = None
        db_path = generation_dir / SQLITE
        self._db = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
            if not {"documents", "chunks", "sentences"} <= tables:
                raise sqlite3.DatabaseError("its tables are missing")
            self._outlet = "d.outlet" if "outlet" in _columns(self._db, "documents") else "NULL"
            self._vectors = _read_vectors(generation_dir / VECTORS)
            self._bm25, self._bm25_positions = _load_bm25(generation_dir / BM25_DIR)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise DamagedFile(db_path, _one_line(exc)).error() from None
        except StoreError:
            self._db.close()
            raise

    @classmethod
    def open(cls, index_dir: str | Path, *, check: bool = False) -> Store:
        """The current generation; `check` also compares every file's checksum."""
        index_dir = Path(index_dir).expanduser()
        for _ in range(5):
            generation = current_generation(index_dir)
            if generation is None:
                if any((index_dir / GENERATIONS).glob("gen-*")):
                    raise DamagedFile(index_dir / CURRENT_FILE, "missing").error()
                raise IndexNotFoundError(
                    f"no index at {index_dir}: build one with `rag index seeds` "
                    "(or another folder of articles)")
            try:
                return cls(index_dir, generation, check=check)
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

    def dense_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k chunks nearest to `query`, among the `allowed` chunk ids when given."""
        if self.size == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return []
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is None:
            scores, ids = self._vectors.search(query, min(k, self.size))
        else:  # exact search over the allowed vectors only, so k come back however few they are
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            scores, ids = self._vectors.search(query, min(k, len(allowed)),
                                               params=faiss.SearchParameters(sel=selector))
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
            f'SELECT c.chunk_id, c.doc_id, d.title, c.ordinal, c.start, c."end", c.text, {self._outlet}, '
            f"d.date, d.url FROM chunks c JOIN documents d USING (doc_id) WHERE c.chunk_id IN ({marks})", ids)
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
            f"SELECT doc_id, title, text, sha256, source_path, url, date, {self._outlet} FROM documents d "
            "WHERE doc_id = ?", (doc_id,)).fetchone()
        return Document(*row) if row else None

    def document_metadata(self) -> list[tuple[str, str | None, str | None]]:
        """(doc_id, outlet, date) of every document, by id; read once per generation."""
        if self._metadata is None:
            self._metadata = self._db.execute(
                f"SELECT doc_id, {self._outlet}, date FROM documents d ORDER BY doc_id").fetchall()
        return self._metadata

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> np.ndarray:
        """The chunk ids of the given documents (vector ids in FAISS)."""
        if self._chunks_by_doc is None:
            by_doc: dict[str, list[int]] = {}
            for chunk_id, doc_id in self._db.execute("SELECT chunk_id, doc_id FROM chunks"):
                by_doc.setdefault(doc_id, []).append(chunk_id)
            self._chunks_by_doc = by_doc
        ids = [i for doc_id in doc_ids for i in self._chunks_by_doc.get(doc_id, ())]
        return np.asarray(sorted(ids), dtype=np.int64)

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
    outlet = "d.outlet" if "outlet" in _columns(db, "documents") else "NULL"
    rows = db.execute(
        "SELECT d.doc_id, d.title, d.source_path, COUNT(c.chunk_id), length(d.text), d.url, d.date, "
        f"{outlet} FROM documents d LEFT JOIN chunks c USING (doc_id) GROUP BY d.doc_id ORDER BY d.doc_id")
    return [IndexedDocument(doc_id=doc_id, title=title, source_path=source, chunks=chunks, characters=characters,
                            uploaded=not uploads.isdisjoint(source_file(source).parents), url=url, date=date,
                            outlet=outlet)
            for doc_id, title, source, chunks, characters, url, date, outlet in rows]


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


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


def documents_without_vectors(generation_dir: Path) -> set[str]:
    """Documents with chunks whose vectors SQLite has no copy of (indexes from before the copy)."""
    db = sqlite3.connect(f"file:{generation_dir / SQLITE}?mode=ro&immutable=1", uri=True)
    try:
        has_copy = db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone() is not None
        query = ("SELECT DISTINCT c.doc_id FROM chunks c LEFT JOIN chunk_vectors v USING (chunk_id) "
                 "WHERE v.chunk_id IS NULL") if has_copy else "SELECT DISTINCT doc_id FROM chunks"
        return {row[0] for row in db.execute(query)}
    finally:
        db.close()


def find_update_base(index_dir: Path) -> UpdateBase:
    """Check the index with checksums and choose what the next generation is built from.

    The generation CURRENT names comes first, then the others newest first: the first one whose
    manifest and SQLite are intact is the base (its BM25 is rebuilt at publish anyway, its FAISS
    vectors from SQLite when damaged). With none, the index is rebuilt from its sources."""
    damage: list[str] = []
    pointed, pointer_damage = _pointed_generation(index_dir)
    others = sorted((p for p in (index_dir / GENERATIONS).glob("gen-*") if p.is_dir()), reverse=True)
    if pointer_damage is not None:
        damage.append(str(pointer_damage))
    elif pointed is None and others:
        damage.append(str(DamagedFile(index_dir / CURRENT_FILE, "missing")))
    sources: list[str] | None = None
    for generation in [pointed] * (pointed is not None) + [p for p in others if p != pointed]:
        try:
            manifest = read_manifest(generation)
        except StoreError as exc:  # damaged, or another format version
            damage.append(str(exc).rsplit(": ", 1)[0])  # without the advice: this run acts on it
            continue
        sources = manifest.sources if sources is None else sources
        damaged = find_damage(generation, manifest, checksums=True)
        damage += [str(d) for d in damaged]
        if any(d.path.name == SQLITE for d in damaged):
            continue
        return UpdateBase(generation, manifest, sources, tuple(damage),
                          vectors_lost=any(d.path.name == VECTORS for d in damaged),
                          unchecked=not manifest.files, fallback=generation != pointed)
    return UpdateBase(None, None, sources or [], tuple(damage), vectors_lost=False, unchecked=False,
                      fallback=False)


def _load_bm25(folder: Path):
    if not (folder / "positions.npy").is_file():
        return None, np.zeros(0, dtype=np.int64)
    import bm25s

    try:
        positions = np.load(folder / "positions.npy")
        if positions.size == 0:
            return None, positions
        model = bm25s.BM25.load(str(folder), mmap=False, show_progress=False)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DamagedFile(folder, _one_line(exc)).error() from None
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
    """Builds the next generation next to the current one. Use only under `writer_lock`.

    base: the generation to start from (None: empty). vectors_from_db: the base's FAISS file is
    damaged, so its vectors come from SQLite's copy. A write that fails (disk full …) removes
    everything this writer made and raises one StoreError saying what filled up."""

    def __init__(self, index_dir: Path, base: Path | None, dimension: int, *,
                 vectors_from_db: bool = False) -> None:
        self.index_dir = index_dir
        self.published: Path | None = None
        generations = index_dir / GENERATIONS
        with _failing_cleanly(index_dir, self.abandon):
            generations.mkdir(parents=True, exist_ok=True)
            _remove_abandoned(generations)
            self.name = _next_generation_name(generations)
            self.staging = generations / f".staging-{self.name}-{os.getpid()}"
            self.staging.mkdir()
            self.db = sqlite3.connect(self.staging / SQLITE)
            if base is not None:
                source = sqlite3.connect(f"file:{base / SQLITE}?mode=ro", uri=True)
                source.backup(self.db)
                source.close()
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(_SCHEMA)
            for table, added in ADDED_COLUMNS.items():
                for column in added.keys() - _columns(self.db, table):
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {added[column]}")
            if base is None or vectors_from_db:
                self.vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
                self._add_stored_vectors(dimension, base)
            else:
                self.vectors = _read_vectors(base / VECTORS)
                self._store_missing_vectors()
            if self.vectors.d != dimension:
                raise StoreError(f"vector dimension {self.vectors.d} in {base} does not match "
                                 f"the model's {dimension}: run `rag index --full`")

    def _add_stored_vectors(self, dimension: int, base: Path | None) -> None:
        rows = self.db.execute("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id").fetchall()
        if not rows:
            return
        vectors = np.vstack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
        if vectors.shape[1] != dimension:
            raise StoreError(f"vector dimension {vectors.shape[1]} in {base} does not match "
                             f"the model's {dimension}: run `rag index --full`")
        self.vectors.add_with_ids(vectors, np.asarray([r[0] for r in rows], dtype=np.int64))

    def _store_missing_vectors(self) -> None:
        """Give an index from before the SQLite copy of the vectors its copy, from FAISS."""
        missing = [r[0] for r in self.db.execute(
            "SELECT c.chunk_id FROM chunks c LEFT JOIN chunk_vectors v USING (chunk_id) "
            "WHERE v.chunk_id IS NULL")]
        if missing:
            vectors = self.vectors.reconstruct_batch(np.asarray(missing, dtype=np.int64))
            self.db.executemany("INSERT INTO chunk_vectors (chunk_id, vector) VALUES (?, ?)",
                                [(i, v.astype(np.float32).tobytes()) for i, v in zip(missing, vectors)])

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        doc_ids = list(doc_ids)
        if not doc_ids:
            return 0
        chunk_ids: list[int] = []
        with _failing_cleanly(self.index_dir, self.abandon):
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
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = []
        with _failing_cleanly(self.index_dir, self.abandon):
            self.db.execute(
                "INSERT INTO documents (doc_id, title, text, sha256, source_path, url, date, outlet) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.doc_id, doc.title, doc.text, doc.sha256, doc.source_path, doc.url, doc.date, doc.outlet))
            for chunk, vector, sentence_block in zip(chunks, vectors, sentence_vectors):
                cursor = self.db.execute(
                    'INSERT INTO chunks (doc_id, ordinal, start, "end", text, n_tokens) '
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (doc.doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.n_tokens))
                ids.append(cursor.lastrowid)
                self.db.execute("INSERT INTO chunk_vectors (chunk_id, vector) VALUES (?, ?)",
                                (cursor.lastrowid, vector.tobytes()))
                self.db.executemany(
                    'INSERT INTO sentences (chunk_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                    [(cursor.lastrowid, start, end, v.astype(SENTENCE_DTYPE).tobytes())
                     for (start, end), v in zip(chunk.sentences, sentence_block)])
        if ids:
            self.vectors.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def publish(self, manifest: dict[str, Any], lexical_tokens) -> Manifest:
        """Write BM25, vectors and manifest, then make this generation current in one step.

        lexical_tokens(title, text) → tokens of one chunk for the BM25 index."""
        with _failing_cleanly(self.index_dir, self.abandon):
            self.db.commit()
            rows = list(self.db.execute(
                "SELECT c.chunk_id, d.title, c.text FROM chunks c JOIN documents d USING (doc_id) "
                "ORDER BY c.chunk_id"))
            n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            self.db.close()
            if self.vectors.ntotal != len(rows):
                raise StoreError(f"internal error: {self.vectors.ntotal} vectors for {len(rows)} chunks")
            _write_bm25(self.staging / BM25_DIR, rows, lexical_tokens)
            # serialized here rather than by faiss.write_index, whose failures (a full disk)
            # come back as a RuntimeError without the errno
            with open(self.staging / VECTORS, "wb") as fh:
                fh.write(faiss.serialize_index(self.vectors).tobytes())
            full = Manifest(generation=self.name, format_version=INDEX_FORMAT_VERSION,
                            documents=n_docs, chunks=len(rows),
                            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            files=_seal(self.staging), **manifest)
            data = full.to_dict()
            data[MANIFEST_CHECKSUM] = _manifest_checksum(data)
            _write_synced(self.staging / MANIFEST,
                          json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            _fsync_dir(self.staging)
            final = self.index_dir / GENERATIONS / self.name
            os.replace(self.staging, final)
            self.published = final
            _atomic_write(self.index_dir / CURRENT_FILE, json.dumps(
                {"generation": self.name, "check": _name_check(self.name)}) + "\n")
        _remove_old_generations(self.index_dir / GENERATIONS, keep={self.name})
        return full

    def abandon(self) -> None:
        """Remove what this writer made, unless it is already the current generation."""
        try:
            self.db.close()
        except (AttributeError, sqlite3.Error):
            pass
        if hasattr(self, "staging"):
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.published is not None and _pointed_generation(self.index_dir)[0] != self.published:
            shutil.rmtree(self.published, ignore_errors=True)


@contextmanager
def _failing_cleanly(index_dir: Path, abandon):
    """On any failure undo the writer's work; a failed write becomes one line saying what to do."""
    try:
        yield
    except BaseException as exc:
        abandon()
        if isinstance(exc, OSError) or _is_sqlite_io_error(exc):
            raise _write_failure(index_dir, exc) from exc
        raise


def _is_sqlite_io_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(
        words in str(exc) for words in ("disk is full", "disk I/O error", "unable to open"))


def _write_failure(index_dir: Path, exc: BaseException) -> StoreError:
    unchanged = "the previous index is unchanged"
    number = exc.errno if isinstance(exc, OSError) else None
    if number == errno.EDQUOT:
        return StoreError(f"the disk quota for {index_dir} ran out while writing the new index: "
                          f"free some space and run `rag index` again; {unchanged}")
    if number == errno.ENOSPC or "disk is full" in str(exc):
        try:
            free = f", {shutil.disk_usage(index_dir).free / 1e6:.0f} MB free"
        except OSError:
            free = ""
        return StoreError(f"the disk holding {index_dir} is full{free}, so the new index could not "
                          f"be written: free some space and run `rag index` again; {unchanged}")
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc)
    return StoreError(f"writing the new index in {index_dir} failed: {reason}{where}: fix that and "
                      f"run `rag index` again; {unchanged}")


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
    try:
        _write_synced(tmp, content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_synced(path: Path, content: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def _seal(folder: Path) -> dict[str, StoredFile]:
    """Flush every file of a staged generation to disk and record its size and checksum."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            _fsync_dir(path)
            continue
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            os.fsync(fh.fileno())
        files[path.relative_to(folder).as_posix()] = StoredFile(path.stat().st_size, digest)
    return files


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
