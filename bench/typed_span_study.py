"""Would answer-type constrained spans give more fact lines at the same F1? (Tried, not shipped.)

    .venv/bin/python bench/typed_span_study.py        # held-out fold of XQuAD-ar and ARCD-train, JSON

For "when / in which year" and "how many / how much" questions, the fact span is taken as the
reader's best span that contains a year, date or number of the first quoted sentence (decoded
from the same logits), with its own probability threshold; other questions keep the shipped
rule. Reported per half of the held-out fold (halves by article, as bench/answer_study.py) and
pooled: the share of questions that get a fact line and the SQuAD F1 of those lines. Result in
docs/answers.md: +0.04 coverage at the same F1 pooled, not stable across halves.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from answer_study import half_of, held_out  # noqa: E402

from rag.arabic import normalize  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import f1_score  # noqa: E402
from rag.quotes import FACT_MIN_PROBABILITY, asks_for_fact, score_units, units  # noqa: E402
from rag.reader import WEIGHTS, Reader, _batch, _softmax, encode  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402

DATE_QUESTION = re.compile(
    r"^(?:و|ف)?(?:متي|منذ متي|الي متي|حتي متي)\b"
    r"|\b(?:في|الي|منذ|حتي) (?:اي|ايه) (?:عام|سنه|عهد|قرن|يوم|شهر|تاريخ|وقت|فتره|عقد)\b"
    r"|^(?:و|ف)?(?:ما|ماهو|ما هو|ماهي|ما هي) (?:تاريخ|عام|سنه)\b"
    r"|^(?:when|what year|which year|in what year|in which year|what date|what century|in what century)\b")
NUMBER_QUESTION = re.compile(
    r"^(?:و|ف)?(?:كم|بكم|لكم)\b"
    r"|^(?:و|ف)?(?:ما|ماهو|ما هو|ماهي|ما هي) (?:عدد|نسبه|مقدار|قيمه|مساحه|طول|عرض|ارتفاع|عمر|سعر|حجم|مبلغ)\b"
    r"|^(?:how many|how much|how old|how long|how far|how big|how large|what percentage|what percent)\b")
NUMBER_WORD = re.compile(r"و?(?:ال)?(?:واحد|اثن|ثلاث|اربع|خمس|ست|سبع|ثمان|تسع|عشر|مئ|مائ|الف|الاف|ملي|نصف|ربع|ثلث"
                         r"|عشرات|مئات)\w*")
MONTHS = tuple("يناير فبراير مارس ابريل مايو يونيو يوليو اغسطس سبتمبر اكتوبر نوفمبر ديسمبر "
               "كانون شباط اذار نيسان ايار حزيران تموز اب ايلول تشرين".split())
MAX_TYPED_TOKENS = 12


def answer_kind(question: str) -> str | None:
    folded = normalize(question).strip(" ?؟.!-\u200f").lower()
    return "date" if DATE_QUESTION.search(folded) else "number" if NUMBER_QUESTION.search(folded) else None


def typed_words(text: str, kind: str) -> list[tuple[int, int]]:
    """Character ranges of the words that can be (part of) an answer of this kind."""
    out = []
    for m in re.finditer(r"\S+", text):
        word = normalize(m.group()).strip("()[].,،؛:«»\"'")
        digits = re.sub(r"[^0-9٠-٩]", "", m.group())
        if kind == "number":
            fits = bool(digits) or bool(NUMBER_WORD.fullmatch(word))
        else:
            fits = 0 < len(digits) <= 4 or word.lstrip("وب").startswith(MONTHS) or "القرن" in word
        if fits:
            out.append((m.start(), m.end()))
    return out


def typed_span(logits: np.ndarray, offsets, regions) -> tuple[int, int, float]:
    """The best span (start + end logit) that overlaps one of `regions`, with P(start)·P(end)."""
    inside = [t for t, (a, _) in enumerate(offsets) if a >= 0]
    best = (-np.inf, inside[0], inside[0])
    for i in inside:
        for j in (t for t in inside if i <= t < i + MAX_TYPED_TOKENS):
            a, b = offsets[i][0], offsets[j][1]
            if any(ra < b and rb > a for ra, rb in regions) and logits[i, 0] + logits[j, 1] > best[0]:
                best = (logits[i, 0] + logits[j, 1], i, j)
    _, i, j = best
    return offsets[i][0], offsets[j][1], float(_softmax(logits[:, 0])[i] * _softmax(logits[:, 1])[j])


def rows_of(name: str, settings: Settings) -> list[dict]:
    dataset, index = held_out(name, settings, WEIGHTS, trained_fold=0)
    reader = Reader(index.settings.models_dir, WEIGHTS, backend=index.settings.reader_backend)
    tokenizer, run = reader._model()
    retriever = Retriever(index.store, index.embedder)
    rows = []
    for q in dataset.questions:
        if not q.answerable:
            continue
        ranked = score_units(q.question, units(retriever.retrieve(q.question, k=index.settings.k)), reader)
        kind = answer_kind(q.question)
        if not ranked or not (kind or asks_for_fact(q.question)):
            rows.append({"half": half_of(q)})
            continue
        best = ranked[0]
        sentence, reading = best.unit.text, best.reading
        row = {"half": half_of(q), "kind": kind, "probability": reading.probability,
               "f1": max(f1_score(sentence[reading.start:reading.end], a) for a in q.answers)}
        regions = typed_words(sentence, kind) if kind else []
        if regions:
            token_ids, offsets = encode(tokenizer, q.question, sentence)
            ids, mask = _batch(tokenizer, [token_ids])
            start, end, probability = typed_span(run(ids, mask)[0], offsets, regions)
            row.update(typed_probability=probability,
                       typed_f1=max(f1_score(sentence[start:end], a) for a in q.answers))
        rows.append(row)
    return rows


def fact_lines(rows: list[dict], typed_threshold: float | None) -> dict:
    given = []
    for r in rows:
        if "f1" not in r:
            continue
        if typed_threshold is not None and "typed_f1" in r:
            if r["typed_probability"] >= typed_threshold:
                given.append(r["typed_f1"])
        elif r["probability"] >= FACT_MIN_PROBABILITY:
            given.append(r["f1"])
    return {"fact_rate": round(len(given) / len(rows), 3),
            "fact_f1": round(float(np.mean(given)), 3) if given else None}


def main() -> int:
    settings = Settings.load()
    rows = [r for name in ("xquad_ar", "arcd_train") for r in rows_of(name, settings)]
    result = {}
    for label, subset in (("half_0", [r for r in rows if r["half"] == 0]),
                          ("half_1", [r for r in rows if r["half"] == 1]), ("pooled", rows)):
        result[label] = {"questions": len(subset), "shipped": fact_lines(subset, None),
                         **{f"typed_min_{t}": fact_lines(subset, t) for t in (0.1, 0.2, 0.3, 0.4)}}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
