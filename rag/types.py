"""The values that cross module borders. All frozen; offsets are [start, end) into Document.text."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .markers import Marker, find_markers


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    sha256: str
    source_path: str
    url: str | None = None
    date: str | None = None  # ISO 8601 (rag.documents.normalize_date)
    outlet: str | None = None  # the site or publication, as the file names it


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
class LexicalHits:
    """A BM25 search: the best chunks, and the scores of the chunks asked about besides."""

    top: list[tuple[int, float]]  # (chunk_id, score), best first; equal scores in index order
    scores: dict[int, float]  # chunk_id → score > 0, for `top` and the chunks asked about that match


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
    outlet: str | None = None
    date: str | None = None
    url: str | None = None


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
    outlet: str | None = None  # the article's metadata, when its file states it
    date: str | None = None
    url: str | None = None

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
class Fact:
    """The short answer phrase of a factual question, copied verbatim from a cited sentence:
    `text` == the document's text[start:end]; `n` is the citation it comes from."""

    text: str
    n: int
    doc_id: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sentence:
    """A sentence of a retrieved passage (document offsets) with its late-chunked vector."""

    start: int
    end: int
    vector: Any  # np.ndarray of float32, L2-normalized


@dataclass(frozen=True)
class SourceView:
    """A passage as a reader should see it: text segments, the cited quotes marked."""

    n: int
    doc_id: str
    title: str
    start: int
    end: int
    segments: tuple[tuple[str, bool], ...]  # (text, is_cited_quote)
    score: float
    quotes: tuple[tuple[int, int], ...] = ()  # [start, end) of the cited quotes in the document
    outlet: str | None = None
    date: str | None = None
    url: str | None = None


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
    notice: str | None = None  # one line for the reader, in the question's language
    notice_detail: str | None = None  # the technical cause behind a notice (the provider's error)
    unverified: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    fact: Fact | None = None
    uncovered: tuple[str, ...] = ()  # what the question names that the passages never mention
    task: str = "fact"  # fact, summary or comparison
    standalone_question: str | None = None  # what was retrieved for, when the turn used history
    removed_quotes: int = 0  # LLM quotes not found in the cited article, removed by verification
    removed_markers: int = 0  # [n] markers that named no passage, removed by verification

    def sources(self) -> list[SourceView]:
        """One view per cited passage (or, for a refusal, per closest passage), in [n] order,
        with every cited quote marked inside the passage text."""
        cited = sorted({c.n for c in self.citations}) or ([] if not self.refused else
                                                           list(range(1, len(self.passages) + 1)))
        views = []
        for n in cited:
            passage = self.passages[n - 1]
            quotes = sorted((c.start, c.end) for c in self.citations if c.n == n)
            views.append(SourceView(n=n, doc_id=passage.doc_id, title=passage.title, start=passage.start,
                                    end=passage.end, segments=_segments(passage, quotes,
                                                                        [c for c in self.citations if c.n == n]),
                                    score=passage.score, quotes=tuple(quotes), outlet=passage.outlet,
                                    date=passage.date, url=passage.url))
        return views

    def markers(self) -> list[Marker]:
        """The [n] markers of the answer text (not the brackets inside its quotes)."""
        return find_markers(self.answer, [c.quote for c in self.citations])

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "mode": self.mode,
            "model": self.model,
            "fell_back": self.fell_back,
            "notice": self.notice,
            "notice_detail": self.notice_detail,
            "unverified": self.unverified,
            "fact": self.fact.to_dict() if self.fact else None,
            "uncovered": list(self.uncovered),
            "task": self.task,
            "standalone_question": self.standalone_question,
            "removed_quotes": self.removed_quotes,
            "removed_markers": self.removed_markers,
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


@dataclass(frozen=True)
class IndexedDocument:
    """One document of the index, as `rag docs` lists it."""

    doc_id: str
    title: str
    source_path: str  # the file it was read from (`file:line` for a JSON record)
    chunks: int
    characters: int
    uploaded: bool  # its file lives in the uploads folder (added through the chat)
    url: str | None = None
    date: str | None = None
    outlet: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Filters:
    """Which documents a search or an answer may use; an empty one lets all of them through.

    since/until: publication dates, both inclusive; when either is set, documents without a date
    are left out. sources: a document passes when one of them equals its outlet (ignoring case)
    or its id, or names the folder or file its id begins with (`news` matches `news/a.txt`,
    `feed.jsonl` matches `feed.jsonl#3`). `rag.filters.parse_filters` builds one from strings."""

    since: dt.date | None = None
    until: dt.date | None = None
    sources: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.since is not None or self.until is not None or bool(self.sources)

    def matches(self, doc_id: str, outlet: str | None, date: str | None) -> bool:
        if self.since is not None or self.until is not None:
            try:
                day = dt.date.fromisoformat((date or "")[:10])
            except ValueError:
                return False
            if (self.since is not None and day < self.since) or (self.until is not None and day > self.until):
                return False
        if not self.sources:
            return True
        outlet_key, doc_key = " ".join((outlet or "").split()).casefold(), doc_id.casefold()
        for source in self.sources:
            key = " ".join(source.split()).casefold()
            folder = key.rstrip("/")
            if key in (outlet_key, doc_key) or (folder and doc_key.startswith((folder + "/", folder + "#"))):
                return True
        return False

    def describe(self) -> str:
        """The filter in words: `since 2024-01-01, until 2024-06-30, source 'BBC' or 'news/'`."""
        parts = [f"since {self.since.isoformat()}"] if self.since is not None else []
        if self.until is not None:
            parts.append(f"until {self.until.isoformat()}")
        if self.sources:
            parts.append("source " + " or ".join(repr(s) for s in self.sources))
        return ", ".join(parts)


@dataclass(frozen=True)
class RemovalReport:
    """What one `rag remove` did."""

    removed: tuple[IndexedDocument, ...]
    deleted_files: tuple[str, ...]  # uploaded files deleted with their documents
    # documents whose file is still in a source folder of the index: the next `rag index` reads them again
    will_return: tuple[IndexedDocument, ...]
    seconds: float
    index_dir: str

    @property
    def chunks(self) -> int:
        return sum(d.chunks for d in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "chunks": self.chunks}


def _segments(passage: Passage, spans: list[tuple[int, int]], citations: list[Citation]
              ) -> tuple[tuple[str, bool], ...]:
    """Split the passage text at the cited spans; quotes outside the passage follow an ellipsis."""
    out: list[tuple[str, bool]] = []
    cursor = passage.start
    outside = []
    for start, end in spans:
        if start < cursor or end > passage.end:
            if start >= passage.end or end <= passage.start:
                outside.append(next(c.quote for c in citations if (c.start, c.end) == (start, end)))
            continue
        if start > cursor:
            out.append((passage.text[cursor - passage.start:start - passage.start], False))
        out.append((passage.text[start - passage.start:end - passage.start], True))
        cursor = end
    if cursor < passage.end:
        out.append((passage.text[cursor - passage.start:], False))
    for quote in outside:
        out.extend([(" … ", False), (quote, True)])
    return tuple(out)
