"""Answer quality on questions the reader never saw, and the fit of the quote ranker and fact threshold.

    .venv/bin/python bench/train_reader.py --fold 0 --out rag/data/reader.safetensors   # the shipped reader
    .venv/bin/python bench/answer_study.py                      # answers on fold 1, JSON
    .venv/bin/python bench/answer_study.py --no-reader          # the same without the reader
    .venv/bin/python bench/answer_study.py --fit                # ranker + fact threshold

The shipped reader was trained on the fold-0 articles of XQuAD-ar and ARCD-train (folds split by
article, see train_reader.py), so XQuAD-ar, ARCD-train and the English XQuAD questions are
answered and scored here on their fold-1 articles only, which it never saw — through
`rag.Index.ask`, the production path. The seeds sets never took part in training and are
answered by `rag eval`.

--fit reads the best sentences of every held-out question and fits the logistic ranker
`quotes.READER_WEIGHTS` (P(sentence holds the answer) from the reader margin, the cheap score
and the rank by the cheap score), and reports fact-line coverage and F1 at a range of reader probabilities, from which
`quotes.FACT_MIN_PROBABILITY` is chosen. The held-out questions are split in two halves by
article: each half is ranked with the weights fitted on the other, and the per-half fits are
reported to show they agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_reader import fold_of  # noqa: E402

from rag.api import Index  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import (  # noqa: E402
    answer_records,
    contains_answer,
    f1_score,
    load_dataset,
    prepare_index,
    summarize_answers,
)
from rag.quotes import READ_SENTENCES, asks_for_fact, units  # noqa: E402
from rag.reader import WEIGHTS, Reader  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
SETS = {
    "xquad_ar": (EVAL / "xquad_ar" / "xquad.ar.json", []),
    "arcd_train": (EVAL / "arcd" / "arcd-train.json", []),
    "xquad_en": (EVAL / "xquad_en_questions.jsonl", [EVAL / "xquad_ar" / "xquad.ar.json"]),
}


def half_of(question) -> int:
    return int(hashlib.md5(f"half:{question.group}".encode()).hexdigest(), 16) % 2


def held_out(name: str, settings: Settings, weights: Path | None, trained_fold: int):
    """(dataset of the questions on the other fold's articles, Index answering them)."""
    path, corpus = SETS[name]
    dataset = load_dataset(path, corpus)
    base = prepare_index(dataset, settings, notify=lambda m: print(m, file=sys.stderr))
    chosen = (base.settings.replace(answer_reader=False) if weights is None
              else base.settings.replace(reader_weights=weights))
    questions = [q for q in dataset.questions if fold_of(q.group or "") != trained_fold]
    return replace(dataset, questions=questions), Index(chosen, embedder=base.embedder)


def answers(name: str, settings: Settings, weights: Path | None, trained_fold: int, limit: int | None) -> dict:
    dataset, index = held_out(name, settings, weights, trained_fold)
    return summarize_answers(answer_records(dataset, index, limit=limit))


def sentence_rows(name: str, settings: Settings, weights: Path, trained_fold: int) -> list[dict]:
    """Per question: the read sentences with reader margin, probability, cheap score, labels."""
    dataset, index = held_out(name, settings, weights, trained_fold)
    reader = Reader(index.settings.models_dir, weights, backend=index.settings.reader_backend)
    retriever = Retriever(index.store, index.embedder)
    rows = []
    for q in dataset.questions:
        if not q.answerable:
            continue
        retrieval = retriever.retrieve(q.question, k=index.settings.k)
        top = units(retrieval)[:8]
        readings = reader.read(q.question, [u.text for u in top])
        rows.append({"fold": half_of(q), "qid": q.qid, "fact_question": asks_for_fact(q.question),
                     "question": q.question, "answers": list(q.answers), "sentences": [
            {"margin": r.score, "probability": r.probability, "cheap": u.cheap, "chars": len(u.text),
             "n": u.n, "set": name, "text": u.text, "span": u.text[r.start:r.end],
             "gold": any(contains_answer(u.text, a) for a in q.answers),
             "span_f1": max((f1_score(u.text[r.start:r.end], a) for a in q.answers), default=0.0)}
            for u, r in zip(top, readings)]})
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 50) -> np.ndarray:
    """Newton's method for logistic regression with a small ridge."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + 1e-3 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def features(sentences: list[dict]) -> list[list[float]]:
    """As quotes.score_units: margin and cheap score relative to the question's best, rank."""
    best_margin = max(s["margin"] for s in sentences)
    best_cheap = max(s["cheap"] for s in sentences)
    return [[s["margin"] - best_margin, s["cheap"] - best_cheap, rank] for rank, s in enumerate(sentences)]


