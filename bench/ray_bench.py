"""`rag index --ray` against the local path on the eval paragraphs; prints one JSON object.

Corpus: the first --docs paragraphs of XQuAD-ar and ARCD-train, one file each (title line +
paragraph). They are indexed twice through the public API, into two index directories: once with
the local `Embedder`, once with `rag.distributed.RayEmbedder` on a Ray cluster started here with
`ray.cluster_utils.Cluster`: a head node without CPUs and --workers worker nodes of one CPU each,
so every embedding actor runs on a node of its own (all on this machine, as separate raylets),
joined by its address as a remote cluster would be. Then, per document: the same chunks (text and
offsets) in both indexes, and the cosine between corresponding chunk vectors and sentence vectors
(sentence vectors are stored as float16 in both). Target: same_chunks, both minimum cosines ≥ 0.9999.
Both timings have the local model loaded already; ray_s includes joining the cluster and every
worker loading its model.

    RAG_MODEL_DIR=… .venv/bin/python bench/ray_bench.py [--docs 300] [--workers 2] [--out FILE]

Needs the distributed extra (`pip install -e '.[distributed]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.api import Index  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.distributed import RayEmbedder  # noqa: E402
from rag.embeddings import Embedder  # noqa: E402
from rag.store import Store  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
TARGET_COSINE = 0.9999


def write_corpus(folder: Path, limit: int) -> int:
    n = 0
    for name in ("xquad_ar/xquad.ar.json", "arcd/arcd-train.json"):
        for article in json.loads((EVAL / name).read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                if n == limit:
                    return n
                n += 1
                (folder / f"{n:04d}.txt").write_text(f"{article['title']}\n{paragraph['context']}\n",
                                                     encoding="utf-8")
    return n


def timed_update(settings: Settings, embedder: Embedder, corpus: Path) -> float:
    began = time.perf_counter()
    Index(settings, embedder=embedder).update([corpus])
    return round(time.perf_counter() - began, 2)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare(local_dir: Path, ray_dir: Path) -> dict:
    local, ray = Store.open(local_dir), Store.open(ray_dir)
    same_chunks = local.document_ids() == ray.document_ids()
    chunk_cosines, sentence_cosines, chunks = [], [], 0
    for doc_id in local.document_ids():
        sides = []
        for store in (local, ray):
            ids = store.chunk_ids_of([doc_id])
            stored = sorted(store.chunks(ids).values(), key=lambda c: c.ordinal)
            vectors = store.vectors_of([c.chunk_id for c in stored])
            end = max((c.end for c in stored), default=0)
            sides.append(([(c.ordinal, c.start, c.end, c.text) for c in stored], vectors,
                          store.sentences_in(doc_id, 0, end)))
        (local_chunks, local_vectors, local_sentences), (ray_chunks, ray_vectors, ray_sentences) = sides
        chunks += len(local_chunks)
        same = local_chunks == ray_chunks and [s[:2] for s in local_sentences] == [s[:2] for s in ray_sentences]
        same_chunks &= same
        if same and local_chunks:
            chunk_cosines.append(cosines(local_vectors, ray_vectors).min())
        if same and local_sentences:
            sentence_cosines.append(cosines(np.stack([s[2] for s in local_sentences]),
                                            np.stack([s[2] for s in ray_sentences])).min())
    local.close()
    ray.close()
    return {"chunks": chunks, "same_chunks": bool(same_chunks),
            "min_chunk_cosine": round(float(min(chunk_cosines)), 6),
            "min_sentence_cosine": round(float(min(sentence_cosines)), 6)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=300, help="eval paragraphs to index (471 in all)")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes, one embedding actor each")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from ray.cluster_utils import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        corpus.mkdir()
        docs = write_corpus(corpus, args.docs)
        settings = Settings.load().replace(home=tmp / "home")

        local_settings = settings.replace(index_dir=tmp / "local")
        embedder = Embedder(local_settings)
        embedder.load()
        local_s = timed_update(local_settings, embedder, corpus)

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            for _ in range(args.workers):
                cluster.add_node(num_cpus=1)
            ray_settings = settings.replace(index_dir=tmp / "ray")
            ray_embedder = RayEmbedder(ray_settings, address=cluster.address)
            ray_embedder.load()
            ray_s = timed_update(ray_settings, ray_embedder, corpus)
        finally:
            cluster.shutdown()
        run = ray_embedder.last_run
        result = {"docs": docs, **compare(tmp / "local", tmp / "ray"), "local_s": local_s, "ray_s": ray_s,
                  "workers": run.workers if run else 0, "cluster": f"ray.cluster_utils.Cluster: {args.workers} "
                  "worker nodes of 1 CPU (+ a head without CPUs), on this machine",
                  "target_cosine": TARGET_COSINE}
        result["passed"] = (result["same_chunks"] and result["min_chunk_cosine"] >= TARGET_COSINE
                            and result["min_sentence_cosine"] >= TARGET_COSINE)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
