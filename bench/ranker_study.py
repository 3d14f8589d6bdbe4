"""What more the quote ranker and the fact line could get from the reader's outputs, without a new reader.

    .venv/bin/python bench/answer_study.py --fit --rows-out rows.json   # the held-out rows
    .venv/bin/python bench/ranker_study.py rows.json                    # JSON

Reads the per-sentence rows of the held-out questions (the 8 best sentences by the cheap score,
each read by the shipped reader) and measures, with the same cross-fitting as answer_study.py
(each half of the fold ranked with weights fitted on the other half):

- gold in the first quote for rankers with more features than the shipped one: the share of the
  question's content words in the sentence and its length; whether a "when / how many" question's
  sentence has a number; the reader's span probability; the cosine between the question and the
  sentence embedded on its own (at query time, instead of the stored late-chunked vector);
- gold in a cited quote, and answers that quote one sentence twice, when a sentence that two
  articles share is read as often as it occurs and when it is a candidate once (shipped);
- fact lines: coverage at which the mean F1 of the given lines stays >= 0.70, for several
  confidence scores and for an oracle that knows each line's F1 — the most any threshold on
  this reader's spans can give — and the span F1 when the first quote is the right sentence.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from answer_study import fit_logistic  # noqa: E402

from rag.arabic import lexical_tokens, normalize  # noqa: E402
from rag.quotes import READ_SENTENCES, answer_probabilities, further_quotes, same_sentence_key  # noqa: E402

DIGIT = re.compile(r"[0-9٠-٩]")
NUMERIC_QUESTION = re.compile(r"^(?:و|ف)?(?:متي|منذ متي|كم|بكم|في اي عام|في اي سنه)\b"
                              r"|^(?:when|how many|how much|in what year|in which year|what year)\b")


def numeric(question: str) -> bool:
    return bool(NUMERIC_QUESTION.search(normalize(question).strip(" ?؟.").lower()))


def features(row: dict, sentences: list[dict], kind: str) -> list[list[float]]:
    best_margin = max(s["margin"] for s in sentences)
    best_cheap = max(s["cheap"] for s in sentences)
    question = set(lexical_tokens(row["question"]))
    out = []
    for rank, s in enumerate(sentences):
        f = [s["margin"] - best_margin, s["cheap"] - best_cheap, rank]
        if kind in ("words_length", "answer_type", "span_probability"):
            words = set(lexical_tokens(s["text"]))
            f += [len(question & words) / max(1, len(question)), math.log(s["chars"])]
        if kind in ("answer_type", "span_probability"):
            has_number = bool(DIGIT.search(s["text"]))
            f += [float(row["numeric"] and has_number), float(row["numeric"] and not has_number)]
        if kind == "span_probability":
            f += [s["probability"]]
        if kind == "standalone_cosine":
            f += [s["standalone"] - max(x["standalone"] for x in sentences)]
        out.append(f)
    return out


def first_quote(rows: list[dict], kind: str) -> dict:
    def design(subset):
        x = np.array([f for r in subset for f in features(r, r["read"], kind)])
        y = np.array([float(s["gold"]) for r in subset for s in r["read"]])
        return x, y

    weights = {h: fit_logistic(*design([r for r in rows if r["fold"] == h])) for h in (0, 1)}
    out = {}
    for h in (0, 1):
        w = weights[1 - h]
        hits = [r["read"][int(np.argmax(np.array(features(r, r["read"], kind)) @ w[:-1]))]["gold"]
                for r in rows if r["fold"] == h]
        out[f"half_{h}"] = round(float(np.mean(hits)), 4)
    n0 = sum(r["fold"] == 0 for r in rows)
    out["pooled"] = round((out["half_0"] * n0 + out["half_1"] * (len(rows) - n0)) / len(rows), 4)
    return out


def shipped_probabilities(sentences: list[dict]) -> list[float]:
    return answer_probabilities([s["margin"] for s in sentences], [s["cheap"] for s in sentences])


def quoted(sentences: list[dict]) -> list[dict]:
    """The shipped choice of quotes: the most probable sentence and further ones (quotes.fact_answer)."""
    p = shipped_probabilities(sentences)
    order = sorted(range(len(sentences)), key=lambda i: -p[i])
    return [sentences[order[i]] for i in further_quotes([(p[j], sentences[j]["chars"]) for j in order])]


def once_each(sentences: list[dict]) -> list[dict]:
    seen, out = set(), []
    for s in sentences:
        folded = same_sentence_key(s["text"])
        if folded not in seen:
            seen.add(folded)
            out.append(s)
    return out


def coverage_at(f1: np.ndarray, score: np.ndarray, n_questions: int, target: float = 0.70) -> float:
    """Largest share of all questions that can get a fact line, best score first, while the mean
    F1 of the given lines stays >= target."""
    order = np.argsort(-score, kind="stable")
    running = np.cumsum(f1[order]) / np.arange(1, len(f1) + 1)
    ok = np.nonzero(running >= target)[0]
    return round(float((ok[-1] + 1) / n_questions), 4) if len(ok) else 0.0


def fact_lines(rows: list[dict]) -> dict:
    items = []
    for r in rows:
        if not r["fact_question"]:
            continue
        p = shipped_probabilities(r["read"])
        best = int(np.argmax(p))
        s = r["read"][best]
        items.append((s["span_f1"], s["probability"], p[best], s["margin"], s["gold"], len(s["span"].split())))
    f1, span_p, sentence_p, margin, gold, words = (np.array(column, dtype=float) for column in zip(*items))
    n = len(rows)
    return {
        "questions": n, "fact_questions": len(items),
        "mean_span_f1_of_first_sentence": round(float(f1.mean()), 4),
        "span_f1_when_first_sentence_holds_the_answer": round(float(f1[gold == 1].mean()), 4),
        "span_f1_zero_when_first_sentence_holds_the_answer": round(float((f1[gold == 1] == 0).mean()), 4),
        "coverage_at_f1_0.70": {
            "span_probability (shipped)": coverage_at(f1, span_p, n),
            "span_probability x sentence_probability": coverage_at(f1, span_p * sentence_p, n),
            "reader_margin": coverage_at(f1, margin, n),
            "log span_p + log sentence_p - 0.05 words": coverage_at(
                f1, np.log(span_p + 1e-6) + np.log(sentence_p) - 0.05 * words, n),
            "oracle (knows each line's F1)": coverage_at(f1, f1, n),
        },
    }


def standalone_cosines(rows: list[dict]) -> None:
    from rag.config import Settings
    from rag.embeddings import Embedder

    embedder = Embedder(Settings.load())
    questions = embedder.embed_queries([r["question"] for r in rows])
    sentences = embedder.embed_passages([s["text"] for r in rows for s in r["sentences"]])
    i = 0
    for r, q in zip(rows, questions):
        for s in r["sentences"]:
            s["standalone"] = float(sentences[i] @ q)
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path, help="the JSON written by answer_study.py --fit --rows-out")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the standalone-cosine ranker")
    args = parser.parse_args()
    rows = json.loads(args.rows.read_text())
    if not rows or "question" not in rows[0]:
        sys.exit(f"error: {args.rows} has no question texts: write it again with this "
                 "checkout's `bench/answer_study.py --fit --rows-out`")
    if not args.no_embeddings:
        standalone_cosines(rows)
    for r in rows:
        r["numeric"] = numeric(r["question"])
        r["read"] = r["sentences"][:READ_SENTENCES]
    kinds = ["shipped_features", "words_length", "answer_type", "span_probability"]
    if not args.no_embeddings:
        kinds.append("standalone_cosine")
    result = {"questions": len(rows), "gold_in_first_quote": {kind: first_quote(rows, kind) for kind in kinds}}
    cited = {}
    for label, pick in (("as read", lambda r: r["read"]),
                        ("a shared sentence once", lambda r: once_each(r["sentences"])[:READ_SENTENCES])):
        chosen = [quoted(pick(r)) for r in rows]
        cited[label] = {
            "gold_in_a_cited_quote": round(float(np.mean([any(s["gold"] for s in c) for c in chosen])), 4),
            "median_quoted_chars": float(np.median([sum(s["chars"] for s in c) for c in chosen])),
            "answers_quoting_a_sentence_twice": sum(len(once_each(c)) < len(c) for c in chosen),
            "per_half": [round(float(np.mean([any(s["gold"] for s in c) for r, c in zip(rows, chosen)
                                              if r["fold"] == h])), 4) for h in (0, 1)]}
    result["cited_quotes"] = cited
    result["fact_lines"] = fact_lines(rows)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