def fit(rows: list[dict], read: int | None = READ_SENTENCES) -> dict:
    """read: rank only the first `read` sentences (what a smaller READ_SENTENCES would read)."""
    if read is not None:
        rows = [{**r, "sentences": r["sentences"][:read]} for r in rows]
    def design(subset):
        x = np.array([f for r in subset for f in features(r["sentences"])])
        y = np.array([float(s["gold"]) for r in subset for s in r["sentences"]])
        return x, y

    out = {"per_fold": {}}
    for fold in (0, 1):
        out["per_fold"][fold] = fit_logistic(*design([r for r in rows if r["fold"] == fold])).round(3).tolist()
    weights = fit_logistic(*design(rows))
    out["weights_all"] = weights.round(3).tolist()

    def best_of(row, w):
        scores = [float(np.dot(w[:3], f) + w[3]) for f in features(row["sentences"])]
        return row["sentences"][int(np.argmax(scores))] if scores else None

    # first quote: cross-fitted (each fold ranked with the weights fitted on the other)
    first = [best_of(r, out["per_fold"][1 - r["fold"]]) for r in rows]
    out["gold_in_first_quote_cv"] = round(float(np.mean([bool(b and b["gold"]) for b in first])), 4)
    out["gold_in_first_quote_cheap_only"] = round(float(np.mean(
        [bool(r["sentences"]) and max(r["sentences"], key=lambda s: s["cheap"])["gold"] for r in rows])), 4)
    out["gold_in_read_sentences"] = round(float(np.mean([any(s["gold"] for s in r["sentences"]) for r in rows])), 4)
    facts = [(b["probability"], b["span_f1"]) for r, b in zip(rows, first) if b and r["fact_question"]]
    n = len(rows)
    out["fact_curve"] = []
    for threshold in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        given = [f1 for p, f1 in facts if p >= threshold]
        out["fact_curve"].append({"min_probability": threshold, "fact_rate": round(len(given) / n, 4),
                                  "fact_f1": round(float(np.mean(given)), 4) if given else None})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader", type=Path, default=WEIGHTS, help="reader weights (default: the shipped ones)")
    parser.add_argument("--trained-fold", type=int, choices=[0, 1], default=0,
                        help="the fold the reader was trained on (the other one is scored)")
    parser.add_argument("--no-reader", action="store_true", help="answer without the reader")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--rows-out", type=Path, default=None, help="with --fit: keep the per-sentence rows (JSON)")
    parser.add_argument("--limit", type=int, default=None, help="questions per set")
    args = parser.parse_args()
    settings = Settings.load()
    weights = None if args.no_reader else args.reader
    result = {}
    pooled: list[dict] = []
    for name in args.sets:
        if args.fit:
            rows = sentence_rows(name, settings, args.reader, args.trained_fold)
            pooled += rows
            result[name] = fit(rows)
        else:
            result[name] = answers(name, settings, weights, args.trained_fold, args.limit)
        print(json.dumps({name: result[name]}, ensure_ascii=False), file=sys.stderr, flush=True)
    if args.fit:
        if args.rows_out:
            args.rows_out.write_text(json.dumps(pooled, ensure_ascii=False))
        result["pooled"] = fit(pooled)
        for read in (4, 6, 8):
            result[f"pooled_reading_{read}"] = fit(pooled, read)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
