"""Retrieval quality of exact vs approximate vector search (issue: a million chunks); prints JSON.

For each eval set: its index is built exact (as `rag eval` builds it, in a temporary home), then
its segment is rewritten as an approximate one (IVF over 8-bit codes, candidates re-scored
exactly; no re-embedding) twice: with the default parameters, and with the share of lists probed
at a million chunks (1/PROBE_SHARE) forced onto the small set, which at this size is far harsher
than at a million (one or two lists of ~40 vectors probed, against 128 of ~500). MRR@10 for
hybrid and dense retrieval, each time. Then, as a larger set of real e5 vectors, every stored
sentence vector of both indexes is searched approximately with the default parameters: the share
of the exact top-10 / top-100 neighbours of the eval questions that it returns.

    nice .venv/bin/python bench/approximate_study.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rag.store as store  # noqa: E402
from rag.api import Index  # noqa: E402
from rag.chunking import lexical_terms  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import evaluate, load_dataset, prepare_index  # noqa: E402
from rag.indexing import _manifest_fields  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
SETS = {"xquad_ar": EVAL / "xquad_ar" / "xquad.ar.json", "arcd_train": EVAL / "arcd" / "arcd-train.json"}


def rewrite_approximate(index_dir: Path) -> dict:
    generation = store.current_generation(index_dir)
    manifest = store.read_manifest(generation)
    writer = store.GenerationWriter(index_dir, generation, int(manifest.embedding["dimension"]),
                                    rewrite=[s.name for s in manifest.segments], approximate_from=1)
    writer.publish(_manifest_fields(manifest), lexical_terms)
    opened = store.Store.open(index_dir)
    (segment,) = opened._segments
    shape = {"chunks": opened.size, "lists": segment.vectors.nlist, "probed": segment.vectors.nprobe}
    opened.close()
    return shape


@contextmanager
def probing(min_probes: int):
    """Segments opened meanwhile probe max(min_probes, lists / PROBE_SHARE) lists."""
    saved = store.MIN_PROBES
    store.MIN_PROBES = min_probes
    try:
        yield
    finally:
        store.MIN_PROBES = saved


def sentence_pool_recall(index_dirs: list[Path], questions: list[str], settings: Settings) -> dict:
    """A larger pool of real e5 vectors: every stored sentence vector of the eval indexes, searched
    with the default parameters (its own 2·√n lists) for the eval questions: how many of the exact
    top-10 / top-100 neighbours the approximate search returns."""
    import sqlite3

    import numpy as np

    from rag.embeddings import Embedder

    vectors = []
    for index_dir in index_dirs:
        opened = store.Store.open(index_dir)
        for segment in opened.manifest.segments:
            db = sqlite3.connect(store.segment_folder(opened.generation_dir, segment.name) / store.SQLITE)
            vectors += [np.frombuffer(blob, dtype=store.SENTENCE_DTYPE) for (blob,) in db.execute(
                "SELECT vector FROM sentences")]
            db.close()
        opened.close()
    pool = np.vstack(vectors).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    ids = np.arange(len(pool), dtype=np.int64)
    queries = Embedder(settings).embed_queries(questions)
    approximate = store._approximate_index(pool, ids)
    out = {"vectors": len(pool), "lists": approximate.nlist, "probed": approximate.nprobe}
    for k in (10, 100):
        exact = np.argsort(-(queries @ pool.T), axis=1)[:, :k]
        _, candidates = approximate.search(queries, store.RESCORE * k)
        found = []
        for row, query in enumerate(queries):
            got = candidates[row][candidates[row] >= 0]
            best = got[np.argsort(-(pool[got] @ query))[:k]]
            found.append(len(set(best.tolist()) & set(exact[row].tolist())) / k)
        out[f"recall@{k}"] = round(float(np.mean(found)), 4)
    return out


def mrr(dataset, settings: Settings, index_dir: Path) -> dict:
    index = Index(settings.replace(index_dir=index_dir))
    try:
        return {mode: evaluate(dataset, index, mode=mode)["mrr@10"] for mode in ("hybrid", "dense")}
    finally:
        index.close()


def main() -> None:
    result, index_dirs, questions = {}, [], []
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.load(home=Path(home))
        for name, path in SETS.items():
            dataset = load_dataset(path)
            index = prepare_index(dataset, settings, notify=lambda line: None)
            index_dir = index.settings.resolved_index_dir
            index.close()
            index_dirs.append(index_dir)
            questions += [q.question for q in dataset.questions]
            row = {"exact": mrr(dataset, settings, index_dir)}
            row["default_shape"] = rewrite_approximate(index_dir)
            row["approximate_default"] = mrr(dataset, settings, index_dir)
            with probing(1):
                opened = store.Store.open(index_dir)
                row["million_share_shape"] = {**row["default_shape"], "probed": opened._segments[0].vectors.nprobe}
                opened.close()
                row["approximate_million_share"] = mrr(dataset, settings, index_dir)
            result[name] = row
        result["sentence_pool"] = sentence_pool_recall(index_dirs, questions, settings)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
