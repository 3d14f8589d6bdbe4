"""The extractive answer: which sentences to quote, the short answer phrase, and per-article or
per-side grouping for summaries and comparisons.

Quotable units are whole sentences of the retrieved passages (a quote never stops inside a
sentence, at a comma or inside a quotation). Each is first scored cheaply — the cosine between
the question and the sentence's stored late-chunked vector, the sentence's lexical coverage of
the question and its passage's relevance — and the best few are then read with the question by
the answer reader (`reader`), which says whether the sentence holds the answer and where. The
first quote is the sentence the reader trusts most; a second one is quoted only when it answers
too. The reader's span becomes the fact line when the question asks for a fact and the reader is
confident; otherwise only the quotes are given. Numbers: docs/answers.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .arabic import has_arabic, lexical_tokens, normalize, sentence_spans
from .prompts import question_language, quoted, text
from .reader import Reader, Reading
from .retrieval import Evidence, Retrieval, coverage
from .types import Citation, Fact, Passage

SENTENCE_LEXICAL_WEIGHT = 0.1
SENTENCE_PRIOR_WEIGHT = 0.05
READ_SENTENCES = 5  # sentences the reader reads per question, best by the cheap score
SHORT_SENTENCE = 60  # characters: a shorter best sentence is quoted with the one before it
# P(the sentence holds the answer) = logistic(READER_WEIGHTS · (reader margin − the best margin
# read, cheap score − the best cheap score, rank by the cheap score, 1)): relative to the other
# sentences of the same question, fitted on held-out reader outputs by bench/answer_study.py --fit.
READER_WEIGHTS = (0.15, 24.131, -0.613, 1.156)
MORE_QUOTES_MIN = 0.05  # probability a further sentence needs to be quoted as well
MAX_QUOTES, MAX_QUOTED_CHARS = 3, 450
FACT_MIN_PROBABILITY = 0.4  # reader span probability for a fact line (bench/answer_study.py)
MAX_FACT_WORDS = 12
FALLBACK_MARGIN = 0.03  # without a reader: further sentences this close to the best are quoted


@dataclass(frozen=True)
class Unit:
    """A quotable sentence of a retrieved passage (document offsets)."""

    n: int  # passage number, 1-based
    doc_id: str
    start: int
    end: int
    text: str
    cheap: float
    vector: np.ndarray | None


@dataclass(frozen=True)
class Scored:
    unit: Unit
    score: float  # probability that the sentence holds the answer (or the cheap score, no reader)
    reading: Reading | None


@dataclass(frozen=True)
class Extract:
    """An extractive answer before numbering: text, citations, the fact, passages to show."""

    text: str
    citations: list[Citation]
    fact: Fact | None
    passages: list[Passage]


# ----------------------------------------------------------------------------- units

def units(retrieval: Retrieval, only: Sequence[int] | None = None) -> list[Unit]:
    """Whole sentences of the retrieved passages (each once), with their cheap score. A sentence
    takes the mean vector of the stored sentence units inside it (long sentences are stored as
    clauses). `only`: passage numbers to take sentences from."""
    query_vector, idf = retrieval.query_vector, retrieval.idf
    out: dict[tuple[str, int, int], Unit] = {}
    for n, item in enumerate(retrieval.evidence, start=1):
        if only is not None and n not in only:
            continue
        for start, end in quotable_sentences(item):
            key = (item.passage.doc_id, start, end)
            if key in out:
                continue
            inside = [s.vector for s in item.sentences if s.start >= start and s.end <= end]
            vector = None
            if inside:
                vector = np.mean(inside, axis=0)
                vector = vector / (np.linalg.norm(vector) or 1.0)
            sentence = item.document[start:end]
            cosine = float(vector @ query_vector) if vector is not None and query_vector is not None else 0.0
            cheap = (cosine + SENTENCE_LEXICAL_WEIGHT * coverage(idf, set(lexical_tokens(sentence)))
                     + SENTENCE_PRIOR_WEIGHT * item.passage.score)
            out[key] = Unit(n, item.passage.doc_id, start, end, sentence, cheap, vector)
    # the same sentence in two articles (a reprint, a duplicated paragraph) is quoted once, where it
    # scores best: a second copy would only take the place of another candidate
    seen: set[str] = set()
    unique = []
    for unit in sorted(out.values(), key=lambda u: -u.cheap):
        folded = same_sentence_key(unit.text)
        if folded not in seen:
            seen.add(folded)
            unique.append(unit)
    return unique


_OPENING_QUOTES = "«“\""
_CLOSING = {"«": "»", "“": "”", "\"": "\""}


def quotable_sentences(item: Evidence) -> list[tuple[int, int]]:
    """Sentence spans of a passage in document offsets, merged so that none ends inside a
    quotation; a sentence that starts in the passage is kept whole even past its end."""
    document, passage = item.document, item.passage
    line_end = document.find("\n", passage.end)
    limit = len(document) if line_end < 0 else line_end
    spans = sentence_spans(document, passage.start, limit)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and _open_quotation(document[merged[-1][0]:merged[-1][1]]):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [(s, e) for s, e in merged if s < passage.end]


def _open_quotation(sentence: str) -> bool:
    if sentence.count("«") > sentence.count("»") or sentence.count("“") > sentence.count("”"):
        return True
    return sentence.count("\"") % 2 == 1


# ----------------------------------------------------------------------------- scoring

def score_units(question: str, candidates: list[Unit], reader: Reader | None) -> list[Scored]:
    """The best READ_SENTENCES units read by the reader and ranked by the probability that they
    hold the answer; without a reader, ranked by the cheap score."""
    if reader is None or not candidates:
        return [Scored(u, u.cheap, None) for u in candidates]
    top = candidates[:READ_SENTENCES]
    readings = reader.read(question, [u.text for u in top])
    probabilities = answer_probabilities([r.score for r in readings], [u.cheap for u in top])
    scored = [Scored(u, p, r) for u, p, r in zip(top, probabilities, readings)]
    return sorted(scored, key=lambda s: -s.score)


def answer_probabilities(margins: Sequence[float], cheap: Sequence[float]) -> list[float]:
    """P(the sentence holds the answer) for sentences in cheap-score order, from the reader's
    margins and the cheap scores (READER_WEIGHTS)."""
    w_margin, w_cheap, w_rank, bias = READER_WEIGHTS
    best_margin, best_cheap = max(margins), max(cheap)
    return [1 / (1 + math.exp(-(w_margin * (m - best_margin) + w_cheap * (c - best_cheap) + w_rank * rank + bias)))
            for rank, (m, c) in enumerate(zip(margins, cheap))]


def further_quotes(ranked: Sequence[tuple[float, int]]) -> list[int]:
    """Which of the ranked sentences (probability, characters; best first) are quoted: the best,
    and further ones that may hold the answer too, within MAX_QUOTES and MAX_QUOTED_CHARS."""
    chosen, total = [0], ranked[0][1]
    for i, (probability, chars) in enumerate(ranked[1:], start=1):
        if len(chosen) >= MAX_QUOTES or probability < MORE_QUOTES_MIN:
            break
        if total + chars <= MAX_QUOTED_CHARS:
            chosen.append(i)
            total += chars
    return chosen


def same_sentence_key(sentence: str) -> str:
    """Two copies of a sentence (in two articles, spelled with other diacritics) share this key."""
    return " ".join(normalize(sentence).split())


# ----------------------------------------------------------------------------- questions

_FACT_OPENINGS = re.compile(
    r"^(?:و|ف)?(?:من|متي|اين|كم|بكم|اي|ايه|باي|في اي|الي اي|ما|ماذا|بماذا|ماهو|ماهي|ما اسم|ماسم|لمن|ممن|منذ متي)\b"
    r"|^(?:who|whom|whose|when|where|which|what|how (?:many|much|long|old|far|big|large|often))\b")
_NOT_FACT = re.compile(r"^(?:و|ف)?(?:لماذا|لم|كيف|هل)\b"
                       r"|^(?:why|how(?! (?:many|much|long|old|far|big|large|often))|is|are|was|were|do|does|did|can"
                       r"|could|should)\b")


def asks_for_fact(question: str) -> bool:
    folded = normalize(question).strip(" ?؟.!-\u200f").lower()
    return bool(_FACT_OPENINGS.search(folded)) and not _NOT_FACT.search(folded)


_SUMMARY = re.compile(r"\b(?:لخص|لخصي|تلخيص|ملخص|نظره عامه|ابرز ما|اهم ما|ما ابرز|ما اهم|الحجج|حجج|ما الاراء|"
                      r"ماذا تقول المقالات|ما الذي تقوله المقالات|summari[sz]e|summary|overview|main points|"
                      r"key points|what do the (?:articles|sources) say|what are the arguments)\b")
_COMPARISON = re.compile(r"\b(?:قارن|قارني|مقارنه|الفرق بين|ما الفرق|اوجه الاختلاف|اوجه التشابه|compare|comparison|"
                         r"difference between|differences between|differ|versus|vs)\b")


def summary_topic(question: str) -> str:
    """What a summary is about: the question without its request words ("لخص ما تقوله المقالات
    عن ماسك" → "ماسك"); the question itself when nothing is left."""
    words = question.strip().rstrip("؟?.!").split()
    kept = [w for w in words if not _SUMMARY.search(normalize(w).lower())
            and normalize(w).lower() not in _SUMMARY_FILLER]
    return " ".join(kept) or question


_SUMMARY_FILLER = {normalize(w) for w in "ما ماذا الذي التي تقوله تقول يقوله المقالات المصادر عن حول بشأن في".split()}
_SUMMARY_FILLER |= {
    "what", "do", "does", "the", "articles", "sources", "say", "about", "on", "of", "me", "give", "a", "an",
    "please", "is", "are", "there"}


def task_of(question: str) -> str:
    """fact (the default), summary or comparison."""
    folded = normalize(question).lower()
    if _COMPARISON.search(folded) and comparison_sides(question) is not None:
        return "comparison"
    if _SUMMARY.search(folded):
        return "summary"
    return "fact"


_CONJUNCTION_EN = {"and", "with", "to", "versus", "vs", "vs."}


@dataclass(frozen=True)
class Sides:
    names: tuple[str, str]  # the two things compared, as written
    frame: str  # the rest of the question: what is compared about them


def comparison_sides(question: str) -> Sides | None:
    """The two things a comparison puts side by side, and the frame they share: "قارن بين غرامات
    ألمانيا واليابان" → (ألمانيا, اليابان); "compare the UK's and the EU's approach" → (the UK's,
    the EU's); "الفرق بين نداء كرايست تشيرش ومبادرة الشجاعة المدنية" → both noun phrases. A name
    before the conjunction makes one-word sides, a repeated head word ("موقف … وموقف …") sides
    of equal length, and otherwise the first side runs from "بين"/"between" to the conjunction."""
    tokens = question.strip().rstrip("؟?.!").split()
    folded = [normalize(t).lower() for t in tokens]
    cue = next((i for i, t in enumerate(folded) if _COMPARISON.search(t) or t in ("بين", "between")), None)
    if cue is None:
        return None
    between = next((i for i, t in enumerate(folded) if t in ("بين", "between")), None)
    for c in range(cue + 2, len(tokens)):
        arabic = folded[c].startswith("و") and len(folded[c]) > 2
        english = folded[c] in _CONJUNCTION_EN and c + 1 < len(tokens)
        if not (arabic or english):
            continue
        second_start = c if arabic else c + 1
        head = folded[second_start][1:] if arabic else folded[second_start]
        repeated = next((h for h in range(c - 1, cue, -1) if folded[h] == head), None)
        if repeated is not None:
            first_start, length = repeated, c - repeated
        elif _is_name(tokens[c - 1]) or between is None:
            first_start, length = c - 1, 1
            if not arabic:  # English names run over capitalized words: "the Christchurch Call"
                while first_start - 1 > cue and tokens[first_start - 1][:1].isupper():
                    first_start -= 1
                while second_start + length < len(tokens) and tokens[second_start + length][:1].isupper():
                    length += 1
        else:
            first_start = between + 1
            length = next((i for i in range(second_start + 1, len(tokens)) if folded[i] in _PREPOSITIONS),
                          len(tokens)) - second_start
        first = tokens[first_start:c]
        second = tokens[second_start:second_start + length]
        if arabic:
            second = [second[0][1:]] + second[1:]
        rest = [t for t in tokens[:first_start] + tokens[second_start + length:]
                if normalize(t).lower().strip(" ،,") not in _COMPARISON_WORDS]
        names = (" ".join(first).strip(" ،,"), " ".join(second).strip(" ،,"))
        if all(names):
            return Sides(names, " ".join(rest))
    return None


# the request itself, kept out of each side's retrieval ("قارن بين … في تغريم المنصات" → "في تغريم المنصات")
_COMPARISON_WORDS = {normalize(w) for w in "قارن قارني مقارنة مقارنه الفرق فرق بين اوجه الاختلاف التشابه".split()} | {
    "compare", "comparison", "difference", "differences", "between", "differ", "versus", "vs", "vs."}


def side_query(sides: Sides, name: str) -> str:
    """What one side of a comparison is retrieved with: the shared frame and the side's name."""
    return f"{sides.frame} {name}".strip()


_PREPOSITIONS = {normalize(w) for w in "على في من عن حول تجاه إزاء بشأن مع".split()} | {
    "on", "in", "of", "about", "towards", "toward", "regarding", "for"}


def _is_name(token: str) -> bool:
    from .coverage import is_known_name

    if not has_arabic(token):
        return token[:1].isupper()
    return is_known_name(normalize(token))


# ----------------------------------------------------------------------------- answers

def fact_answer(question: str, retrieval: Retrieval, reader: Reader | None) -> Extract:
    """The sentence that answers, the fact in it when the reader is sure, a second sentence when it
    answers too."""
    lang = question_language(question)
    ranked = score_units(question, units(retrieval), reader)
    if not ranked:
        return Extract(text(lang, "framing"), [], None, list(retrieval.passages))
    best = ranked[0]
    if best.reading is not None:
        chosen = [ranked[i] for i in further_quotes([(s.score, len(s.unit.text)) for s in ranked])]
    else:
        chosen = [best] + [s for s in ranked[1:] if s.score >= best.score - FALLBACK_MARGIN][:MAX_QUOTES - 1]
    quotes = [_with_context(s.unit, retrieval) for s in chosen]
    fact = _fact(question, best, retrieval) if best.reading is not None else None
    lines = [text(lang, "fact", phrase=fact.text, n=fact.n)] if fact else []
    lines.append(text(lang, "framing"))
    lines += [quoted(lang, u.text, u.n) for u in quotes]
    return Extract("\n\n".join(lines), [_citation(u, retrieval) for u in quotes], fact,
                   _widened(retrieval, quotes))


def summary_answer(question: str, retrieval: Retrieval, relevance: float) -> Extract:
    """One best sentence per relevant article, under the article's title, best article first."""
    lang = question_language(question)
    best_per_article: dict[str, Unit] = {}
    for unit in units(retrieval):
        passage = retrieval.passages[unit.n - 1]
        if passage.score >= relevance and unit.doc_id not in best_per_article:
            best_per_article[unit.doc_id] = unit
    order = sorted(best_per_article.values(), key=lambda u: u.n)
    quotes = [_with_context(u, retrieval) for u in order]
    lines = [text(lang, "summary")]
    for unit in quotes:
        lines.append(text(lang, "source_line", title=retrieval.passages[unit.n - 1].title) + "\n"
                     + quoted(lang, unit.text, unit.n))
    return Extract("\n\n".join(lines), [_citation(u, retrieval) for u in quotes], None,
                   _widened(retrieval, quotes))


def comparison_answer(question: str, sides: Sequence[tuple[str, Retrieval, bool]]) -> Extract:
    """The best sentence for each side, under the side's name; a side the sources do not cover
    is said to be missing. `sides`: (name, the retrieval for the frame + name, covered).
    Passages of all sides are numbered in one list, in side order."""
    from .coverage import mentions

    lang = question_language(question)
    lines = [text(lang, "comparison")]
    passages: list[Passage] = []
    citations: list[Citation] = []
    quoted_already: set[str] = set()
    for name, retrieval, covered in sides:
        offset = len(passages)
        passages.extend(retrieval.passages)
        ranked = units(retrieval) if covered else []
        if not ranked:
            lines.append(text(lang, "side", side=name) + "\n" + text(lang, "uncovered_side", side=name))
            continue
        # the side's best sentence that names it (the best one overall may speak of the frame only,
        # or of the other side), and not the sentence quoted for the other side
        fresh = [u for u in ranked if not any(u.text in q for q in quoted_already)] or ranked
        unit = _with_context(next((u for u in fresh if mentions(u.text, name)), fresh[0]), retrieval)
        quoted_already.add(unit.text)
        widened = _widened(retrieval, [unit])
        passages[offset:offset + len(widened)] = widened
        n = offset + unit.n
        lines.append(text(lang, "side", side=name) + "\n" + quoted(lang, unit.text, n))
        passage = passages[n - 1]
        citations.append(Citation(n=n, doc_id=passage.doc_id, title=passage.title, quote=unit.text,
                                  start=unit.start, end=unit.end))
    return Extract("\n\n".join(lines), citations, None, passages)


def _fact(question: str, best: Scored, retrieval: Retrieval) -> Fact | None:
    reading = best.reading
    if reading is None or not asks_for_fact(question) or reading.probability < FACT_MIN_PROBABILITY:
        return None
    unit = best.unit
    start, end = _trim(unit.text, reading.start, reading.end)
    phrase = unit.text[start:end]
    if not phrase or len(phrase.split()) > MAX_FACT_WORDS or normalize(phrase) in normalize(question):
        return None
    return Fact(text=phrase, n=unit.n, doc_id=unit.doc_id, start=unit.start + start, end=unit.start + end)


_EDGE = " \t\n.,،؛;:!?؟\"'«»“”()[]-–—"


def _trim(sentence: str, start: int, end: int) -> tuple[int, int]:
    while start < end and sentence[start] in _EDGE:
        start += 1
    while end > start and sentence[end - 1] in _EDGE:
        end -= 1
    return start, end


def _with_context(unit: Unit, retrieval: Retrieval) -> Unit:
    """A very short sentence ("وأضاف: …") is quoted together with the one before it."""
    if len(unit.text) >= SHORT_SENTENCE:
        return unit
    item = retrieval.evidence[unit.n - 1]
    previous = [s for s in quotable_sentences(item) if s[1] <= unit.start]
    if not previous:
        return unit
    start = previous[-1][0]
    return Unit(unit.n, unit.doc_id, start, unit.end, item.document[start:unit.end], unit.cheap, unit.vector)


def _citation(unit: Unit, retrieval: Retrieval) -> Citation:
    passage = retrieval.passages[unit.n - 1]
    return Citation(n=unit.n, doc_id=unit.doc_id, title=passage.title, quote=unit.text, start=unit.start,
                    end=unit.end)


def _widened(retrieval: Retrieval, quotes: Sequence[Unit]) -> list[Passage]:
    """The passages, each widened to hold the whole of the sentences quoted from it."""
    out = list(retrieval.passages)
    for unit in quotes:
        passage = out[unit.n - 1]
        if unit.start < passage.start or unit.end > passage.end:
            start, end = min(passage.start, unit.start), max(passage.end, unit.end)
            document = retrieval.evidence[unit.n - 1].document
            out[unit.n - 1] = Passage(**{**passage.to_dict(), "start": start, "end": end, "text": document[start:end]})
    return out


def extractive_answer(question: str, retrieval: Retrieval, reader: Reader | None = None,
                      side_retrieval: Callable[[str, str], tuple[Retrieval, bool]] | None = None,
                      relevance: float = 0.2) -> Extract:
    """The offline answer for the question's task (fact, summary or comparison)."""
    task = task_of(question)
    if task == "summary":
        return summary_answer(question, retrieval, relevance)
    sides = comparison_sides(question) if task == "comparison" else None
    if sides is not None and side_retrieval is not None:
        return comparison_answer(question, [(name, *side_retrieval(side_query(sides, name), name))
                                            for name in sides.names])
    return fact_answer(question, retrieval, reader)
