"""Index work at scale, the model bypassed; prints one JSON object.

Corpus: synthetic Arabic documents recombined from the eval paragraphs (title + eight random
paragraphs each, ~17 chunks) until about --chunks chunks. Through the public API
(`rag.Index(settings, embedder=<random vectors>)`), so only the index's own work is timed:
the full build, adding / changing / removing one document, hybrid search latency (query
embedding excluded: the stand-in returns a random vector) and peak RSS in a fresh searching
process, like `rag search` or the chat, then `--optimize` (all segments merged), the building
process's peak RSS and the index's size on disk.

    nice .venv/bin/python bench/scale_bench.py --chunks 100000 [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
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


def peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def search_in_subprocess(settings: Settings, queries: int) -> dict:
    code = f"""
import json, statistics, sys, time
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "bench")!r})
from pathlib import Path
from scale_bench import RandomEmbedder, paragraphs_and_questions, peak_rss_mb
from rag.api import Index
from rag.config import Settings
questions = paragraphs_and_questions()[1][:{queries}]
began = time.perf_counter()
index = Index(Settings(index_dir=Path({str(settings.resolved_index_dir)!r}), home=Path({str(settings.home)!r})),
              embedder=RandomEmbedder())
index.search(questions[0], k=5)  # the first search opens the generation
opened = time.perf_counter() - began
latencies = []
for question in questions:
    began = time.perf_counter()
    index.search(question, k=5, mode="hybrid")
    latencies.append((time.perf_counter() - began) * 1000)
print(json.dumps({{"open_and_first_search_s": round(opened, 2),
                  "hybrid_p50_ms": round(statistics.median(latencies), 1),
                  "hybrid_p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 1),
                  "search_peak_rss_mb": peak_rss_mb()}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-optimize", action="store_true", help="skip the final merge of every segment")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep the corpus and index there")
    parser.add_argument("--search-only", action="store_true",
                        help="only search the index kept in --keep by an earlier run")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.keep, args)
    else:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            result = run(Path(tmp), args)
    print(json.dumps(result, indent=2))


def run(folder: Path, args) -> dict:
    settings = Settings(index_dir=folder / "index", home=folder / "home")
    if args.search_only:
        return search_in_subprocess(settings, args.queries)
    paragraphs, _ = paragraphs_and_questions()
    rng = random.Random(0)
    corpus = folder / "corpus"
    corpus.mkdir()
    n_docs = max(1, args.chunks // CHUNKS_PER_DOCUMENT)
    settled = time.time() - 3600  # an archive's files are older than the run that indexes them
    for n in range(n_docs):
        path = write_document(corpus, n, paragraphs, rng)
        os.utime(path, (settled, settled))
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
    result["approximate_segments"] = sum(s.approximate for s in index.store._segments)
    index.close()
    # searched by a fresh process, as `rag search` or the chat would: its RSS is the index's
    result.update(search_in_subprocess(settings, args.queries))
    if not args.no_optimize:
        index = Index(settings, embedder=RandomEmbedder())
        result["optimize_s"] = timed(lambda: index.update(optimize=True))
        index.close()
    result["build_peak_rss_mb"] = peak_rss_mb()
    result["disk_mb"] = round(sum(p.stat().st_size for p in settings.resolved_index_dir.rglob("*")
                                  if p.is_file()) / 1e6)
    return result


if __name__ == "__main__":
    main()
