"""Index work at scale, the model bypassed; prints one JSON object.

Corpus: synthetic Arabic documents recombined from the eval paragraphs (title + eight random
paragraphs each, ~17 chunks) until about --chunks chunks. Through the public API
(`rag.Index(settings, embedder=<random vectors>)`), so only the index's own work is timed:
the full build, adding / changing / removing one document, hybrid search latency (query
embedding excluded: the stand-in returns a random vector), the searching process's peak RSS
and the index's size on disk.

    nice .venv/bin/python bench/scale_bench.py --chunks 100000 [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.api import Index  # noqa: E402
from rag.config import Settings  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
CHUNKS_PER_DOCUMENT = 17  # measured on this corpus with the default chunk size


class RandomEmbedder:
    dimension = 384
    loaded = True

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def identity(self) -> dict:
        return {"name": "random-vectors", "dimension": self.dimension}

    def _unit(self, n: int) -> np.ndarray:
        v = self.rng.standard_normal((n, self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_passages_with_spans(self, texts, spans, progress=False):
        return self._unit(len(texts)), [self._unit(len(s)) for s in spans]

    def embed_query(self, text: str) -> np.ndarray:
        return self._unit(1)[0]


def paragraphs_and_questions() -> tuple[list[tuple[str, str]], list[str]]:
    paragraphs, questions = [], []
    for name in ("xquad_ar/xquad.ar.json", "arcd/arcd-train.json"):
        for article in json.loads((EVAL / name).read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                paragraphs.append((article["title"], paragraph["context"]))
                questions += [q["question"] for q in paragraph["qas"][:1]]
    return paragraphs, questions


def write_document(folder: Path, n: int, paragraphs, rng: random.Random) -> Path:
    picked = rng.sample(paragraphs, 8)
    path = folder / f"{n // 1000:04d}" / f"{n:07d}.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{picked[0][0]} {n}\n" + "\n".join(p for _, p in picked) + "\n", encoding="utf-8")
    return path


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return round(time.perf_counter() - began, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    paragraphs, questions = paragraphs_and_questions()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        n_docs = max(1, args.chunks // CHUNKS_PER_DOCUMENT)
        for n in range(n_docs):
            write_document(corpus, n, paragraphs, rng)
        settings = Settings(index_dir=Path(tmp) / "index", home=Path(tmp) / "home")
        index = Index(settings, embedder=RandomEmbedder())
        result: dict = {"documents": n_docs}
        result["build_s"] = timed(lambda: index.update([corpus]))
        result["chunks"] = index.store.size
        added = write_document(corpus, n_docs, paragraphs, rng)
        result["add_one_s"] = timed(lambda: index.update())
        added.write_text(added.read_text(encoding="utf-8") + "فقرة أخرى.\n", encoding="utf-8")
        result["change_one_s"] = timed(lambda: index.update())
        added.unlink()
        result["remove_one_s"] = timed(lambda: index.update())
        result["segments"] = len(index.store.segment_names)
        index.search(questions[0], k=5)  # first search reads the generation
        latencies = []
        for question in questions[:args.queries]:
            began = time.perf_counter()
            index.search(question, k=5, mode="hybrid")
            latencies.append((time.perf_counter() - began) * 1000)
        result["hybrid_p50_ms"] = round(statistics.median(latencies), 1)
        result["hybrid_p95_ms"] = round(statistics.quantiles(latencies, n=20)[-1], 1)
        result["optimize_s"] = timed(lambda: index.update(optimize=True))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["disk_mb"] = round(sum(p.stat().st_size for p in settings.resolved_index_dir.rglob("*")
                                      if p.is_file()) / 1e6)
        index.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
