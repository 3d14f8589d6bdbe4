"""Question → ranked, merged, diversified passages with a calibrated relevance.

Hybrid ranking (numbers in docs/retrieval.md):
  - dense: cosine of the e5 query vector against every chunk (FAISS), min-max normalized over
    the dense candidates;
  - lexical: BM25 over character trigrams of light-stemmed words, divided by the best score;
  - fused = 0.5 · dense + 0.5 · coverage · lexical, where coverage is the share of the query's
    lexical weight (idf) that occurs in the corpus at all. An English question over Arabic
    articles has coverage ≈ 0, so BM25 noise cannot push good dense results down.
Then adjacent chunks of one article merge into one passage, and every further passage from an
article already chosen pays a penalty, so one long article fills the list only when nothing
else comes close. Each passage carries `score`: a calibrated probability that it is relevant
(logistic over the cosine and the passage's lexical coverage), which the answerer uses to
refuse when the evidence is weak.

`Filters` (dates, outlets, ids) restrict the candidates of both rankings before fusion: FAISS
searches only the allowed vectors and BM25 hits outside them are dropped, so k passages still
come back from a selective filter. The calibration's baseline still comes from the whole index,
so a passage scores the same with or without a filter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .arabic import has_arabic, lexical_tokens
from .chunking import lexical_terms
from .embeddings import Embedder
from .errors import FilterError
from .filters import no_match
from .store import Store
from .types import Filters, LexicalHits, Passage, Sentence, StoredChunk

MODES = ("hybrid", "dense", "bm25")
DENSE_WEIGHT = 0.5
CANDIDATE_DEPTH = 100
SAME_DOCUMENT_PENALTY = 0.15
PREFERRED_DOCUMENT_BONUS = 0.1  # follow-ups favour the articles the previous turn cited
MAX_MERGED_CHUNKS = 3

# Relevance calibration: class-balanced logistic regressions fitted by bench/calibrate.py on
# XQuAD-ar, ARCD, the seeds and 48 English XQuAD questions (top passage of a corpus that holds
# the answer vs. of corpora that do not). Features: the cosine; how far it stands above the
# question's typical cosine (the mean over its best BASELINE_DEPTH chunks): a passage that
# answers stands out, an off-topic question scores everything alike; with lexical evidence
# (query coverage ≥ 0.5) the passage's lexical coverage, without it (typically an English
# question over Arabic text) whether question and passage share a script.
LEXICAL_EVIDENCE = 0.5
BASELINE_DEPTH = 50
CALIBRATION_LEXICAL = (62.84, 48.89, 8.15, -58.1)  # cosine, margin, passage coverage, bias
CALIBRATION_DENSE_ONLY = (93.87, 67.7, -5.84, -74.62)  # cosine, margin, same script, bias


def coverage(idf: dict[str, float], present: set[str]) -> float:
    """Share of the question's lexical weight (idf of its tokens) found among `present`."""
    total = sum(idf.values())
    return sum(w for t, w in idf.items() if t in present) / total if total else 0.0


@dataclass(frozen=True)
class Evidence:
    """What the answer stage may quote from one retrieved passage: the passage, the whole text
    of its document (quotes are located and cited in it) and the passage's stored sentences."""

    passage: Passage
    document: str
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class Retrieval:
    passages: list[Passage]
    query_coverage: float  # share of the question's lexical weight that occurs in the corpus
    query_vector: np.ndarray | None = None
    idf: dict[str, float] = field(default_factory=dict)  # the question's lexical tokens
    baseline: float = 0.0  # the question's typical cosine (mean over its best chunks)
    evidence: list[Evidence] = field(default_factory=list)  # one per passage, same order


@dataclass
class _Candidate:
    chunk: StoredChunk
    fused: float
    dense: float
    bm25: float | None


