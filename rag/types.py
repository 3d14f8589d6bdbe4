"""The values that cross module borders. All frozen; offsets are [start, end) into Document.text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    sha256: str
    source_path: str
    url: str | None = None
    date: str | None = None


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    n_tokens: int
    sentences: tuple[tuple[int, int], ...] = ()  # [start, end) in document coordinates


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as the index holds it, with its document's title."""

    chunk_id: int
    doc_id: str
    title: str
    ordinal: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    """A retrieved span of a document, with its relevance."""

    chunk_id: int
    doc_id: str
    title: str
    text: str
    start: int
    end: int
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    coverage: float | None = None  # share of the question's lexical weight found in the passage

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Citation:
    n: int
    doc_id: str
    title: str
    quote: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]
    refused: bool
    mode: str
    model: str | None = None
    fell_back: bool = False
    notice: str | None = None
    unverified: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "mode": self.mode,
            "model": self.model,
            "fell_back": self.fell_back,
            "notice": self.notice,
            "unverified": self.unverified,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "timings_ms": dict(self.timings_ms),
        }


@dataclass(frozen=True)
class Counts:
    documents: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class UpdateReport:
    """What one `rag index` run did."""

    added: Counts
    changed: Counts
    removed: Counts
    unchanged: Counts
    full_rebuild: bool
    rebuild_reason: str | None
    skipped: tuple[str, ...]
    seconds: float
    index_dir: str
    embedded_chunks: int

    @property
    def total_documents(self) -> int:
        return self.added.documents + self.changed.documents + self.unchanged.documents

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
