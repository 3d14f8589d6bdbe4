"""Approximate vector search in large segments (IVF over 8-bit codes, exact re-scoring): real
FAISS and SQLite on disk, made approximate at a small size by `approximate_search_from`."""

from __future__ import annotations

import numpy as np
import pytest

from rag.api import Index
from rag.config import Settings

from .conftest import SEEDS, dev_questions
from .fake_embedder import HashEmbedder


def build(tmp_path, name: str, approximate_from: int) -> Index:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        for path in SEEDS.iterdir():
            (corpus / path.name).write_bytes(path.read_bytes())
        for n in range(40):  # more rows than the seeds' ~100 chunks, so IVF has lists to choose from
            (corpus / f"extra-{n:02d}.txt").write_text(
                f"خبر رقم {n}\n" + "\n".join(f"جملة {n} {m} عن المنصات والقوانين رقم {n * m}." for m in range(30)),
                encoding="utf-8")
    settings = Settings(index_dir=tmp_path / name, home=tmp_path / "home", approximate_search_from=approximate_from)
    index = Index(settings, HashEmbedder())
    index.update([corpus])
    return index


@pytest.fixture()
def pair(tmp_path):
    exact, approximate = build(tmp_path, "exact", 10**9), build(tmp_path, "approximate", 1)
    yield exact, approximate
    exact.close()
    approximate.close()


def segment(index: Index):
    (only,) = index.store._segments
    return only


def test_a_large_segment_is_searched_approximately_with_exact_scores(pair):
    exact, approximate = pair
    assert not segment(exact).approximate and segment(approximate).approximate
    store = approximate.store
    ids = store.chunk_ids_of(store.document_ids())
    assert np.array_equal(store.vectors_of(ids), exact.store.vectors_of(ids))  # float32, not the 8-bit codes
    rng = np.random.default_rng(1)
    for chunk_id in rng.choice(ids, 10, replace=False):
        query = exact.store.vectors_of([chunk_id])[0]
        found = store.dense_search(query, 5)
        assert found[0][0] == chunk_id and found[0][1] == pytest.approx(1.0, abs=1e-5)
        truth = dict(exact.store.dense_search(query, len(ids)))
        for other, score in found:
            assert score == pytest.approx(truth[other], abs=1e-6)  # re-scored, not the codes' estimate


def test_the_approximate_ranking_keeps_most_of_the_exact_one(pair):
    exact, approximate = pair
    rng = np.random.default_rng(2)
    overlaps = []
    for _ in range(20):
        query = rng.standard_normal(HashEmbedder.dimension).astype(np.float32)
        query /= np.linalg.norm(query)
        truth = {i for i, _ in exact.store.dense_search(query, 10)}
        found = {i for i, _ in approximate.store.dense_search(query, 10)}
        overlaps.append(len(truth & found) / 10)
    assert np.mean(overlaps) >= 0.8


def test_tombstones_and_filters_hold_in_an_approximate_segment(pair, tmp_path):
    exact, approximate = pair
    doc = "extra-07.txt"
    (tmp_path / "corpus" / doc).unlink()
    for index in pair:
        index.update()
    store = approximate.store
    assert segment(approximate).approximate and len(store.segment_names) == 1  # a tombstone, no rewrite
    assert not len(store.chunk_ids_of([doc]))
    query = HashEmbedder().embed_query("جملة 7 3 عن المنصات والقوانين رقم 21.")
    assert all(store.chunks([i])[i].doc_id != doc for i, _ in store.dense_search(query, 50))
    allowed = store.chunk_ids_of(["extra-03.txt", "extra-04.txt"])
    found = store.dense_search(query, 5, allowed)
    truth = exact.store.dense_search(query, 5, exact.store.chunk_ids_of(["extra-03.txt", "extra-04.txt"]))
    assert [i for i, _ in found] == [i for i, _ in truth]  # a selective filter is searched exactly


def test_answers_on_the_seeds_are_the_same_from_an_approximate_index(seed_index, embedder, settings):
    approximate = Index(settings.replace(approximate_search_from=1), embedder=embedder)
    approximate.update([SEEDS])
    try:
        assert segment(approximate).approximate
        for question in dev_questions():
            got, want = approximate.ask(question["question"]), seed_index.ask(question["question"])
            assert (got.answer, got.refused, got.fact) == (want.answer, want.refused, want.fact)
            assert [(c.doc_id, c.start) for c in got.citations] == [(c.doc_id, c.start) for c in want.citations]
    finally:
        approximate.close()