class Retriever:
    """Searches one generation; with `filters`, only the documents they let through (a
    FilterError, raised here, explains a filter that lets none through)."""

    def __init__(self, store: Store, embedder: Embedder, filters: Filters | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.filters = filters or Filters()
        self._allowed: np.ndarray | None = None  # chunk ids, sorted; None: every chunk
        if self.filters:
            metadata = store.document_metadata()
            chosen = [doc_id for doc_id, outlet, date in metadata if self.filters.matches(doc_id, outlet, date)]
            if not chosen:
                raise FilterError(no_match(self.filters, metadata))
            self._allowed = store.chunk_ids_of(chosen)

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Passage]:
        return self.retrieve(query, k, mode).passages

    def retrieve(self, query: str, k: int = 5, mode: str = "hybrid", prefer: Sequence[str] = ()) -> Retrieval:
        """The k best passages for `query`; chunks of the `prefer` articles get a bonus."""
        query = query.strip()
        if not query or k <= 0 or self.store.size == 0:
            return Retrieval([], 0.0)
        depth = max(CANDIDATE_DEPTH, 4 * k)
        query_vector = self.embedder.embed_query(query)
        tokens = lexical_tokens(query)
        frequencies = self.store.document_frequencies(tokens)
        n = max(1, self.store.size)
        idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequencies.items()}
        known = sum(weight for token, weight in idf.items() if frequencies[token] > 0)
        coverage = known / sum(idf.values()) if idf else 0.0

        everywhere = dict(self.store.dense_search(query_vector, depth)) if mode != "bm25" else {}
        dense = everywhere
        if self._allowed is not None and mode != "bm25":
            dense = dict(self.store.dense_search(query_vector, depth, self._allowed))
        # the best BM25 matches, and the scores of the dense candidates (0 when absent)
        lexical = (self.store.bm25_search(tokens, depth, self._allowed, scores_of=list(dense),
                                            frequencies=frequencies)
                   if mode != "dense" else LexicalHits([], {}))
        bm25, top_bm25 = lexical.scores, dict(lexical.top)

        candidate_ids = list(dict.fromkeys([*dense, *top_bm25]))
        missing = [i for i in candidate_ids if i not in dense]
        exact = self.store.dense_scores(query_vector, missing) if missing else {}
        cosines = {**exact, **dense}

        fused = self._fuse(mode, candidate_ids, dense, cosines, bm25, coverage)
        rows = self.store.chunks(candidate_ids)
        if prefer:
            fused = {i: score + PREFERRED_DOCUMENT_BONUS * (rows[i].doc_id in prefer) for i, score in fused.items()}
        candidates = sorted(
            (_Candidate(rows[i], fused[i], cosines[i], bm25.get(i)) for i in candidate_ids),
            key=lambda c: -c.fused)
        selected = self._select(candidates, k)
        typical = sorted({**cosines, **everywhere}.values(), reverse=True)[:BASELINE_DEPTH]
        baseline = sum(typical) / len(typical) if typical else 0.0
        passages = [self._passage(query, group, idf, coverage, baseline) for group in selected]
        return Retrieval(passages, coverage, query_vector, idf, baseline, self.evidence(passages))

    def evidence(self, passages: list[Passage]) -> list[Evidence]:
        documents: dict[str, str] = {}
        out = []
        for passage in passages:
            if passage.doc_id not in documents:
                doc = self.store.document(passage.doc_id)
                documents[passage.doc_id] = doc.text if doc is not None else ""
            sentences = tuple(Sentence(start, end, vector) for start, end, vector
                              in self.store.sentences_in(passage.doc_id, passage.start, passage.end))
            out.append(Evidence(passage, documents[passage.doc_id], sentences))
        return out

    # ------------------------------------------------------------------ scoring

    @staticmethod
    def _fuse(mode: str, ids: list[int], dense: dict[int, float], cosines: dict[int, float],
              bm25: dict[int, float], coverage: float) -> dict[int, float]:
        if dense:
            high, low = max(dense.values()), min(dense.values())
            spread = (high - low) or 1.0
            dense_norm = {i: max(0.0, (cosines[i] - low) / spread) for i in ids}
        else:
            dense_norm = dict.fromkeys(ids, 0.0)
        best_bm25 = max(bm25.values(), default=0.0) or 1.0
        lexical_norm = {i: bm25.get(i, 0.0) / best_bm25 for i in ids}
        if mode == "dense":
            return dense_norm
        if mode == "bm25":
            return lexical_norm
        # Divided by the weight in play, so a question with no lexical evidence ranks exactly as
        # in dense mode (the same-article penalty keeps its scale).
        lexical_weight = (1 - DENSE_WEIGHT) * coverage
        return {i: (DENSE_WEIGHT * dense_norm[i] + lexical_weight * lexical_norm[i]) / (DENSE_WEIGHT + lexical_weight)
                for i in ids}

    @staticmethod
    def relevance(cosine: float, margin: float, passage_coverage: float, query_coverage: float,
                  same_script: bool) -> float:
        """Calibrated probability that a passage answers the query."""
        if query_coverage >= LEXICAL_EVIDENCE:
            w_cos, w_margin, w_cov, bias = CALIBRATION_LEXICAL
            z = w_cos * cosine + w_margin * margin + w_cov * passage_coverage + bias
        else:
            w_cos, w_margin, w_script, bias = CALIBRATION_DENSE_ONLY
            z = w_cos * cosine + w_margin * margin + w_script * same_script + bias
        return 1.0 / (1.0 + math.exp(-z))

    # ------------------------------------------------------------------ selection

    @staticmethod
    def _select(candidates: list[_Candidate], k: int) -> list[list[_Candidate]]:
        """Greedy: best adjusted score first; a chunk adjacent to (or overlapping) a chosen one
        of the same article joins it; each further passage of an article pays a penalty."""
        groups: list[list[_Candidate]] = []
        per_doc: dict[str, int] = {}
        remaining = list(candidates)
        while remaining and len(groups) < k:
            best = max(remaining, key=lambda c: c.fused - SAME_DOCUMENT_PENALTY * per_doc.get(c.chunk.doc_id, 0))
            remaining.remove(best)
            host = next((g for g in groups if g[0].chunk.doc_id == best.chunk.doc_id
                         and len(g) < MAX_MERGED_CHUNKS
                         and any(abs(m.chunk.ordinal - best.chunk.ordinal) == 1 for m in g)), None)
            if host is not None:
                host.append(best)
                continue
            groups.append([best])
            per_doc[best.chunk.doc_id] = per_doc.get(best.chunk.doc_id, 0) + 1
        return groups

    def _passage(self, query: str, group: list[_Candidate], idf: dict[str, float],
                 query_coverage: float, baseline: float) -> Passage:
        lead = group[0]
        start = min(c.chunk.start for c in group)
        end = max(c.chunk.end for c in group)
        text = lead.chunk.text if len(group) == 1 else self.store.text_span(lead.chunk.doc_id, start, end)
        cosine = max(c.dense for c in group)
        passage_coverage = coverage(idf, set(lexical_terms(lead.chunk.title, text)))
        bm25 = [c.bm25 for c in group if c.bm25 is not None]
        return Passage(chunk_id=lead.chunk.chunk_id, doc_id=lead.chunk.doc_id, title=lead.chunk.title,
                       text=text, start=start, end=end,
                       score=round(self.relevance(cosine, cosine - baseline, passage_coverage, query_coverage,
                                                  has_arabic(query) == has_arabic(text)), 4),
                       dense_score=round(cosine, 4), bm25_score=round(max(bm25), 4) if bm25 else None,
                       coverage=round(passage_coverage, 4), outlet=lead.chunk.outlet, date=lead.chunk.date,
                       url=lead.chunk.url)

