"""Segments, tombstones and merges: real SQLite, FAISS and postings on disk, vectors from a
hash of the text (tests.fake_embedder) so no model is needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rag.api import Index
from rag.config import Settings
from rag.store import GENERATIONS, SEGMENTS, Store, current_generation

from .conftest import ROOT, SEEDS, settle
from .fake_embedder import HashEmbedder

QUERY = "ماذا قال ماسك عن الحرب الأهلية؟"


@pytest.fixture()
def index(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in SEEDS.iterdir():
        (corpus / path.name).write_bytes(path.read_bytes())
    settings = Settings(index_dir=tmp_path / "index", home=tmp_path / "home")
    index = Index(settings, HashEmbedder())
    index.update([corpus])
    yield index, corpus
    index.close()


def ranking(index: Index) -> list[tuple]:
    return [(p.doc_id, p.start, p.end, round(p.score, 4), p.bm25_score)
            for mode in ("hybrid", "bm25") for p in index.search(QUERY, k=8, mode=mode)]


def edit(corpus, i: int) -> None:
    path = sorted(corpus.iterdir())[i % 5]
    path.write_text(path.read_text(encoding="utf-8") + f"\nوأضاف المتحدث تفصيلا رقم {i}.\n", encoding="utf-8")
    settle(path)


def test_an_update_writes_one_segment_and_tombstones_the_old_rows(index):
    index, corpus = index
    (corpus / "new.txt").write_text("خبر جديد\nقال ماسك إن الحرب الأهلية لا مفر منها.\n", encoding="utf-8")
    index.update()
    first = index.store.manifest.segments
    assert len(first) == 2 and first[1].documents == 1
    smallest = min((d for d in index.documents() if d.doc_id != "new.txt"), key=lambda d: d.chunks)
    assert smallest.chunks / first[0].chunks <= 0.2  # below the merge policy's tombstone share
    edited = corpus / smallest.doc_id
    edited.write_text(edited.read_text(encoding="utf-8") + "\nسطر آخر.\n", encoding="utf-8")
    index.update()
    store = index.store
    seeds = store.manifest.segments[0]
    assert seeds.name == first[0].name and seeds.deleted == (smallest.doc_id,)
    assert seeds.deleted_chunks == smallest.chunks and len(store.manifest.segments) == 3
    assert edited.name in store.document_ids() and store.size == store.manifest.chunks
    assert len(store.chunk_ids_of([smallest.doc_id])) == next(
        d.chunks for d in index.documents() if d.doc_id == smallest.doc_id)
    assert "سطر آخر" in store.document(smallest.doc_id).text


def test_bm25_is_exact_across_segments_and_a_merge_changes_no_ranking(index):
    index, corpus = index
    for i in range(3):
        edit(corpus, i)
        index.update()
    (corpus / sorted(p.name for p in corpus.iterdir())[3]).unlink()
    index.update()
    assert len(index.store.segment_names) > 1
    before = ranking(index)
    index.update(optimize=True)
    assert len(index.store.segment_names) == 1 and not index.store.manifest.segments[0].deleted
    assert ranking(index) == before
    # and the same as a fresh build of the same files in one segment
    fresh = Index(index.settings.replace(index_dir=index.settings.resolved_index_dir.parent / "fresh"),
                  HashEmbedder())
    fresh.update([corpus])
    assert [hit[:2] + hit[3:] for hit in ranking(fresh)] == [hit[:2] + hit[3:] for hit in before]


def test_the_policy_bounds_segments_and_unreferenced_segments_are_deleted(index):
    index, corpus = index
    for i in range(12):
        (corpus / f"n{i}.txt").write_text(f"خبر رقم {i}\nنص الخبر رقم {i} عن الاقتصاد.\n", encoding="utf-8")
        index.update()
    index_dir = index.settings.resolved_index_dir
    assert len(index.store.segment_names) <= 8
    listed = set()
    for generation in (index_dir / GENERATIONS).glob("gen-*"):
        listed |= {s["name"] for s in json.loads((generation / "manifest.json").read_text())["segments"]}
    assert {p.name for p in (index_dir / SEGMENTS).iterdir()} == listed
    assert len(list((index_dir / GENERATIONS).iterdir())) == 2
    assert index.store.size == index.store.manifest.chunks and len(index.store.document_ids()) == 17


def _merge_in_child(index_dir, hang_at: str) -> subprocess.Popen:
    """`rag index --optimize` in another process, stopped right before `hang_at` in the store:
    the BM25 postings of the merged segment, or (segment and manifest in place) the CURRENT swap."""
    code = textwrap.dedent(f"""
        import pathlib, time, rag.store as s
        from rag.api import Index
        from rag.config import Settings
        from tests.fake_embedder import HashEmbedder
        real = getattr(s, {hang_at!r})
        def hang(*args, **kwargs):
            pathlib.Path({str(index_dir / "hanging")!r}).write_text("1")
            time.sleep(600)
            real(*args, **kwargs)
        setattr(s, {hang_at!r}, hang)
        Index(Settings(index_dir=pathlib.Path({str(index_dir)!r}), home=pathlib.Path({str(index_dir)!r}) / "h"),
              HashEmbedder()).update(optimize=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("hang_at", ["_write_bm25", "_atomic_write"])
def test_a_merge_killed_half_way_leaves_the_previous_generation(index, hang_at):
    index, corpus = index
    for i in range(2):
        edit(corpus, i)
        index.update()
    index_dir = index.settings.resolved_index_dir
    before, expected = current_generation(index_dir), ranking(index)
    child = _merge_in_child(index_dir, hang_at)
    deadline = time.time() + 120
    while not (index_dir / "hanging").exists():
        assert time.time() < deadline and child.poll() is None
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert current_generation(index_dir) == before
    assert ranking(Index(index.settings, HashEmbedder())) == expected
    index.update(optimize=True)  # the next writer removes what the dead one left and merges
    assert not list(index_dir.rglob(".staging-*"))
    assert len(index.store.segment_names) == 1 and ranking(index) == expected


def test_a_reader_keeps_searching_its_generation_during_a_merge(index):
    index, corpus = index
    for i in range(2):
        edit(corpus, i)
        index.update()
    reader = Store.open(index.settings.resolved_index_dir)
    expected = sorted(reader.bm25_scores(["ماس", "الح"]).items())
    for _ in range(3):  # merges, then more generations: the reader's files are deleted under it
        index.update(optimize=True)
        edit(corpus, 3)
        index.update()
    assert not reader.is_current()
    assert sorted(reader.bm25_scores(["ماس", "الح"]).items()) == expected
    assert reader.chunks(reader.chunk_ids_of(reader.document_ids()[:1]))
    reader.close()


def test_bm25_top_k_is_the_full_ranking_cut_at_k(index, monkeypatch):
    """The store's top-k (argpartition per segment) equals sorting every BM25 hit, ties kept in
    index order, over segments with tombstones, with and without an allowed set."""
    index, corpus = index
    monkeypatch.setattr("rag.store.MAX_TOMBSTONE_SHARE", 1.0)  # keep the tombstones
    for i in range(3):
        edit(corpus, i)
        index.update()
    store = index.store
    assert len(store.segment_names) > 1 and any(s.deleted for s in store.manifest.segments)
    tokens = ["ماس", "الح", "ال", "في"]
    every = store.bm25_scores(tokens)
    ranked = sorted(every.items(), key=lambda kv: -kv[1])
    ids = sorted(every)
    allowed = np.asarray(ids[::3], dtype=np.int64)
    for k in (1, 5, 40, len(every) + 10):
        hits = store.bm25_search(tokens, k, scores_of=ids[:7] + [10**9])
        assert hits.top == ranked[:k]
        assert hits.scores == {**{i: every[i] for i in ids[:7]}, **dict(ranked[:k])}
        chosen = [(i, s) for i, s in ranked if i in set(allowed.tolist())][:k]
        assert store.bm25_search(tokens, k, allowed).top == chosen
    assert len({s for _, s in ranked}) < len(ranked)  # ties exist, so their order is tested
    assert store.bm25_search(["لا-يوجد"], 5).top == []
