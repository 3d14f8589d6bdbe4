"""The extractive answer: which sentences of the retrieved passages to quote.

Candidates are the sentences of the retrieved passages and pairs of consecutive sentences. A
unit's score is the cosine between the question and the stored sentence vector + lexical
coverage of the question + the passage's relevance (docs/answers.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from .arabic import lexical_tokens
from .prompts import question_language, quoted, text
from .retrieval import Retrieval, coverage
from .types import Citation

MAX_QUOTE_SENTENCES = 3
QUOTE_MARGIN = 0.03  # further units are quoted when their score is this close to the best
PAIR_PENALTY = 0.005
SENTENCE_LEXICAL_WEIGHT = 0.1
SENTENCE_PRIOR_WEIGHT = 0.05


@dataclass(frozen=True)
class Quote:
    """A candidate quote: one sentence, or two consecutive ones, of a retrieved passage."""

    n: int  # passage number, 1-based
    doc_id: str
    start: int
    end: int
    text: str
    score: float
    sentences: int


def candidate_quotes(retrieval: Retrieval) -> list[Quote]:
    """Sentences (and pairs of consecutive sentences) of the retrieved passages, best first."""
    query_vector = retrieval.query_vector
    idf = retrieval.idf
    best: dict[tuple[str, int, int], Quote] = {}

    def offer(quote: Quote) -> None:
        key = (quote.doc_id, quote.start, quote.end)
        if key not in best or best[key].score < quote.score:
            best[key] = quote

    for n, item in enumerate(retrieval.evidence, start=1):
        passage = item.passage
        previous = None
        for sentence in item.sentences:
            start, end = sentence.start, sentence.end
            unit = item.document[start:end]
            grams = set(lexical_tokens(unit))
            cosine = float(sentence.vector @ query_vector) if query_vector is not None else 0.0
            prior = SENTENCE_PRIOR_WEIGHT * passage.score
            offer(Quote(n, passage.doc_id, start, end, unit,
                        cosine + SENTENCE_LEXICAL_WEIGHT * coverage(idf, grams) + prior, 1))
            if previous is not None and previous[1] <= start:
                p_start, _, p_cosine, p_grams = previous
                offer(Quote(n, passage.doc_id, p_start, end, item.document[p_start:end],
                            max(cosine, p_cosine) + SENTENCE_LEXICAL_WEIGHT * coverage(idf, grams | p_grams)
                            + prior - PAIR_PENALTY, 2))
            previous = (start, end, cosine, grams)
    return sorted(best.values(), key=lambda q: -q.score)


def pick_quotes(candidates: list[Quote]) -> list[Quote]:
    """The best unit, then others within QUOTE_MARGIN of it, up to MAX_QUOTE_SENTENCES
    sentences in all, never overlapping."""
    if not candidates:
        return []
    chosen = [candidates[0]]
    used = candidates[0].sentences
    for candidate in candidates[1:]:
        if candidate.score < candidates[0].score - QUOTE_MARGIN:
            break
        if used + candidate.sentences > MAX_QUOTE_SENTENCES or any(
                candidate.doc_id == c.doc_id and candidate.start < c.end and c.start < candidate.end
                for c in chosen):
            continue
        chosen.append(candidate)
        used += candidate.sentences
    return chosen


def extractive_answer(question: str, retrieval: Retrieval) -> tuple[str, list[Citation]]:
    lang = question_language(question)
    quotes = pick_quotes(candidate_quotes(retrieval))
    lines = [text(lang, "framing")]
    citations = []
    for quote in quotes:
        passage = retrieval.passages[quote.n - 1]
        lines.append(quoted(lang, quote.text, quote.n))
        citations.append(Citation(n=quote.n, doc_id=passage.doc_id, title=passage.title,
                                  quote=quote.text, start=quote.start, end=quote.end))
    return "\n\n".join(lines), citations
