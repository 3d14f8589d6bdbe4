"""The index on disk: immutable segments (SQLite + FAISS + BM25 postings) listed by generations.

Layout of an index directory::

    CURRENT                    {"generation": "gen-000007", "check": …}, replaced atomically
    .lock                      held by the one writer at a time
    generations/gen-000007/
        manifest.json          format version, model, chunking, fingerprint, sources, counts, the
                               segments with their tombstones, size, mtime and sha256 of every
                               segment file, next chunk id, the sha256 of source-files.json, its own
        source-files.json      size and mtime of each source file the documents were read from
                               (`rag index` reads again only files that differ); optional
    segments/seg-000007/       written once, shared by every generation that lists it
        index.sqlite           documents, chunks (chunk_id = FAISS vector id), chunk vectors
        vectors.faiss          inner product of normalized vectors: exact (IndexIDMap2 over a
                               flat index) or, in a segment of `approximate_search_from` chunks
                               or more, IVF over 8-bit codes, its candidates re-scored exactly
                               with the float32 vectors in SQLite
        postings/              raw BM25 term frequencies (rag.postings)

An update writes one segment with the new and changed documents and a generation whose manifest
lists the segments it keeps plus that one, with tombstones (document ids) for the documents
removed or replaced in older segments: it costs what changed, not the index's size. A merge
(`rag index --optimize`, or the policy in `merge_plan` after an update) copies the live rows of
some segments into one new segment, without the model. BM25 is scored with statistics summed
over the live chunks of all segments, so it is exact whatever the segmentation.

A writer builds a segment and a generation in hidden temporary folders, renames them into place
and then swaps CURRENT. Readers resolve CURRENT once and only ever see a complete generation; a
writer killed half-way leaves only temporary folders that the next writer deletes. Generations
beyond the newest two, and segments no remaining generation lists, are deleted.

Opening a generation compares every file's size with the manifest (a few stat calls). Every
`rag index` / `rag remove` also compares the checksums of the files whose mtime is not the one
recorded when their checksum last matched (a new segment's files are checksummed as they are
written), and records the new mtimes: an update reads what changed, not the whole index. `rag
info --check` and `rag index --check` compare every checksum; they alone find damage that kept
a file's size and mtime. A merge checksums the SQLite files it copies. SQLite is the one file that cannot be
rebuilt from the others: a segment whose FAISS or postings are damaged is copied from its SQLite
(chunk text and vectors) into the next segment by `rag index`, without the model (see
`find_update_base`). Indexes of format 2 (one generation = one SQLite/FAISS/bm25s set) are
converted the same way by the next `rag index`.
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
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .config import INDEX_FORMAT_VERSION
from .documents import READER_VERSION, FileState, source_file, source_file_name
from .errors import IndexNotFoundError, StoreError
from .postings import Postings, lucene_idf
from .types import Chunk, Document, IndexedDocument, LexicalHits, StoredChunk

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
import faiss  # noqa: E402

CURRENT_FILE = "CURRENT"
GENERATIONS = "generations"
SEGMENTS = "segments"
MANIFEST = "manifest.json"
SOURCE_FILES = "source-files.json"
SQLITE = "index.sqlite"
VECTORS = "vectors.faiss"
BM25_DIR = "postings"
LEGACY_FORMAT = 2  # one generation = one set of files, bm25s scores; converted by `rag index`
LEGACY_SEGMENT = ""  # the name of a legacy generation's own files, seen as a segment
MANIFEST_CHECKSUM = "manifest_sha256"
REPAIR = "run `rag index` to repair"
# damage that left a file's size and mtime as recorded: plain `rag index` trusts such files
REPAIR_CHECKED = "run `rag index --check` to repair"
# Merge policy (see merge_plan): few segments keep a search to few FAISS/SQLite look-ups; a
# segment mostly tombstoned wastes memory and time on rows no search returns.
MAX_SEGMENTS = 8
MAX_TOMBSTONE_SHARE = 0.2
# Approximate segments (see _approximate_index): IVF lists of ~n/(2·√n) vectors, 1/8 of them
# probed (at least 32), and RESCORE × k candidates re-scored with the exact vectors. Measured in
# docs/retrieval.md ("A million chunks").
MIN_PROBES = 32
PROBE_SHARE = 8
RESCORE = 2
APPROXIMATE_FROM = 200_000  # default of Settings.approximate_search_from
EXACT_FILTER_ROWS = 4096  # a filter this selective is searched exactly, not through the lists

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
    chunk_id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL
);
-- covers what updates and searches read of a document: a row scan would step through its text
CREATE INDEX IF NOT EXISTS documents_fields ON documents(doc_id, sha256, source_path, title, outlet, date, url);
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
DOCUMENT_COLUMNS = ("doc_id", "title", "text", "sha256", "source_path", "url", "date", "outlet")


@dataclass(frozen=True)
class StoredFile:
    """A file of a generation as it was published, and its mtime when its checksum last matched
    (0: unknown, in indexes from before mtimes)."""
    size: int
    sha256: str
    mtime_ns: int = 0


@dataclass(frozen=True)
class SegmentRecord:
    """One segment as a generation lists it."""
    name: str
    documents: int  # rows in its SQLite, tombstoned ones included
    chunks: int
    deleted: tuple[str, ...] = ()  # tombstones: documents removed or replaced since it was written
    deleted_chunks: int = 0

    @property
    def live_chunks(self) -> int:
        return self.chunks - self.deleted_chunks


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
    # paths relative to the index directory (to the generation's folder in a legacy index);
    # empty in legacy indexes from before checksums
    files: dict[str, StoredFile] = field(default_factory=dict)
    segments: tuple[SegmentRecord, ...] = ()
    next_chunk_id: int = 1
    source_files_sha256: str = ""  # of SOURCE_FILES beside it; empty: none

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        values = {k: data[k] for k in cls.__dataclass_fields__
                  if k not in ("files", "segments", "next_chunk_id", "source_files_sha256")}
        files = {name: StoredFile(**record) for name, record in data.get("files", {}).items()}
        segments = tuple(SegmentRecord(**{**s, "deleted": tuple(s.get("deleted", ()))})
                         for s in data.get("segments", ()))
        if values["format_version"] == LEGACY_FORMAT:
            segments = (SegmentRecord(LEGACY_SEGMENT, values["documents"], values["chunks"]),)
        return cls(**values, files=files, segments=segments, next_chunk_id=int(data.get("next_chunk_id", 1)),
                   source_files_sha256=str(data.get("source_files_sha256", "")))

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["files"] = {name: {"size": f.size, "sha256": f.sha256, "mtime_ns": f.mtime_ns}
                         for name, f in self.files.items()}
        data["segments"] = [{"name": s.name, "documents": s.documents, "chunks": s.chunks,
                             "deleted": list(s.deleted), "deleted_chunks": s.deleted_chunks}
                            for s in self.segments]
        return data

    @property
    def legacy(self) -> bool:
        return self.format_version == LEGACY_FORMAT


@dataclass(frozen=True)
class DamagedFile:
    path: Path
    reason: str
    advice: str = REPAIR

    def __str__(self) -> str:
        return f"{self.path} is damaged ({self.reason})"

    def error(self) -> StoreError:
        return StoreError(f"{self}: {self.advice}")


@dataclass(frozen=True)
class UpdateBase:
    """What `rag index` can build on, after checking every file of the index on disk."""
    generation: Path | None  # newest generation whose manifest and every segment's SQLite are intact
    manifest: Manifest | None  # that generation's manifest
    sources: list[str]  # from the newest readable manifest (it may be newer than `generation`)
    damage: tuple[str, ...]  # one line per problem found; empty when all is well
    rewrite: frozenset[str]  # segments to copy from their SQLite (damaged FAISS/postings, legacy)
    unrecoverable: frozenset[str]  # documents whose vectors no file holds any more: embed again
    fallback: bool  # `generation` is not the one CURRENT names
    verified: dict[str, StoredFile] = field(default_factory=dict)  # checksummed now, with today's mtime

    @property
    def needs_publish(self) -> bool:
        return bool(self.damage or self.rewrite or self.verified)  # verified: record the new mtimes


def segment_folder(generation_dir: Path, name: str) -> Path:
    """Where a segment's files are (a legacy generation's own files are its one segment)."""
    return generation_dir if name == LEGACY_SEGMENT else generation_dir.parent.parent / SEGMENTS / name


def merge_plan(segments: Sequence[SegmentRecord]) -> frozenset[str]:
    """The segments an automatic merge should combine: every mostly-tombstoned one and, past
    MAX_SEGMENTS, the smallest ones (so a big segment is rewritten only when much of it is gone)."""
    chosen = {s.name for s in segments if s.chunks and s.deleted_chunks / s.chunks > MAX_TOMBSTONE_SHARE}
    if len(segments) > MAX_SEGMENTS:
        by_size = sorted(segments, key=lambda s: s.live_chunks)
        chosen |= {s.name for s in by_size[:len(segments) - MAX_SEGMENTS // 2 + 1]}
    return frozenset(chosen) if len(chosen) > 1 or any(
        s.deleted for s in segments if s.name in chosen) else frozenset()


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
    if manifest.format_version not in (INDEX_FORMAT_VERSION, LEGACY_FORMAT):
        raise StoreError(
            f"the index at {generation_dir.parent.parent} has format version "
            f"{manifest.format_version}, this version reads {INDEX_FORMAT_VERSION}: rebuild it "
            "with `rag index --full PATH`")
    return manifest


def _manifest_checksum(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def find_damage(generation_dir: Path, manifest: Manifest, *, checksums: bool,
                trust_unchanged: bool = False) -> list[DamagedFile]:
    """The files of a generation's segments that differ from what its manifest recorded: sizes
    only (a few stat calls), or checksums too (reads every file). `trust_unchanged` checksums
    only files whose mtime differs from the one recorded when their checksum last matched.
    A legacy index from before checksums has no records: with `checksums` its SQLite and FAISS
    files are probed instead."""
    return _check_files(generation_dir, manifest, checksums, trust_unchanged)[0]


def _check_files(generation_dir: Path, manifest: Manifest, checksums: bool, trust_unchanged: bool
                 ) -> tuple[list[DamagedFile], dict[str, StoredFile]]:
    """(the damaged files, the records of the files checksummed intact, with their mtime now)."""
    if not manifest.files:
        return (_probe_unrecorded(generation_dir) if checksums and manifest.legacy else []), {}
    root = generation_dir if manifest.legacy else generation_dir.parent.parent
    damaged, verified = [], {}
    for name, record in manifest.files.items():
        path = root / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            damaged.append(DamagedFile(path, "missing"))
            continue
        if stat.st_size != record.size:
            damaged.append(DamagedFile(path, f"{stat.st_size} bytes, the manifest says {record.size}"))
        elif not checksums or (trust_unchanged and record.mtime_ns == stat.st_mtime_ns):
            continue
        elif _sha256(path) != record.sha256:
            damaged.append(DamagedFile(path, "its checksum does not match the manifest",
                                       REPAIR_CHECKED if record.mtime_ns == stat.st_mtime_ns else REPAIR))
        elif record.mtime_ns != stat.st_mtime_ns:
            verified[name] = replace(record, mtime_ns=stat.st_mtime_ns)
    return damaged, verified


def check_generation(generation_dir: Path, manifest: Manifest, *, checksums: bool,
                     trust_unchanged: bool = False) -> dict[str, StoredFile]:
    """Raise a StoreError naming the first damaged file (see `find_damage`); else the records
    of the files whose checksum was verified under a new mtime."""
    damage, verified = _check_files(generation_dir, manifest, checksums, trust_unchanged)
    if damage:
        raise damage[0].error()
    return verified


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


class _Segment:
    """One segment opened for reading, its tombstoned rows masked out."""

    def __init__(self, generation_dir: Path, record: SegmentRecord) -> None:
        folder = segment_folder(generation_dir, record.name)
        db_path = folder / SQLITE
        self.db = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        try:
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master")}
            if not {"documents", "chunks", "sentences"} <= tables:
                raise sqlite3.DatabaseError("its tables are missing")
            # SQLite, without statistics, would look a chunk's document up by its primary key and
            # read the row through the article's text to reach the fields after it
            self.documents_d = ("documents AS d INDEXED BY documents_fields" if "documents_fields" in tables
                                else "documents AS d")
            self.vectors = _read_vectors(folder / VECTORS)
            self.approximate = isinstance(self.vectors, faiss.IndexIVF)
            if self.approximate:  # set here, not when written: the probe share can change
                self.vectors.nprobe = probes(self.vectors.nlist)
            self.postings = _load_postings(folder / BM25_DIR)
            self.deleted_docs = frozenset(record.deleted)
            deleted_ids = np.asarray(sorted(_chunk_ids_of(self.db, record.deleted)), dtype=np.int64)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise DamagedFile(db_path, _one_line(exc)).error() from None
        except StoreError:
            self.db.close()
            raise
        ids = self.postings.chunk_ids
        if len(ids) != self.vectors.ntotal:
            self.db.close()
            raise DamagedFile(folder / BM25_DIR, f"{len(ids)} rows for {self.vectors.ntotal} vectors").error()
        self.live = None if not len(deleted_ids) else ~np.isin(ids, deleted_ids)
        self.live_ids = ids if self.live is None else ids[self.live]
        # kept referenced: FAISS holds only a pointer to the inner selector
        self._deleted_selector = faiss.IDSelectorBatch(deleted_ids) if len(deleted_ids) else None
        self.live_selector = faiss.IDSelectorNot(self._deleted_selector) if len(deleted_ids) else None
        self.total_length = float(self.postings.lengths.sum() if self.live is None
                                  else self.postings.lengths[self.live].sum())

    @property
    def size(self) -> int:
        return len(self.live_ids)

    def holds(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Which of the (live) chunk ids are this segment's."""
        at = np.searchsorted(self.live_ids, chunk_ids)
        return (at < len(self.live_ids)) & (self.live_ids[np.minimum(at, len(self.live_ids) - 1)] == chunk_ids)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk ids) of the k nearest live rows (of the `allowed` ones when given); the
        scores are exact inner products also where the lists are searched approximately."""
        selector = self.live_selector
        if allowed is not None:
            allowed = allowed[self.holds(allowed)] if self.size else allowed[:0]
            if not len(allowed):
                return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            if self.approximate and len(allowed) <= EXACT_FILTER_ROWS:
                scores = self.exact_vectors(allowed) @ query[0]
                best = np.argsort(-scores, kind="stable")[:k]
                return scores[best].astype(np.float32), allowed[best]
            selector = faiss.IDSelectorBatch(allowed)
            k = min(k, len(allowed))
        k = min(k, self.size)
        if not self.approximate:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, ids = self.vectors.search(query, k, params=params)
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        params = faiss.SearchParametersIVF(sel=selector, nprobe=self.vectors.nprobe) if selector is not None else None
        _, ids = self.vectors.search(query, min(self.size, RESCORE * k), params=params)
        ids = ids[0][ids[0] >= 0]
        scores = self.exact_vectors(ids) @ query[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return scores[best].astype(np.float32), ids[best]

    def exact_vectors(self, chunk_ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of some of this segment's chunks, in the given order."""
        if not self.approximate:
            return self.vectors.reconstruct_batch(chunk_ids)
        out = np.zeros((len(chunk_ids), self.vectors.d), dtype=np.float32)
        ids = chunk_ids.tolist()
        where = {chunk_id: i for i, chunk_id in enumerate(ids)}
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            for chunk_id, blob in self.db.execute(
                    f"SELECT chunk_id, vector FROM chunk_vectors WHERE chunk_id IN ({','.join('?' * len(batch))})",
                    batch):
                out[where[chunk_id]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def close(self) -> None:
        self.db.close()


class Store:
    """A read-only view of one published generation. Safe to share between threads."""

    def __init__(self, index_dir: Path, generation_dir: Path, *, check: bool = False) -> None:
        self.index_dir = index_dir
        self.generation_dir = generation_dir
        self.manifest = read_manifest(generation_dir)
        if self.manifest.legacy:
            raise StoreError(
                f"the index at {index_dir} was written by an older version of Sanad (format "
                f"{LEGACY_FORMAT}): run `rag index` to convert it (nothing is embedded again)")
        check_generation(generation_dir, self.manifest, checksums=check)
        # read on first use, then kept: a generation never changes (a race only reads them twice)
        self._metadata: list[tuple[str, str | None, str | None]] | None = None
        self._chunks_by_doc: dict[str, list[int]] | None = None
        self._segment_of_doc: dict[str, _Segment] | None = None
        self._segments: list[_Segment] = []
        try:
            for record in self.manifest.segments:
                self._segments.append(_Segment(generation_dir, record))
        except StoreError:
            self.close()
            raise
        self._size = sum(s.size for s in self._segments)
        self._average_length = sum(s.total_length for s in self._segments) / max(1, self._size)
        self._length_norms = [s.postings.length_norm(self._average_length) for s in self._segments]

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
        for segment in self._segments:
            segment.close()

    @property
    def size(self) -> int:
        return self._size

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.manifest.segments]

    def dense_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k chunks nearest to `query`, among the `allowed` chunk ids when given."""
        if self.size == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return []
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        allowed = None if allowed is None else np.asarray(allowed, dtype=np.int64)
        found = [s.search(query, k, allowed) for s in self._segments if s.size]
        scores = np.concatenate([f[0] for f in found]) if found else np.zeros(0)
        ids = np.concatenate([f[1] for f in found]) if found else np.zeros(0, dtype=np.int64)
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(ids[i]), float(scores[i])) for i in best]

    def dense_scores(self, query: np.ndarray, chunk_ids: Sequence[int]) -> dict[int, float]:
        """Exact inner products for given chunks (vectors are reconstructed from the index)."""
        if not len(chunk_ids):
            return {}
        vectors = self.vectors_of(chunk_ids)
        return dict(zip(map(int, chunk_ids), (vectors @ query.astype(np.float32)).tolist()))

    def vectors_of(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of live chunks, in the given order."""
        ids = np.asarray(chunk_ids, dtype=np.int64)
        out = np.zeros((len(ids), self._segments[0].vectors.d if self._segments else 0), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        for segment in self._segments:
            mine = segment.holds(ids) & ~found
            if mine.any():
                out[mine] = segment.exact_vectors(ids[mine])
                found |= mine
        if not found.all():
            raise StoreError(f"chunk {int(ids[~found][0])} is not in the index at {self.index_dir}")
        return out

    def bm25_scores(self, tokens: list[str]) -> dict[int, float]:
        """chunk_id → BM25 score, for every chunk that matches at least one token."""
        out: dict[int, float] = {}
        for segment, scores in self._segment_bm25(tokens, None):
            hits = np.flatnonzero(scores > 0)
            out.update(zip(segment.postings.chunk_ids[hits].tolist(), scores[hits].tolist()))
        return out

    def bm25_search(self, tokens: list[str], k: int, allowed: np.ndarray | None = None,
                    scores_of: Sequence[int] = (), frequencies: dict[str, int] | None = None) -> LexicalHits:
        """The k best BM25 matches (among the `allowed` chunk ids when given, sorted), and the
        scores of the chunks in `scores_of` that match; `frequencies`: `document_frequencies(tokens)`
        when the caller has them."""
        found_ids, found_scores, asked = [], [], {}
        wanted = np.asarray(scores_of, dtype=np.int64)
        for segment, scores in self._segment_bm25(tokens, allowed, frequencies):
            ids = segment.postings.chunk_ids
            if k > 0:
                if np.count_nonzero(scores) > k:  # the k-th best score, then every row reaching it
                    kth = len(scores) - k
                    rows = np.flatnonzero(scores >= np.partition(scores, kth)[kth])
                else:
                    rows = np.flatnonzero(scores > 0)
                found_ids.append(ids[rows])  # in row order: ties then rank as in a full sort
                found_scores.append(scores[rows])
            if len(wanted):
                at = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
                mine = (ids[at] == wanted) & (scores[at] > 0)
                asked.update(zip(wanted[mine].tolist(), scores[at[mine]].tolist()))
        if not found_ids:
            return LexicalHits([], asked)
        ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
        best = np.argsort(-scores, kind="stable")[:k]
        top = list(zip(ids[best].tolist(), scores[best].tolist()))
        return LexicalHits(top, {**asked, **dict(top)})

    def _segment_bm25(self, tokens: list[str], allowed: np.ndarray | None,
                      frequencies: dict[str, int] | None = None):
        """(segment, BM25 score of each of its rows), 0 for tombstoned and not allowed rows."""
        if not tokens or self.size == 0:
            return
        frequencies = self.document_frequencies(tokens) if frequencies is None else frequencies
        weighted = [(t, lucene_idf(self.size, frequencies[t])) for t in tokens if frequencies[t]]
        if not weighted:
            return
        for segment, norm in zip(self._segments, self._length_norms):
            if not len(segment.postings.chunk_ids):
                continue
            scores = segment.postings.scores(weighted, self._average_length, norm)
            if segment.live is not None:
                scores[~segment.live] = 0
            if allowed is not None:
                ids = segment.postings.chunk_ids
                at = np.minimum(np.searchsorted(allowed, ids), max(0, len(allowed) - 1))
                scores[allowed[at] != ids if len(allowed) else slice(None)] = 0
            yield segment, scores

    def document_frequencies(self, tokens: Iterable[str]) -> dict[str, int]:
        """In how many live chunks each lexical token occurs (0 for tokens the corpus lacks)."""
        return {token: sum(s.postings.document_frequency(token, s.live) for s in self._segments)
                for token in set(tokens)}

    def chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        ids = np.asarray(list(dict.fromkeys(int(i) for i in chunk_ids)), dtype=np.int64)
        out: dict[int, StoredChunk] = {}
        for segment in self._segments:
            mine = ids[segment.holds(ids)].tolist() if len(ids) else []
            if not mine:
                continue
            marks = ",".join("?" * len(mine))
            rows = segment.db.execute(
                f'SELECT c.chunk_id, c.doc_id, d.title, c.ordinal, c.start, c."end", c.text, d.outlet, '
                f"d.date, d.url FROM chunks c JOIN {segment.documents_d} USING (doc_id) WHERE c.chunk_id IN ({marks})",
                mine)
            out.update((row[0], StoredChunk(*row)) for row in rows)
        return out

    def _owner(self, doc_id: str) -> _Segment | None:
        if self._segment_of_doc is None:
            owners = {}
            for segment in self._segments:
                for (found,) in segment.db.execute("SELECT doc_id FROM documents"):
                    if found not in segment.deleted_docs:
                        owners[found] = segment
            self._segment_of_doc = owners
        return self._segment_of_doc.get(doc_id)

    def sentences_in(self, doc_id: str, start: int, end: int) -> list[tuple[int, int, np.ndarray]]:
        """(start, end, vector) of the stored sentences of a document inside [start, end), in
        document order; a sentence stored twice (chunk overlap) is listed once."""
        segment = self._owner(doc_id)
        if segment is None:
            return []
        rows = segment.db.execute(
            'SELECT s.start, s."end", s.vector FROM sentences s JOIN chunks c USING (chunk_id) '
            'WHERE c.doc_id = ? AND s.start >= ? AND s."end" <= ? ORDER BY s.start, c.chunk_id',
            (doc_id, start, end))
        seen: dict[tuple[int, int], np.ndarray] = {}
        for s_start, s_end, blob in rows:
            seen.setdefault((s_start, s_end), np.frombuffer(blob, dtype=SENTENCE_DTYPE).astype(np.float32))
        return [(s, e, v) for (s, e), v in seen.items()]

    def text_span(self, doc_id: str, start: int, end: int) -> str:
        segment = self._owner(doc_id)
        row = segment.db.execute("SELECT substr(text, ?, ?) FROM documents WHERE doc_id = ?",
                                 (start + 1, end - start, doc_id)).fetchone() if segment else None
        return row[0] if row else ""

    def document(self, doc_id: str) -> Document | None:
        segment = self._owner(doc_id)
        row = segment.db.execute(
            "SELECT doc_id, title, text, sha256, source_path, url, date, outlet FROM documents "
            "WHERE doc_id = ?", (doc_id,)).fetchone() if segment else None
        return Document(*row) if row else None

    def _live_rows(self, query: str) -> list[tuple]:
        """Rows of `query` (first column a doc_id) from every segment, tombstones left out."""
        return [row for segment in self._segments for row in segment.db.execute(query)
                if row[0] not in segment.deleted_docs]

    def document_metadata(self) -> list[tuple[str, str | None, str | None]]:
        """(doc_id, outlet, date) of every document, by id; read once per generation."""
        if self._metadata is None:
            self._metadata = sorted(self._live_rows("SELECT doc_id, outlet, date FROM documents"))
        return self._metadata

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> np.ndarray:
        """The chunk ids of the given documents (vector ids in FAISS)."""
        if self._chunks_by_doc is None:
            by_doc: dict[str, list[int]] = {}
            for doc_id, chunk_id in self._live_rows("SELECT doc_id, chunk_id FROM chunks"):
                by_doc.setdefault(doc_id, []).append(chunk_id)
            self._chunks_by_doc = by_doc
        ids = [i for doc_id in doc_ids for i in self._chunks_by_doc.get(doc_id, ())]
        return np.asarray(sorted(ids), dtype=np.int64)

    def document_sources(self) -> dict[str, str]:
        return dict(self._live_rows("SELECT doc_id, source_path FROM documents"))

    def document_ids(self) -> list[str]:
        return sorted(row[0] for row in self._live_rows("SELECT doc_id FROM documents"))

    def indexed_documents(self, uploads_dir: Path) -> list[IndexedDocument]:
        return sorted((d for segment in self._segments for d in _indexed_documents(segment.db, uploads_dir)
                       if d.doc_id not in segment.deleted_docs), key=lambda d: d.doc_id)


def _chunk_ids_of(db: sqlite3.Connection, doc_ids: Iterable[str]) -> list[int]:
    doc_ids = list(doc_ids)
    ids: list[int] = []
    for i in range(0, len(doc_ids), 500):
        batch = doc_ids[i:i + 500]
        ids += [r[0] for r in db.execute(
            f"SELECT chunk_id FROM chunks WHERE doc_id IN ({','.join('?' * len(batch))})", batch)]
    return ids


def _load_postings(folder: Path) -> Postings:
    try:
        return Postings.load(folder)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DamagedFile(folder, _one_line(exc)).error() from None


def _live_documents(generation_dir: Path, manifest: Manifest, query: str) -> list[tuple]:
    """Rows of `query` (first column a doc_id) over a generation's segments, without loading
    vectors; tombstoned documents left out."""
    rows = []
    for record in manifest.segments:
        db = _open_readonly(segment_folder(generation_dir, record.name) / SQLITE)
        try:
            gone = set(record.deleted)
            rows += [row for row in db.execute(query) if row[0] not in gone]
        finally:
            db.close()
    return rows


def _open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def indexed_documents(generation_dir: Path, uploads_dir: Path) -> list[IndexedDocument]:
    """Every document of a generation, by id, without loading its vectors."""
    manifest = read_manifest(generation_dir)
    documents = []
    for record in manifest.segments:
        db = _open_readonly(segment_folder(generation_dir, record.name) / SQLITE)
        try:
            documents += [d for d in _indexed_documents(db, uploads_dir) if d.doc_id not in record.deleted]
        finally:
            db.close()
    return sorted(documents, key=lambda d: d.doc_id)


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


def _columns(db: sqlite3.Connection, table: str, schema: str = "main") -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")}


@dataclass(frozen=True)
class StoredDocumentState:
    """What an update compares a document with: its content hash, chunk count and source file."""
    sha256: str
    chunks: int
    source_file: str


def stored_document_hashes(generation_dir: Path) -> dict[str, StoredDocumentState]:
    """doc_id → what the generation holds of it."""
    manifest = read_manifest(generation_dir)
    counts = dict(_live_documents(generation_dir, manifest, "SELECT doc_id, COUNT(*) FROM chunks GROUP BY doc_id"))
    rows = _live_documents(generation_dir, manifest, "SELECT doc_id, sha256, source_path FROM documents")
    return {doc_id: StoredDocumentState(sha, counts.get(doc_id, 0), source_file_name(source))
            for doc_id, sha, source in rows}


def source_file_states(generation_dir: Path, manifest: Manifest) -> dict[str, FileState]:
    """The source files' states a generation recorded; empty when it has none or they are
    damaged (the update then reads every file, which is only slower)."""
    if not manifest.source_files_sha256:
        return {}
    try:
        raw = (generation_dir / SOURCE_FILES).read_bytes()
        if hashlib.sha256(raw).hexdigest() != manifest.source_files_sha256:
            return {}
        data = json.loads(raw)
        if data.get("reader") != READER_VERSION:
            return {}
        return {path: FileState(int(size), int(mtime)) for path, (size, mtime) in data["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _documents_without_vectors(folder: Path) -> set[str]:
    """Documents with chunks whose vectors SQLite has no copy of (legacy indexes before the copy)."""
    db = _open_readonly(folder / SQLITE)
    try:
        has_copy = db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone() is not None
        query = ("SELECT DISTINCT c.doc_id FROM chunks c LEFT JOIN chunk_vectors v USING (chunk_id) "
                 "WHERE v.chunk_id IS NULL") if has_copy else "SELECT DISTINCT doc_id FROM chunks"
        return {row[0] for row in db.execute(query)}
    finally:
        db.close()


def find_update_base(index_dir: Path, *, check: bool = False) -> UpdateBase:
    """Check the index and choose what the next generation is built from. Sizes of every file
    are compared; checksums of the files whose mtime is not the one recorded when their checksum
    last matched (a segment is checksummed when written), or of every file with `check`.

    The generation CURRENT names comes first, then the others newest first: the first one whose
    manifest and every segment's SQLite are intact is the base. Its segments with a damaged FAISS
    or postings file are copied from their SQLite into the next segment (see `rewrite`). With
    none, the index is rebuilt from its sources."""
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
        damaged, verified = _check_files(generation, manifest, True, not check)
        damage += [str(d) for d in damaged]
        if any(d.path.name == SQLITE for d in damaged):
            continue
        rewrite = {LEGACY_SEGMENT} if manifest.legacy else set()
        unrecoverable: set[str] = set()
        for record in manifest.segments:
            folder = segment_folder(generation, record.name)
            hit = [d for d in damaged if d.path.is_relative_to(folder)]
            if hit:
                rewrite.add(record.name)
            if any(d.path.name == VECTORS for d in hit):
                unrecoverable |= _documents_without_vectors(folder) - set(record.deleted)
        return UpdateBase(generation, manifest, sources, tuple(damage), frozenset(rewrite),
                          frozenset(unrecoverable), fallback=generation != pointed, verified=verified)
    return UpdateBase(None, None, sources or [], tuple(damage), frozenset(), frozenset(), fallback=False)


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
    """Builds the next generation: the base's segments (by reference, tombstones added by
    `remove_documents`) plus one new segment. Use only under `writer_lock`.

    base: the generation to start from (None: empty). rewrite: base segments whose live rows are
    copied into the new segment from their SQLite (a merge, a damaged FAISS or postings file, a
    legacy index); their own files are then no longer listed. A write that fails (disk full …)
    removes everything this writer made and raises one StoreError saying what filled up."""

    def __init__(self, index_dir: Path, base: Path | None, dimension: int, *,
                 rewrite: Iterable[str] = (), verified: dict[str, StoredFile] | None = None,
                 approximate_from: int = APPROXIMATE_FROM) -> None:
        self.index_dir = index_dir
        self.dimension = dimension
        self.approximate_from = approximate_from
        self.published: Path | None = None
        self.published_segment: Path | None = None
        generations, segments = index_dir / GENERATIONS, index_dir / SEGMENTS
        with _failing_cleanly(index_dir, self.abandon):
            generations.mkdir(parents=True, exist_ok=True)
            segments.mkdir(exist_ok=True)
            _remove_abandoned(generations)
            _remove_abandoned(segments)
            self.name = _next_generation_name(generations)
            self.segment_name = "seg-" + self.name.split("-", 1)[1]
            self.staging = segments / f".staging-{self.segment_name}-{os.getpid()}"
            self.staging.mkdir()
            self.db = sqlite3.connect(f"file:{self.staging / SQLITE}", uri=True)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(_SCHEMA)
            manifest = read_manifest(base) if base is not None else None
            self.base_files = {**manifest.files, **(verified or {})} if manifest is not None else {}
            self._base, self._base_manifest = base, manifest
            self.next_chunk_id = manifest.next_chunk_id if manifest is not None else 1
            rewrite = set(rewrite) | ({LEGACY_SEGMENT} if manifest is not None and manifest.legacy else set())
            self.kept: dict[str, SegmentRecord] = {}
            for record in manifest.segments if manifest is not None else ():
                if record.name in rewrite:
                    self._copy_segment(segment_folder(base, record.name), record)
                else:
                    self.kept[record.name] = record
            self.kept_folders = {name: segment_folder(base, name) for name in self.kept} if base else {}

    @cached_property
    def base_source_files(self) -> dict[str, FileState]:
        return source_file_states(self._base, self._base_manifest) if self._base_manifest is not None else {}

    def _copy_segment(self, folder: Path, record: SegmentRecord) -> None:
        """Copy a segment's live documents, chunks, sentences and vectors into the new one, after
        checking its SQLite's checksum (copying reads all of it anyway)."""
        stored = self.base_files.get(f"{SEGMENTS}/{record.name}/{SQLITE}" if record.name else SQLITE)
        if stored is not None and _sha256(folder / SQLITE) != stored.sha256:
            raise DamagedFile(folder / SQLITE, "its checksum does not match the manifest", REPAIR_CHECKED).error()
        self.db.execute("ATTACH DATABASE ? AS old", (f"file:{folder / SQLITE}?mode=ro&immutable=1",))
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (doc_id TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM gone")
        self.db.executemany("INSERT OR IGNORE INTO gone VALUES (?)", [(d,) for d in record.deleted])
        columns = ", ".join(c if c in _columns(self.db, "documents", "old") else "NULL" for c in DOCUMENT_COLUMNS)
        live = "doc_id NOT IN (SELECT doc_id FROM gone)"
        self.db.execute(f"INSERT INTO documents ({', '.join(DOCUMENT_COLUMNS)}) "
                        f"SELECT {columns} FROM old.documents WHERE {live}")
        self.db.execute('INSERT INTO chunks (chunk_id, doc_id, ordinal, start, "end", text, n_tokens) '
                        f'SELECT chunk_id, doc_id, ordinal, start, "end", text, n_tokens FROM old.chunks WHERE {live}')
        self.db.execute('INSERT INTO sentences (chunk_id, start, "end", vector) SELECT s.chunk_id, s.start, '
                        's."end", s.vector FROM old.sentences s JOIN old.chunks c USING (chunk_id) '
                        f"WHERE c.{live}")
        if "chunk_vectors" in {r[0] for r in self.db.execute("SELECT name FROM old.sqlite_master")}:
            self.db.execute("INSERT INTO chunk_vectors (chunk_id, vector) SELECT v.chunk_id, v.vector "
                            f"FROM old.chunk_vectors v JOIN old.chunks c USING (chunk_id) WHERE c.{live}")
        top = self.db.execute("SELECT MAX(chunk_id) FROM old.chunks").fetchone()[0]
        self.next_chunk_id = max(self.next_chunk_id, (top or 0) + 1)
        self.db.commit()
        self.db.execute("DETACH DATABASE old")
        missing = [r[0] for r in self.db.execute(
            "SELECT c.chunk_id FROM chunks c LEFT JOIN chunk_vectors v USING (chunk_id) WHERE v.chunk_id IS NULL")]
        if missing:  # a legacy index from before the SQLite copy: its FAISS file holds them
            try:
                vectors = _read_vectors(folder / VECTORS).reconstruct_batch(np.asarray(missing, dtype=np.int64))
            except StoreError:
                return  # lost: the caller embeds those documents again (UpdateBase.unrecoverable)
            self.db.executemany("INSERT INTO chunk_vectors (chunk_id, vector) VALUES (?, ?)",
                                [(i, v.astype(np.float32).tobytes()) for i, v in zip(missing, vectors)])

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """Take documents out: from the new segment directly, from kept segments by tombstones."""
        doc_ids = list(dict.fromkeys(doc_ids))
        if not doc_ids:
            return 0
        removed = 0
        with _failing_cleanly(self.index_dir, self.abandon):
            for i in range(0, len(doc_ids), 500):
                batch = doc_ids[i:i + 500]
                marks = ",".join("?" * len(batch))
                removed += self.db.execute(f"SELECT COUNT(*) FROM chunks WHERE doc_id IN ({marks})",
                                           batch).fetchone()[0]
                self.db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", batch)
            for name, record in list(self.kept.items()):
                db = _open_readonly(self.kept_folders[name] / SQLITE)
                try:
                    wanted = [d for d in doc_ids if d not in record.deleted]
                    found = {}
                    for i in range(0, len(wanted), 500):
                        batch = wanted[i:i + 500]
                        found.update(db.execute(
                            "SELECT d.doc_id, COUNT(c.chunk_id) FROM documents d LEFT JOIN chunks c "
                            f"USING (doc_id) WHERE d.doc_id IN ({','.join('?' * len(batch))}) GROUP BY d.doc_id",
                            batch).fetchall())
                finally:
                    db.close()
                if found:
                    removed += sum(found.values())
                    self.kept[name] = replace(record, deleted=(*record.deleted, *sorted(found)),
                                              deleted_chunks=record.deleted_chunks + sum(found.values()))
        return removed

    def add_document(self, doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                     sentence_vectors: Sequence[np.ndarray]) -> None:
        if not (len(chunks) == len(vectors) == len(sentence_vectors)):
            raise StoreError(f"{doc.doc_id}: {len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.asarray(vectors, dtype=np.float32)
        with _failing_cleanly(self.index_dir, self.abandon):
            self.db.execute(
                f"INSERT INTO documents ({', '.join(DOCUMENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.doc_id, doc.title, doc.text, doc.sha256, doc.source_path, doc.url, doc.date, doc.outlet))
            for chunk, vector, sentence_block in zip(chunks, vectors, sentence_vectors):
                chunk_id = self.next_chunk_id
                self.next_chunk_id += 1
                self.db.execute(
                    'INSERT INTO chunks (chunk_id, doc_id, ordinal, start, "end", text, n_tokens) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (chunk_id, doc.doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.n_tokens))
                self.db.execute("INSERT INTO chunk_vectors (chunk_id, vector) VALUES (?, ?)",
                                (chunk_id, vector.tobytes()))
                self.db.executemany(
                    'INSERT INTO sentences (chunk_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                    [(chunk_id, start, end, v.astype(SENTENCE_DTYPE).tobytes())
                     for (start, end), v in zip(chunk.sentences, sentence_block)])

    def publish(self, manifest: dict[str, Any], lexical_tokens,
                source_files: dict[str, FileState] | None = None) -> Manifest:
        """Write the new segment's BM25 postings and vectors, then the manifest, then make this
        generation current in one step.

        lexical_tokens(title, text) → tokens of one chunk for the BM25 index. source_files: the
        states of the files the generation's documents come from (default: the base's)."""
        with _failing_cleanly(self.index_dir, self.abandon):
            self.db.commit()
            n_rows = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            n_stored = self.db.execute("SELECT COUNT(*) FROM chunk_vectors").fetchone()[0]
            if n_stored != n_rows:
                raise StoreError(f"internal error: {n_stored} vectors for {n_rows} chunks")
            segments = [record for record in self.kept.values() if record.documents > len(record.deleted)]
            files = {path: record for s in segments for path, record in self.base_files.items()
                     if path.startswith(f"{SEGMENTS}/{s.name}/")}
            generations = self.index_dir / GENERATIONS
            if n_rows or n_docs:
                # streamed from SQLite: a merge of a million chunks never holds their text at once
                _write_bm25(self.staging / BM25_DIR, self.db.execute(
                    "SELECT c.chunk_id, d.title, c.text FROM chunks c JOIN documents d USING (doc_id) "
                    "ORDER BY c.chunk_id"), lexical_tokens)
                ids, matrix = self._stored_vectors(n_rows)
                self.db.close()
                if n_rows >= max(1, self.approximate_from):
                    vectors = _approximate_index(matrix, ids)
                else:
                    vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
                    if n_rows:
                        vectors.add_with_ids(matrix, ids)
                del matrix
                # serialized here rather than by faiss.write_index, whose failures (a full disk)
                # come back as a RuntimeError without the errno
                with open(self.staging / VECTORS, "wb") as fh:
                    fh.write(faiss.serialize_index(vectors).tobytes())
                del vectors
                prefix = f"{SEGMENTS}/{self.segment_name}/"
                files.update({prefix + name: record for name, record in _seal(self.staging).items()})
                final_segment = self.index_dir / SEGMENTS / self.segment_name
                os.replace(self.staging, final_segment)
                self.published_segment = final_segment
                _fsync_dir(final_segment.parent)
                segments.append(SegmentRecord(self.segment_name, n_docs, n_rows))
            else:
                self.db.close()
                shutil.rmtree(self.staging)
            full = Manifest(generation=self.name, format_version=INDEX_FORMAT_VERSION,
                            documents=sum(s.documents - len(s.deleted) for s in segments),
                            chunks=sum(s.live_chunks for s in segments),
                            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            files=files, segments=tuple(segments), next_chunk_id=self.next_chunk_id,
                            **manifest)
            staging = generations / f".staging-{self.name}-{os.getpid()}"
            staging.mkdir()
            states = self.base_source_files if source_files is None else source_files
            if states:
                encoded = json.dumps({"reader": READER_VERSION, "files": {
                    path: [s.size, s.mtime_ns] for path, s in sorted(states.items())}}, ensure_ascii=False).encode()
                with open(staging / SOURCE_FILES, "wb") as fh:
                    fh.write(encoded)
                    fh.flush()
                    os.fsync(fh.fileno())
                full = replace(full, source_files_sha256=hashlib.sha256(encoded).hexdigest())
            data = full.to_dict()
            data[MANIFEST_CHECKSUM] = _manifest_checksum(data)
            _write_synced(staging / MANIFEST, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            _fsync_dir(staging)
            final = generations / self.name
            os.replace(staging, final)
            self.published = final
            _fsync_dir(generations)
            _atomic_write(self.index_dir / CURRENT_FILE, json.dumps(
                {"generation": self.name, "check": _name_check(self.name)}) + "\n")
        _remove_unreferenced(self.index_dir, keep={self.name})
        return full

    def _stored_vectors(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids ascending, their vectors) of the new segment, read in one pass."""
        ids = np.empty(n_rows, dtype=np.int64)
        matrix = np.empty((n_rows, self.dimension), dtype=np.float32)
        cursor = self.db.execute("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")
        row = 0
        while batch := cursor.fetchmany(4096):
            for chunk_id, blob in batch:
                vector = np.frombuffer(blob, dtype=np.float32)
                if len(vector) != self.dimension:
                    raise StoreError(f"vector dimension {len(vector)} in the index does not match "
                                     f"the model's {self.dimension}: run `rag index --full`")
                ids[row], matrix[row] = chunk_id, vector
                row += 1
        return ids, matrix

    def abandon(self) -> None:
        """Remove what this writer made, unless it is already the current generation."""
        try:
            self.db.close()
        except (AttributeError, sqlite3.Error):
            pass
        if hasattr(self, "staging"):
            shutil.rmtree(self.staging, ignore_errors=True)
        _remove_abandoned(self.index_dir / GENERATIONS)
        if self.published is not None and _pointed_generation(self.index_dir)[0] == self.published:
            return
        if self.published is not None:
            shutil.rmtree(self.published, ignore_errors=True)
        if self.published_segment is not None:
            shutil.rmtree(self.published_segment, ignore_errors=True)


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


def _approximate_index(matrix: np.ndarray, ids: np.ndarray):
    """IVF over 8-bit scalar-quantized vectors (a quarter of float32's memory), trained on a
    fixed sample so that the same rows give the same index."""
    n, dimension = matrix.shape
    lists = max(1, min(4096, int(2 * n ** 0.5), n // 39))  # FAISS wants ≥ 39 training rows a list
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dimension, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    quantizer.this.disown()
    index.own_fields = True
    index.cp.niter = 10
    index.cp.seed = 1234
    sample = np.random.default_rng(0).choice(n, size=min(n, 64 * lists), replace=False)
    index.train(matrix[np.sort(sample)])
    index.nprobe = probes(lists)
    for start in range(0, n, 65536):
        index.add_with_ids(matrix[start:start + 65536], ids[start:start + 65536])
    return index


def probes(lists: int) -> int:
    return min(lists, max(MIN_PROBES, lists // PROBE_SHARE))


def _write_bm25(folder: Path, rows: Iterable[tuple[int, str, str]], lexical_tokens) -> None:
    Postings.build(rows, lexical_tokens).save(folder)


def _next_generation_name(generations: Path) -> str:
    numbers = [int(p.name.split("-")[1]) for p in generations.glob("gen-*") if p.name[4:].isdigit()]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def _remove_abandoned(folder: Path) -> None:
    """Staging folders of writers that died; safe because the caller holds the writer lock."""
    for path in folder.glob(".staging-*"):
        shutil.rmtree(path, ignore_errors=True)


def _remove_unreferenced(index_dir: Path, keep: set[str]) -> None:
    """Keep the new generation and the one before it (a reader may still be opening it), and
    the segments those two list; delete older generations and every other segment."""
    generations = index_dir / GENERATIONS
    names = sorted(p.name for p in generations.glob("gen-*"))
    for name in names[:-2]:
        if name not in keep:
            shutil.rmtree(generations / name, ignore_errors=True)
    listed: set[str] = set()
    for name in names[-2:]:
        try:
            listed |= {s.name for s in read_manifest(generations / name).segments}
        except StoreError:  # a damaged manifest: its generation cannot be opened anyway
            continue
    for path in (index_dir / SEGMENTS).glob("seg-*"):
        if path.name not in listed:
            shutil.rmtree(path, ignore_errors=True)


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
        stat = path.stat()
        files[path.relative_to(folder).as_posix()] = StoredFile(stat.st_size, digest, stat.st_mtime_ns)
    return files


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
