"""Citations checked against the articles: every [n] and every quote of an answer, and the
numbering that readers see (1..n in order of first appearance, no gaps).

Works on what retrieval handed over (`Evidence`: each passage with its document's text and its
sentences), never on the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .arabic import find_folded, search_tokens
from .markers import MARKER, marker_numbers, quoted_spans
from .retrieval import Evidence
from .types import Citation, Fact, Passage

QUOTE = re.compile(r"«([^«»\n]{2,800})»|“([^“”\n]{2,800})”|\"([^\"\n]{2,800})\"")
# The prompt's own delimiters, which small models echo ("…والفقائة.\n</passage>").
PROMPT_TAG = re.compile(r"</?\s*passages?\b[^>\n]*>", re.I)
CLAIM_MIN_COSINE = 0.78  # for claims that share no word with the passage (cross-lingual)


@dataclass(frozen=True)
class Verified:
    text: str
    citations: list[Citation]
    removed_quotes: int
    removed_markers: int


def cite(evidence: Sequence[Evidence], n: int, start: int, end: int) -> Citation:
    item = evidence[n - 1]
    return Citation(n=n, doc_id=item.passage.doc_id, title=item.passage.title,
                    quote=item.document[start:end], start=start, end=end)


def verify(text: str, evidence: Sequence[Evidence], embed: Callable[[str], np.ndarray] | None = None) -> Verified:
    """Check every [n] and every quote of a generated answer against the passages' documents.

    - the prompt's <passage> tags echoed by the model are removed;
    - [n] outside 1..len(evidence) is removed;
    - a quote belongs to the next [n] of its paragraph (else the previous one, else to the
      passage that contains it, whose marker is then added) and must occur verbatim in that
      passage's document, allowing only whitespace and Arabic-normalization differences; it is
      rewritten to the document's exact text. A quote not found is replaced by the cited
      passage's sentence sharing most of its words (at least 60 %), or else removed together
      with a marker that served only it;
    - an [n] whose claim has no quote is cited with the passage sentence closest to the claim,
      when one is close enough.
    """
    removed_markers = 0

    def keep_valid(match: re.Match) -> str:
        nonlocal removed_markers
        numbers = [int(x) for x in re.split(r"[,،\s]+", match.group(1)) if x]
        valid = list(dict.fromkeys(n for n in numbers if 1 <= n <= len(evidence)))
        removed_markers += len(numbers) - len(valid)
        return f"[{', '.join(map(str, valid))}]" if valid else ""

    text = MARKER.sub(keep_valid, PROMPT_TAG.sub("", text))
    markers = [(m.start(), m.end(), marker_numbers(m)) for m in MARKER.finditer(text)]
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in `text`
    citations: list[Citation] = []
    kept_at: set[int] = set()
    dropped_at: set[int] = set()
    removed_quotes = 0
    for match in QUOTE.finditer(text):
        quote = next(g for g in match.groups() if g is not None)
        numbers, marker_at = _attribute(text, match, markers)
        found = next(((n, *where) for n in numbers if (where := _locate(quote, evidence[n - 1]))), None)
        if found is None and not numbers:
            found = next(((n, *where) for n in range(1, len(evidence) + 1)
                          if (where := _locate(quote, evidence[n - 1]))), None)
        if found is None and numbers:
            found = closest_sentence(quote, numbers, evidence, min_overlap=0.6)
        if found is None:
            removed_quotes += 1
            edits.append((match.start(), match.end(), ""))
            if marker_at is not None:
                dropped_at.add(marker_at)
            continue
        n, start, end = found
        citation = cite(evidence, n, start, end)
        citations.append(citation)
        marker = "" if marker_at is not None and n in numbers else f" [{n}]"
        edits.append((match.start(), match.end(), f"{match.group()[0]}{citation.quote}{match.group()[-1]}{marker}"))
        if marker_at is not None and n in numbers:
            kept_at.add(marker_at)
    for start, end, _ in markers:
        if start in dropped_at and start not in kept_at:
            edits.append((start, end, ""))
            removed_markers += 1
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    text = re.sub(r"[ \t]{2,}", " ", text).strip()  # stored article text never has such runs

    # [n] markers whose claim carried no quote: cite the passage sentence closest to the claim.
    previous_end = 0
    for match in MARKER.finditer(text):
        claim = text[previous_end:match.start()]
        previous_end = match.end()
        if QUOTE.search(claim):
            continue
        for n in marker_numbers(match):
            best = closest_sentence(claim, [n], evidence, min_overlap=0.25, embed=embed)
            if best is not None:
                citations.append(cite(evidence, *best))
    unique = list({(c.n, c.start, c.end): c for c in citations}.values())
    return Verified(text, unique, removed_quotes, removed_markers)


def _attribute(text: str, quote: re.Match, markers: list[tuple[int, int, list[int]]]):
    """The [n] numbers a quote belongs to, and where that marker starts: the next marker in
    its paragraph, else the previous one."""
    paragraph_end = text.find("\n\n", quote.end())
    paragraph_end = len(text) if paragraph_end < 0 else paragraph_end
    paragraph_start = text.rfind("\n\n", 0, quote.start())
    following = [m for m in markers if quote.end() <= m[0] < paragraph_end]
    if following:
        return following[0][2], following[0][0]
    preceding = [m for m in markers if paragraph_start < m[1] <= quote.start()]
    if preceding:
        return preceding[-1][2], preceding[-1][0]
    return [], None


def _locate(quote: str, item: Evidence) -> tuple[int, int] | None:
    """Where the quote is in the document: inside the passage first, then anywhere."""
    return (find_folded(item.document, quote, item.passage.start, item.passage.end)
            or find_folded(item.document, quote))


def closest_sentence(claim: str, numbers: Sequence[int], evidence: Sequence[Evidence], min_overlap: float,
                     embed: Callable[[str], np.ndarray] | None = None) -> tuple[int, int, int] | None:
    """(n, start, end) of the sentence of the given passages that shares most of the claim's
    words (at least min_overlap of them); if it shares none and `embed` is given, the most
    similar sentence by embedding, when similar enough."""
    sentences = [(n, sentence.start, sentence.end, sentence.vector,
                  evidence[n - 1].document[sentence.start:sentence.end])
                 for n in numbers for sentence in evidence[n - 1].sentences]
    if not sentences:
        return None
    claim_words = set(search_tokens(claim))
    if claim_words:
        overlap, n, start, end = max(
            (len(claim_words & set(search_tokens(s[4]))) / len(claim_words), s[0], s[1], s[2]) for s in sentences)
        if overlap >= min_overlap:
            return n, start, end
        if overlap > 0:
            return None
    if embed is None or not claim.strip():
        return None
    vector = embed(claim)
    similarity, n, start, end = max((float(s[3] @ vector), s[0], s[1], s[2]) for s in sentences)
    return (n, start, end) if similarity >= CLAIM_MIN_COSINE else None


# ----------------------------------------------------------------------------- numbering

@dataclass(frozen=True)
class Numbered:
    text: str
    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]
    fact: Fact | None


def renumber(text: str, citations: Sequence[Citation], passages: Sequence[Passage],
             fact: Fact | None = None) -> Numbered:
    """Number the cited passages 1..m in the order their markers first appear in the text (no
    gaps); uncited passages follow in their retrieval order. Markers, citations and the fact
    are rewritten to the new numbers, and citations are listed in that order."""
    # Brackets inside a quoted sentence belong to the article (Wikipedia's "[3]"), not to us.
    inside = quoted_spans(text, [c.quote for c in citations])

    def ours(match: re.Match) -> bool:
        return (not any(a <= match.start() < b for a, b in inside)
                and all(1 <= n <= len(passages) for n in marker_numbers(match)))

    order: list[int] = []
    for match in MARKER.finditer(text):
        if ours(match):
            order.extend(n for n in marker_numbers(match) if n not in order)
    order.extend(n for n in dict.fromkeys(c.n for c in citations) if n not in order)
    order.extend(n for n in range(1, len(passages) + 1) if n not in order)
    new = {old: i for i, old in enumerate(order, start=1)}

    def rewrite(match: re.Match) -> str:
        if not ours(match):
            return match.group(0)
        return f"[{', '.join(str(new[n]) for n in marker_numbers(match))}]"

    renumbered = sorted((Citation(n=new[c.n], doc_id=c.doc_id, title=c.title, quote=c.quote,
                                  start=c.start, end=c.end) for c in citations),
                        key=lambda c: c.n)  # stable: quotes of one passage keep their text order
    moved_fact = None
    if fact is not None:
        moved_fact = Fact(text=fact.text, n=new[fact.n], doc_id=fact.doc_id, start=fact.start, end=fact.end)
    return Numbered(MARKER.sub(rewrite, text), tuple(renumbered),
                    tuple(passages[old - 1] for old in order), moved_fact)
