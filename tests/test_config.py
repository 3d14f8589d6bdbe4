from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import ConfigError


def test_precedence_defaults_file_env_arguments(tmp_path, monkeypatch):
    settings_file = tmp_path / "rag.toml"
    settings_file.write_text('chunk_tokens = 120\nk = 7\nllm_model = "ollama/qwen2.5"\n')
    monkeypatch.setenv("RAG_K", "9")
    settings = Settings.load(settings_file, index_dir="/tmp/x")
    assert settings.chunk_tokens == 120  # file
    assert settings.k == 9  # env beats file
    assert settings.index_dir == Path("/tmp/x")  # argument beats all
    assert settings.llm_model == "ollama/qwen2.5"
    assert Settings.load(settings_file, k=3).k == 3


def test_settings_file_from_env_and_rag_table(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text("[rag]\nembedding_model = \"/models/mine\"\n")
    monkeypatch.setenv("RAG_SETTINGS", str(path))
    assert Settings.load().embedding_model == "/models/mine"


@pytest.mark.parametrize(("env", "value", "fragment"), [
    ("RAG_CHUNK_TOKENS", "lots", "RAG_CHUNK_TOKENS"),
    ("RAG_K", "0", "must be positive"),
    ("RAG_TITLE_IN_PASSAGE", "maybe", "true or false"),
    ("RAG_SEARCH_MODE", "fuzzy", "hybrid, dense or bm25"),
])
def test_bad_values_name_the_variable(monkeypatch, env, value, fragment):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=fragment):
        Settings.load()


def test_unknown_setting_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("chunk_size = 3\n")
    with pytest.raises(ConfigError, match="unknown setting.*chunk_size"):
        Settings.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("k = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(broken)


def test_fingerprint_covers_index_settings_only(tmp_path):
    base = Settings(home=tmp_path)
    assert base.fingerprint() == base.replace(k=9, llm_model="x/y").fingerprint()
    assert base.fingerprint() != base.replace(chunk_tokens=100).fingerprint()
    assert base.fingerprint() != base.replace(embedding_model="other").fingerprint()
    assert base.fingerprint() != base.replace(title_in_passage=False).fingerprint()


def test_default_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings.load()
    assert settings.home == tmp_path / "sanad"
    assert settings.resolved_index_dir == tmp_path / "sanad" / "index"
    assert settings.models_dir == tmp_path / "sanad" / "models"


def test_embedding_backend_is_checked():
    with pytest.raises(ConfigError, match="expected auto, torch, onnx or onnx-int8"):
        Settings.load(embedding_backend="openvino")
