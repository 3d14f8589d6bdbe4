from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.arabic import sentence_spans
from rag.chunking import chunk_document, embedding_text, sentence_units
from rag.documents import content_hash, load_paths
from rag.tokens import count_tokens, encoding
from rag.types import Document

from .conftest import SEEDS


def make_doc(text: str) -> Document:
    return Document(doc_id="d", title="t", text=text, sha256=content_hash("t", text, None, None),
                    source_path="d")


def test_o200k_comes_from_litellm_files_offline():
    assert encoding().name == "o200k_base"
    assert count_tokens("الحرب الأهلية") > 0


ALPHABET = st.sampled_from(list("ابتثجحخدذرسشصضطظعغفقكلمنهوي") + list("abc ") + [
    " ", " ", " ", "\n", ".", "،", ",", "؟", "!", "؛", "…", "”", "3", "\u064e", "\u0640"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=ALPHABET, min_size=0, max_size=1500),
       budget=st.integers(min_value=12, max_value=120), overlap=st.integers(min_value=0, max_value=2))
def test_chunks_are_exact_slices_within_budget(text, budget, overlap):
    doc = make_doc(text)
    chunks = chunk_document(doc, budget, overlap)
    for chunk in chunks:
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        words_fit = all(count_tokens(w) <= budget for w in chunk.text.split())
        if words_fit:
            assert chunk.n_tokens <= budget + 2  # joining whitespace may add a token or two
    # every non-space character is in some chunk, in order
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(a.start < b.start for a, b in zip(chunks, chunks[1:]))


def test_arabic_sentence_punctuation_splits_a_single_line():
    text = "قال ماسك إن الحرب حتمية. ورد المتحدث؟ نعم! ثم؛ انتهى الأمر… وبعد ذلك\nسطر جديد"
    parts = [text[s:e] for s, e in sentence_spans(text)]
    assert parts == ["قال ماسك إن الحرب حتمية.", "ورد المتحدث؟", "نعم!", "ثم؛",
                     "انتهى الأمر…", "وبعد ذلك", "سطر جديد"]


def test_decimals_and_initials_do_not_end_sentences():
    text = "ارتفع السهم 3.5 بالمئة في U.S. markets اليوم. جملة ثانية."
    assert len(sentence_spans(text)) == 2


def test_long_sentences_are_split_at_commas():
    clause = "وقال المسؤول إن المنصات يجب أن تتحمل المسؤولية، "
    text = clause * 30 + "وانتهى."
    units = sentence_units(text, 60)
    assert len(units) > 3
    assert all(count_tokens(text[s:e]) <= 60 for s, e in units)
    assert all(text[s:e].endswith("،") for s, e in units[:-1])


def test_seed_002_single_line_is_chunked_by_sentences():
    doc = next(d for d in load_paths([SEEDS]).documents if d.doc_id.startswith("002"))
    assert "\n" not in doc.text and len(doc.text) > 2800
    chunks = chunk_document(doc, 160, 1)
    assert len(chunks) >= 4
    assert all(doc.text[c.start:c.end] == c.text for c in chunks)
    assert max(c.n_tokens for c in chunks) <= 160


def test_overlap_repeats_the_last_sentence():
    text = " ".join(f"هذه الجملة رقم {i} في النص." for i in range(40))
    chunks = chunk_document(make_doc(text), 40, 1)
    for a, b in zip(chunks, chunks[1:]):
        last_sentence_of_a = a.text.rsplit(".", 2)[-2].strip()
        assert b.text.startswith(last_sentence_of_a)
    no_overlap = chunk_document(make_doc(text), 40, 0)
    assert all(a.end <= b.start for a, b in zip(no_overlap, no_overlap[1:]))


def test_seed_chunks_stay_well_under_the_model_limit(embedder):
    for doc in load_paths([SEEDS]).documents:
        for chunk in chunk_document(doc, 160, 1):
            text = embedding_text(doc.title, chunk.text, True)
            assert embedder.count_tokens(text) <= 480, (doc.doc_id, chunk.ordinal)


def test_embedding_text_adds_title_once():
    assert embedding_text("عنوان", "عنوان\nنص", True) == "عنوان\nنص"
    assert embedding_text("عنوان", "نص", True) == "عنوان\nنص"
    assert embedding_text("عنوان", "نص", False) == "نص"
