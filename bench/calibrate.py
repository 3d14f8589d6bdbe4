"""Fit the relevance calibration of `rag.retrieval` and report refusal thresholds; prints JSON.

Examples (the top hybrid passage of each question):
  positive  the question's gold paragraph is in the corpus and ranked first
  negative  the corpus does not contain the answer: questions of one dataset asked of another
            corpus (XQuAD ↔ ARCD ↔ seeds), in Arabic and, for the cross-lingual branch, English
            (tests/data/eval/xquad_en_questions.jsonl: 48 XQuAD questions in English)
Features: the cosine and its margin over the question's typical cosine, plus the passage's
lexical coverage when the question has lexical evidence in the corpus (query coverage ≥ 0.5),
else whether question and passage share a script (cross-lingual cosines run lower). Logistic regression by Newton's
method; the printed weights go into CALIBRATION_* in rag/retrieval.py.

    .venv/bin/python bench/calibrate.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.arabic import has_arabic  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import load_dataset, prepare_index  # noqa: E402
from rag.retrieval import LEXICAL_EVIDENCE, Retriever  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Class-balanced logistic regression (each class weighs half), by Newton's method."""
    x = np.hstack([x, np.ones((len(x), 1))])
    sample = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum())) * len(y)
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (sample * (p - y)) + ridge * w
        hessian = (x * (sample * p * (1 - p))[:, None]).T @ x + ridge * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def main() -> None:
    settings = Settings.load()
    quiet = lambda message: None  # noqa: E731
    xquad = load_dataset(EVAL / "xquad_ar" / "xquad.ar.json")
    arcd = load_dataset(EVAL / "arcd" / "arcd-train.json")
    seeds = load_dataset(EVAL / "seeds_qa_dev.jsonl", [ROOT / "seeds"])
    indexes = {name: prepare_index(ds, settings, quiet) for name, ds in
               (("xquad", xquad), ("arcd", arcd), ("seeds", seeds))}
    gold_of = {q.qid: q.gold_doc for q in xquad.questions}
    english = [json.loads(line) for line in (EVAL / "xquad_en_questions.jsonl").read_text().splitlines()]

    # (question, index name, gold doc or None when the corpus cannot answer)
    cases = []
    for ds, own in ((xquad, "xquad"), (arcd, "arcd")):
        for i, q in enumerate(ds.questions):
            if i % 3:  # a third of each set is plenty and keeps this quick
                continue
            cases.append((q.question, own, q.gold_doc))
            cases.append((q.question, "seeds", None))
            cases.append((q.question, "arcd" if own == "xquad" else "xquad", None))
    for row in english:
        cases.append((row["question"], "xquad", gold_of[row["id"]]))
        cases.append((row["question"], "arcd", None))
        cases.append((row["question"], "seeds", None))
    for q in seeds.questions:  # the dev set's own questions, answerable or not
        cases.append((q.question, "seeds", q.gold_doc))

    lexical, dense_only = [], []
    for question, name, gold in cases:
        index = indexes[name]
        result = Retriever(index.store, index.embedder).retrieve(question, k=5)
        if not result.passages:
            continue
        top = result.passages[0]
        if gold is not None and top.doc_id != gold:
            continue  # a retrieval miss: neither a clean positive nor a negative
        label = 1.0 if gold is not None else 0.0
        margin = top.dense_score - result.baseline
        if result.query_coverage >= LEXICAL_EVIDENCE:
            lexical.append((top.dense_score, margin, top.coverage, label))
        else:
            same_script = float(has_arabic(question) == has_arabic(top.text))
            dense_only.append((top.dense_score, margin, same_script, label))

    lexical_arr = np.array(lexical)
    dense_arr = np.array(dense_only)
    w_lex = fit_logistic(lexical_arr[:, :3], lexical_arr[:, 3])
    w_dense = fit_logistic(dense_arr[:, :3], dense_arr[:, 3])

    def report(probabilities: np.ndarray, labels: np.ndarray) -> dict:
        out = {}
        for threshold in (0.1, 0.2, 0.3, 0.4, 0.5):
            keep = probabilities >= threshold
            out[str(threshold)] = {
                "answerable_kept": round(float(keep[labels == 1].mean()), 3),
                "unanswerable_refused": round(float((~keep)[labels == 0].mean()), 3)}
        return out

    p_lex = 1 / (1 + np.exp(-(lexical_arr[:, :3] @ w_lex[:3] + w_lex[3])))
    p_dense = 1 / (1 + np.exp(-(dense_arr[:, :3] @ w_dense[:3] + w_dense[3])))
    print(json.dumps({
        "lexical_branch": {"n_positive": int(lexical_arr[:, 3].sum()),
                           "n_negative": int((1 - lexical_arr[:, 3]).sum()),
                           "weights_cosine_margin_coverage_bias": [round(float(v), 2) for v in w_lex],
                           "thresholds": report(p_lex, lexical_arr[:, 3])},
        "dense_only_branch": {"n_positive": int(dense_arr[:, 3].sum()),
                              "n_negative": int((1 - dense_arr[:, 3]).sum()),
                              "weights_cosine_margin_same_script_bias": [round(float(v), 2) for v in w_dense],
                              "thresholds": report(p_dense, dense_arr[:, 3])},
    }, indent=2))


if __name__ == "__main__":
    main()
