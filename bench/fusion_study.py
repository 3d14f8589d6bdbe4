"""The measurements behind the retrieval design: lexical tokenization × fusion method.

For each dataset it reuses the `rag eval` index (same chunks, same vectors), scores every
chunk for every question with each variant, ranks documents by their best chunk and prints
MRR@10 / R@5 as JSON. Ties are broken by chunk order (ARCD holds exact duplicate paragraphs).

    .venv/bin/python bench/fusion_study.py [xquad arcd seeds]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bm25s  # noqa: E402

from rag import arabic  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import load_dataset, prepare_index  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
DATASETS = {
    "xquad": (EVAL / "xquad_ar" / "xquad.ar.json", []),
    "arcd": (EVAL / "arcd" / "arcd-train.json", []),
    "seeds": (EVAL / "seeds_qa_dev.jsonl", [ROOT / "seeds"]),
}
TOKENIZERS = {
    "words-nostem": lambda t: arabic.search_tokens(t, "none"),
    "words-snowball": lambda t: arabic.search_tokens(t, "snowball"),
    "words-light": lambda t: arabic.search_tokens(t, "light"),
    "trigrams-light (chosen)": arabic.lexical_tokens,
}


def bm25_scores(rows, questions, tokenize) -> np.ndarray:
    model = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    model.index([tokenize(f"{title}\n{text}") or [""] for _, _, title, text in rows], show_progress=False)
    out = np.zeros((len(questions), len(rows)), np.float32)
    for j, q in enumerate(questions):
        tokens = tokenize(q.question)
        if tokens:
            out[j] = model.get_scores(tokens)
    return out


def rrf(*matrices: np.ndarray, k: int = 60) -> np.ndarray:
    out = np.zeros_like(matrices[0])
    for scores in matrices:
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        ranks[np.arange(len(scores))[:, None], order] = np.arange(scores.shape[1])[None, :]
        out += np.where(scores > 0, 1.0 / (k + ranks + 1), 0.0)
    return out


def weighted(dense: np.ndarray, lexical: np.ndarray, w: float = 0.5, depth: int = 100) -> np.ndarray:
    top = -np.sort(-dense, axis=1)[:, :depth]
    dense_norm = np.clip((dense - top[:, -1:]) / (top[:, :1] - top[:, -1:] + 1e-9), 0, None)
    return w * dense_norm + (1 - w) * lexical / (lexical.max(axis=1, keepdims=True) + 1e-9)


def metrics(scores: np.ndarray, doc_of: list[str], questions) -> dict[str, float]:
    ranks = []
    for j, q in enumerate(questions):
        seen: dict[str, int] = {}
        for i in np.argsort(-scores[j], kind="stable"):
            seen.setdefault(doc_of[i], len(seen) + 1)
            if len(seen) == 10:
                break
        ranks.append(seen.get(q.gold_doc))
    n = len(ranks)
    return {"mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
            "recall@5": round(sum(1 for r in ranks if r and r <= 5) / n, 4)}


def study(name: str, settings: Settings) -> dict:
    path, corpus = DATASETS[name]
    dataset = load_dataset(path, corpus)
    index = prepare_index(dataset, settings, notify=lambda m: None)
    store = index.store
    chunks = store.chunks(store.chunk_ids_of(store.document_ids()))
    rows = [(i, c.doc_id, c.title, c.text) for i, c in sorted(chunks.items())]
    vectors = store.vectors_of([r[0] for r in rows])
    questions = [q for q in dataset.questions if q.answerable]
    dense = index.embedder.embed_queries([q.question for q in questions]) @ vectors.T
    doc_of = [r[1] for r in rows]
    out = {"dense": metrics(dense, doc_of, questions)}
    for label, tokenize in TOKENIZERS.items():
        lexical = bm25_scores(rows, questions, tokenize)
        out[label] = {"bm25": metrics(lexical, doc_of, questions),
                      "rrf_k60": metrics(rrf(dense, lexical), doc_of, questions),
                      **{f"weighted_w{w}": metrics(weighted(dense, lexical, w), doc_of, questions)
                         for w in (0.4, 0.5, 0.6)}}
    return out


def main() -> None:
    names = sys.argv[1:] or list(DATASETS)
    settings = Settings.load()
    print(json.dumps({name: study(name, settings) for name in names}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
