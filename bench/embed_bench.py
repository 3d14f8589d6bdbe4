"""Embedding speed of each backend for the default model, side by side; prints one JSON object.

The same texts for every backend: the chunks `rag index` would embed for the XQuAD-ar paragraphs
(title + chunk, "passage: " prompt; --passages of them), then --queries questions one at a time
(as search does). Per backend: passages/s (best of --repeat runs: on a shared 2-core machine
single runs vary), queries/s, load time, and the vectors' agreement with torch fp32 (cosine).
Retrieval quality per backend: `RAG_EMBEDDING_BACKEND=onnx-int8 rag eval … --json` (see
docs/retrieval.md).

    .venv/bin/python bench/embed_bench.py [--backends torch,onnx,onnx-int8] [--passages 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.chunking import chunk_document, embedding_text  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.embeddings import Embedder  # noqa: E402
from rag.types import Document  # noqa: E402

XQUAD = ROOT / "tests" / "data" / "eval" / "xquad_ar" / "xquad.ar.json"


def texts_and_questions(settings: Settings, passages: int, queries: int) -> tuple[list[str], list[str]]:
    data = json.loads(XQUAD.read_text(encoding="utf-8"))
    texts, questions = [], []
    for article in data["data"]:
        for number, paragraph in enumerate(article["paragraphs"]):
            doc = Document(doc_id=f"{number}", title=article["title"], text=paragraph["context"],
                           sha256="", source_path="")
            for chunk in chunk_document(doc, settings.chunk_tokens, settings.chunk_overlap_sentences):
                texts.append(embedding_text(doc.title, chunk.text, settings.title_in_passage))
            questions += [q["question"] for q in paragraph["qas"][:1]]
    return texts[:passages], questions[:queries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    base = Settings.load()
    texts, questions = texts_and_questions(base, args.passages, args.queries)
    results, reference = {}, None
    for backend in args.backends.split(","):
        embedder = Embedder(base.replace(embedding_backend=backend, device="cpu"))
        began = time.perf_counter()
        embedder.embed_passages(texts[:4])  # loads (and, the first time, exports) the model
        load_s = time.perf_counter() - began
        runs = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            vectors = embedder.embed_passages(texts)
            runs.append(time.perf_counter() - began)
        began = time.perf_counter()
        for question in questions:
            embedder.embed_query(question)
        query_s = time.perf_counter() - began
        if reference is None:
            reference = vectors
        agreement = (vectors * reference).sum(axis=1)
        results[backend] = {
            "passages_per_s": round(len(texts) / min(runs), 2),
            "queries_per_s": round(len(questions) / query_s, 1),
            "first_load_s": round(load_s, 2),
            f"cosine_to_{args.backends.split(',')[0]}": {"min": round(float(agreement.min()), 5),
                                                         "mean": round(float(agreement.mean()), 5)},
        }
        del embedder
    first = next(iter(results.values()))["passages_per_s"]
    for row in results.values():
        row["speed_vs_first"] = round(row["passages_per_s"] / first, 2)
    result = {"passages": len(texts), "queries": len(questions), "batch_size": base.embedding_batch_size,
              "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "backends": results}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
