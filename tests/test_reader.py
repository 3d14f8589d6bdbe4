"""The answer reader with its shipped weights, both backends, and the answer it feeds: the real
model, the real seed index."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import ModelError
from rag.reader import WEIGHTS, Reader, _length_groups

from .conftest import SEEDS

QUESTION = "ما الصحيفة التي كشفت تفاصيل المواجهة بين ماسك ومركز مكافحة الكراهية الرقمية؟"
SENTENCES = [
    "وكان ماسك قد رفع دعوى قضائية ضد المركز العام الماضي.",
    "وكشفت صحيفة «التليجراف» البريطانية تفاصيل المواجهة بين الملياردير والمركز.",
    "ويقول المركز إن المنصة صارت أكثر تسامحًا مع خطاب الكراهية.",
]


@pytest.fixture(scope="module")
def readers(model_dir):
    return Reader(model_dir, WEIGHTS, backend="torch"), Reader(model_dir, WEIGHTS, backend="onnx")


def test_the_shipped_reader_finds_the_sentence_and_the_words(readers):
    torch_reader, _ = readers
    assert torch_reader.available and "fold 0" in torch_reader.metadata["trained_on"]
    readings = torch_reader.read(QUESTION, SENTENCES)
    best = int(np.argmax([r.score for r in readings]))
    assert best == 1 and readings[1].score > 0 > max(readings[0].score, readings[2].score)
    assert "التليجراف" in SENTENCES[1][readings[1].start:readings[1].end]
    assert len(SENTENCES[1][readings[1].start:readings[1].end].split()) <= 4


def test_english_question_over_arabic_sentences(readers):
    torch_reader, _ = readers
    readings = torch_reader.read("Which newspaper revealed the details of the confrontation?", SENTENCES)
    assert int(np.argmax([r.score for r in readings])) == 1


def test_onnx_export_gives_the_torch_results(readers, model_dir):
    torch_reader, onnx_reader = readers
    expected = torch_reader.read(QUESTION, SENTENCES)
    got = onnx_reader.read(QUESTION, SENTENCES)
    assert [(r.start, r.end) for r in got] == [(r.start, r.end) for r in expected]
    assert np.allclose([r.score for r in got], [r.score for r in expected], atol=1e-3)
    assert list((model_dir / "reader-onnx").glob("reader-*.onnx"))  # built once, kept for next time
    again = Reader(model_dir, WEIGHTS, backend="onnx")  # loads the export without the torch model
    assert [(r.start, r.end) for r in again.read(QUESTION, SENTENCES)] == [(r.start, r.end) for r in expected]


def test_sentences_of_very_different_lengths_read_as_they_would_alone(readers):
    """The reader batches sentences of similar length together; each must still get its own
    reading, in the order given."""
    _, onnx_reader = readers
    long = SENTENCES[2] + " " + " ".join(["وأضاف المركز أن المنصة لم ترد على طلبات التعليق المتكررة."] * 6)
    texts = [long, SENTENCES[1], "ماسك.", SENTENCES[0], long + " وانتهى."]
    together = onnx_reader.read(QUESTION, texts)
    alone = [onnx_reader.read(QUESTION, [text])[0] for text in texts]
    assert [(r.start, r.end) for r in together] == [(r.start, r.end) for r in alone]
    assert np.allclose([r.score for r in together], [r.score for r in alone], atol=1e-3)


def test_length_groups_keep_every_sentence_once_and_similar_lengths_together():
    lengths = [190, 40, 45, 120, 41, 200, 48]
    groups = _length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in g) <= 1.25 * min(lengths[i] for i in g) for g in groups)
    assert len(groups) == 3  # 40–48, 120, 190–200


def test_weights_that_do_not_fit_say_how_to_rebuild(model_dir, tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "reader.safetensors"
    save_file({"encoder.layer.11.nonsense.weight": np.zeros((2, 2), dtype=np.float32),
               "qa_head.weight": np.zeros((2, 384), dtype=np.float32),
               "qa_head.bias": np.zeros(2, dtype=np.float32)}, str(bad))
    with pytest.raises(ModelError, match="train_reader.py"):
        Reader(model_dir, bad, backend="torch").read(QUESTION, SENTENCES)


def test_the_answer_states_the_fact_with_its_offsets(seed_index):
    answer = seed_index.ask("من أسس مركز مكافحة الكراهية الرقمية؟")
    assert answer.fact is not None and answer.fact.text == "مورجان ماكسويني"
    document = seed_index.store.document(answer.fact.doc_id).text
    assert document[answer.fact.start:answer.fact.end] == answer.fact.text
    assert answer.answer.startswith("الإجابة: ") and f"[{answer.fact.n}]" in answer.answer.split("\n")[0]
    assert any(c.n == answer.fact.n and c.start <= answer.fact.start and answer.fact.end <= c.end
               for c in answer.citations)  # the phrase lies in a quoted sentence


def test_no_fact_line_for_a_why_question(seed_index):
    answer = seed_index.ask("لماذا انتقد المتحدث باسم رئيس الوزراء البريطاني تعليقات ماسك؟")
    assert answer.fact is None and not answer.answer.startswith("الإجابة")
    assert answer.citations


def test_without_reader_weights_the_answer_still_quotes(settings, embedder, tmp_path):
    from rag.api import Index

    index = Index(settings.replace(reader_weights=tmp_path / "absent.safetensors"), embedder=embedder)
    assert index.reader is None
    index.update([SEEDS])
    answer = index.ask(QUESTION)
    assert answer.fact is None and answer.citations and not answer.refused
