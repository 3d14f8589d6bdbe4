"""Hybrid retrieval on real indexes (real model, FAISS, BM25), plus selection logic on fakes."""

from __future__ import annotations

from rag.api import Index
from rag.retrieval import SAME_DOCUMENT_PENALTY, Retriever, _Candidate
from rag.store import BM25_DIR, SEGMENTS
from rag.types import StoredChunk

from .conftest import dev_questions

FINE_ARTICLE = (
    "هيئة ألمانية تفرض غرامة على منصة فيديو\n"
    "فرضت هيئة تنظيم الإعلام الألمانية غرامة قدرها سبعة ملايين يورو على منصة بث مرئي "
    "لأنها تأخرت في حذف منشورات تحرض على الكراهية.\n")


def test_dev_questions_find_their_article_in_the_top_3(seed_index):
    for row in dev_questions():
        if not row["answerable"]:
            continue
        doc_ids = [p.doc_id for p in seed_index.search(row["question"], k=3)]
        assert row["doc"] in doc_ids, (row["question"], doc_ids)


def test_passages_are_exact_document_slices(seed_index):
    store = seed_index.store
    for passage in seed_index.search("ماذا قال ماسك عن الحرب الأهلية؟", k=5):
        document = store.document(passage.doc_id)
        assert document.text[passage.start:passage.end] == passage.text


def test_english_question_ranks_like_dense(seed_index):
    question = "What did Musk say about civil war?"
    retrieval = Retriever(seed_index.store, seed_index.embedder).retrieve(question, k=5)
    assert retrieval.query_coverage < 0.2  # no lexical evidence in an Arabic corpus
    hybrid = [p.doc_id for p in retrieval.passages]
    dense = [p.doc_id for p in seed_index.search(question, k=5, mode="dense")]
    assert hybrid[:3] == dense[:3]
    assert hybrid[0] == "000_4180ecd25a632971.txt"


def test_hybrid_beats_each_side_on_a_lexical_question(seed_index):
    question = "من هو نائب رئيس شؤون النزاهة في فيسبوك؟"
    hybrid = seed_index.search(question, k=3)
    assert hybrid[0].doc_id == "001_4cc70f0e583a2e76.txt"
    assert hybrid[0].bm25_score is not None and hybrid[0].dense_score > 0.7
    assert "غاي روزن" in hybrid[0].text


def test_relevance_is_calibrated_for_refusal(seed_index):
    from rag.answer import REFUSAL_THRESHOLD

    for question in ("ما الصحيفة التي كشفت تفاصيل المواجهة بين ماسك ومركز مكافحة الكراهية؟",
                     "Which newspaper reported on Musk's fight with the Center for Countering Digital Hate?"):
        assert seed_index.search(question, k=3)[0].score > 0.8, question
    for question in ("ما هو سعر سهم تسلا اليوم؟", "Who won the 2022 football World Cup?",
                     "ما هي عاصمة أستراليا؟", "When was the Eiffel Tower built?"):
        assert max(p.score for p in seed_index.search(question, k=5)) < REFUSAL_THRESHOLD / 2, question


def test_bm25_follows_updates(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    question = "كم بلغت الغرامة التي فرضتها هيئة تنظيم الإعلام الألمانية على منصة البث؟"
    assert all(p.doc_id != "fine.txt" for p in index.search(question, k=5, mode="bm25"))
    (corpus / "fine.txt").write_text(FINE_ARTICLE, encoding="utf-8")
    index.update([corpus])
    assert index.search(question, k=5, mode="bm25")[0].doc_id == "fine.txt"
    (corpus / "fine.txt").unlink()
    index.update([corpus])
    assert all(p.doc_id != "fine.txt" for p in index.search(question, k=5, mode="bm25"))
    store = index.store
    assert store.segment_names and all((store.index_dir / SEGMENTS / name / BM25_DIR / "chunk_ids.npy").is_file()
                                       for name in store.segment_names)


def _candidate(doc: str, ordinal: int, fused: float) -> _Candidate:
    chunk = StoredChunk(chunk_id=hash((doc, ordinal)) % 10_000, doc_id=doc, title=doc, ordinal=ordinal,
                        start=ordinal * 100, end=ordinal * 100 + 120, text="x")
    return _Candidate(chunk=chunk, fused=fused, dense=0.8, bm25=None)


def test_one_article_cannot_fill_every_slot_when_others_come_close():
    long_article = [_candidate("long", i, 0.9 - 0.01 * i) for i in range(0, 20, 2)]  # not adjacent
    others = [_candidate(f"other{i}", 0, 0.8 - 0.01 * i) for i in range(4)]
    groups = Retriever._select(long_article + others, 5)
    docs = [g[0].chunk.doc_id for g in groups]
    assert docs[0] == "long" and len(set(docs)) >= 3


def test_the_only_source_may_fill_the_list():
    long_article = [_candidate("long", i, 0.9 - 0.01 * i) for i in range(0, 20, 2)]
    weak = [_candidate("weak", 0, 0.9 - 3 * SAME_DOCUMENT_PENALTY)]
    docs = [g[0].chunk.doc_id for g in Retriever._select(long_article + weak, 3)]
    assert docs == ["long", "long", "long"]


def test_adjacent_chunks_merge_into_one_passage():
    groups = Retriever._select([_candidate("a", 3, 0.9), _candidate("a", 4, 0.85), _candidate("b", 0, 0.5)], 2)
    assert [[c.chunk.ordinal for c in g] for g in groups] == [[3, 4], [0]]


def test_merged_passages_are_exact_slices(seed_index):
    retriever = Retriever(seed_index.store, seed_index.embedder)
    for question in ("ماذا قال ماسك عن الحرب الأهلية؟", "ما هي مبادرة نداء كرايست تشيرش؟"):
        for passage in retriever.search(question, k=8):
            assert seed_index.store.document(passage.doc_id).text[passage.start:passage.end] == passage.text
