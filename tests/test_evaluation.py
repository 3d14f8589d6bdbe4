from __future__ import annotations

import json

import pytest

from rag.errors import ConfigError
from rag.evaluation import contains_answer, evaluate, load_dataset, prepare_index, retrieval_metrics

from .conftest import DEV_SET, SEEDS, cli_env, run_cli

TINY = {"data": [
    {"title": "الطقس", "paragraphs": [
        {"context": "هطلت أمطار غزيرة على مدينة الإسكندرية يوم الثلاثاء وأغلقت الطرق الساحلية.",
         "qas": [{"id": "q1", "question": " - أين هطلت الأمطار الغزيرة يوم الثلاثاء؟ ",
                  "answers": [{"text": "الإسكندرية", "answer_start": 23}]}]},
        {"context": "أعلنت وزارة الزراعة أن محصول القمح هذا العام بلغ تسعة ملايين طن.",
         "qas": [{"id": "q2", "question": "كم بلغ محصول القمح هذا العام؟",
                  "answers": [{"text": "تسعة ملايين طن", "answer_start": 44}]}]}]},
    {"title": "الرياضة", "paragraphs": [
        {"context": "فاز نادي الزمالك بكأس السوبر الأفريقي بعد الفوز بركلات الترجيح في الرياض.",
         "qas": [{"id": "q3", "question": "Which club won the African Super Cup?",
                  "answers": [{"text": "الزمالك", "answer_start": 4}]}]}]},
]}
DISTRACTORS = {"data": [{"title": "متفرقات", "paragraphs": [
    {"context": "افتتح متحف جديد للفن الحديث في مدينة تونس.", "qas": []},
    {"context": "هطلت أمطار غزيرة على مدينة الإسكندرية يوم الثلاثاء وأغلقت الطرق الساحلية.", "qas": []}]}]}


def test_metrics_from_known_ranks():
    m = retrieval_metrics([1, 2, None, 6], [10.0, 20.0, 30.0, 40.0])
    assert m["recall@1"] == 0.25 and m["recall@5"] == 0.5 and m["recall@10"] == 0.75
    assert m["mrr@10"] == round((1 + 1 / 2 + 1 / 6) / 4, 4)
    assert m["p50_ms"] == 25.0 and m["p95_ms"] == 40.0


def test_tiny_squad_dataset_end_to_end(tmp_path, settings):
    dataset_path = tmp_path / "tiny.json"
    dataset_path.write_text(json.dumps(TINY, ensure_ascii=False), encoding="utf-8")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(DISTRACTORS, ensure_ascii=False), encoding="utf-8")
    dataset = load_dataset(dataset_path, [extra])
    assert [q.question for q in dataset.questions][0] == "أين هطلت الأمطار الغزيرة يوم الثلاثاء؟"
    assert len(dataset.documents) == 4  # the duplicate distractor paragraph is merged
    index = prepare_index(dataset, settings, notify=lambda m: None)
    result = evaluate(dataset, index, k=10)
    assert result["n_questions"] == 3 and result["n_documents"] == 4
    assert result["recall@1"] == 1.0 and result["mrr@10"] == 1.0
    assert result["by_language"]["en"]["n_questions"] == 1
    assert result["by_language"]["ar"]["recall@1"] == 1.0
    assert result["p50_ms"] > 0


def test_jsonl_needs_a_corpus():
    with pytest.raises(ConfigError, match="--corpus"):
        load_dataset(DEV_SET)


def test_cli_eval_on_the_dev_set(settings):
    proc = run_cli("eval", str(DEV_SET), "--corpus", str(SEEDS), "--json", env=cli_env(settings))
    result = json.loads(proc.stdout)
    assert result["n_questions"] == 11 and result["n_unanswerable"] == 2
    assert result["recall@3"] == 1.0  # every answerable gold article in the top 3, English included
    assert set(result["by_language"]) == {"ar", "en"}
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10", "p50_ms", "p95_ms", "n_documents"):
        assert key in result


@pytest.mark.parametrize("path", sorted(DEV_SET.parent.glob("seeds_*.jsonl")), ids=lambda p: p.name)
def test_every_seeds_question_s_gold_answer_is_in_its_gold_article(path):
    """A gold answer that its article does not hold would score every answer as wrong."""
    dataset = load_dataset(path, [SEEDS])
    assert dataset.questions, path
    for q in dataset.questions:
        if not q.answerable or not q.answers:
            continue
        texts = [(SEEDS / doc).read_text(encoding="utf-8") for doc in q.gold_docs]
        assert texts, q.qid
        assert any(contains_answer(text, answer) for text in texts for answer in q.answers), q.qid
