"""Document → chunks: sentences packed into a token budget, with exact character offsets.

Every chunk satisfies ``doc.text[chunk.start:chunk.end] == chunk.text``. Sentences come from
`arabic.sentence_spans`; a sentence longer than half the budget is split at commas, and a
clause still over the budget at word boundaries, so no chunk exceeds the budget unless a single
word does.
"""

from __future__ import annotations

from .arabic import clause_spans, lexical_tokens, sentence_spans, word_spans
from .tokens import count_tokens
from .types import Chunk, Document

Span = tuple[int, int]


def sentence_units(text: str, max_tokens: int) -> list[Span]:
    """Sentence spans, with overlong sentences cut into clauses and then word runs."""
    long_sentence = max(8, max_tokens // 2)
    units: list[Span] = []
    for start, end in sentence_spans(text):
        if count_tokens(text[start:end]) <= long_sentence:
            units.append((start, end))
            continue
        for c_start, c_end in _pack(text, clause_spans(text, start, end), long_sentence):
            if count_tokens(text[c_start:c_end]) <= max_tokens:
                units.append((c_start, c_end))
            else:
                units.extend(_pack(text, word_spans(text, c_start, c_end), max_tokens))
    return units


def _pack(text: str, spans: list[Span], budget: int) -> list[Span]:
    """Merge neighbouring spans while the merged text stays within budget."""
    merged: list[Span] = []
    for start, end in spans:
        if merged and count_tokens(text[merged[-1][0]:end]) <= budget:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def chunk_document(doc: Document, max_tokens: int, overlap_sentences: int) -> list[Chunk]:
    text = doc.text
    units = sentence_units(text, max_tokens)
    costs = [count_tokens(text[s:e]) for s, e in units]
    chunks: list[Chunk] = []
    first = 0
    while first < len(units):
        last = first + 1
        used = costs[first]
        while last < len(units) and used + costs[last] <= max_tokens:
            used += costs[last]
            last += 1
        start, end = units[first][0], units[last - 1][1]
        chunks.append(Chunk(doc_id=doc.doc_id, ordinal=len(chunks), start=start, end=end,
                            text=text[start:end], n_tokens=count_tokens(text[start:end]),
                            sentences=tuple(units[first:last])))
        if last >= len(units):
            break
        first = max(last - overlap_sentences, first + 1)
    return chunks


def embedding_text(title: str, chunk_text: str, with_title: bool) -> str:
    """What the embedding model sees for a chunk: the title as context, unless the chunk
    already begins with it (the first chunk of an article usually does)."""
    if not with_title or not title or chunk_text.startswith(title):
        return chunk_text
    return f"{title}\n{chunk_text}"


def lexical_terms(title: str, chunk_text: str) -> list[str]:
    """What the BM25 index holds for a chunk: its title and text, as lexical tokens."""
    return lexical_tokens(f"{title}\n{chunk_text}")
