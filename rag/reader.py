"""The answer reader: which sentence answers the question, and which words of it are the answer.

A cross-encoder for extractive question answering: the question and one candidate sentence are
read together by multilingual-e5-small whose top layers were fine-tuned for span extraction
(`bench/train_reader.py`, on XQuAD-ar and ARCD; the weights in `rag/data/` are only the
fine-tuned layers and the span head, the rest is the default embedding model's own weights).
For each sentence it gives how much more likely an answer span is than "no answer here", and
the best span with its probability.

Input layout: ``<s> query: QUESTION </s> passage: SENTENCE </s>``; the span may only lie in the
sentence. Runs on CPU in a fraction of the embedding model's time per sentence (short inputs).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

WEIGHTS = Path(__file__).resolve().parent / "data" / "reader.safetensors"
MAX_QUESTION_TOKENS = 48
MAX_TOKENS = 192
MAX_ANSWER_TOKENS = 30
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "


@dataclass(frozen=True)
class Reading:
    """What the reader found in one sentence. Offsets are into the sentence text."""

    score: float  # best span logit minus the no-answer logit (> 0: an answer is likely here)
    start: int
    end: int
    probability: float  # P(start) · P(end) of the best span


class Reader:
    """Loads on first use; `read` is safe to call from several threads.

    backend: "onnx" runs an ONNX export of the reader with onnxruntime (built once from the torch
    model into `models_dir`; same logits, about twice as fast on CPU), "torch" the model itself.
    int8 quantization was measured and not used: it changed the best span in half the sentences."""

    def __init__(self, models_dir: Path, weights: Path = WEIGHTS, device: str = "cpu",
                 backend: str = "torch") -> None:
        self.models_dir = models_dir
        self.weights = weights
        self.device = device
        self.backend = backend
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None

    @property
    def available(self) -> bool:
        return self.weights.is_file()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> None:
        self._model()

    def _model(self) -> tuple[Any, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    exported = _onnx_path(self.models_dir, self.weights)
                    onnx = self.backend == "onnx" and _has_onnxruntime()
                    if onnx and exported.is_file():  # no torch model needed
                        self._loaded = _tokenizer(self.models_dir), _onnx_runner(exported)
                    else:
                        tokenizer, encoder, head = _load(self.models_dir, self.weights, self.device)
                        if onnx:
                            _export_onnx(encoder, head, exported)
                            self._loaded = tokenizer, _onnx_runner(exported)
                        else:
                            self._loaded = tokenizer, _torch_runner(encoder, head, self.device)
        return self._loaded

    @cached_property
    def metadata(self) -> dict[str, Any]:
        from safetensors import safe_open

        with safe_open(str(self.weights), framework="numpy") as fh:
            return json.loads((fh.metadata() or {}).get("reader", "{}"))

    def read(self, question: str, texts: Sequence[str]) -> list[Reading]:
        if not texts:
            return []
        tokenizer, run = self._model()
        encoded = [encode(tokenizer, question, text) for text in texts]
        readings: dict[int, Reading] = {}
        for group in _length_groups([len(token_ids) for token_ids, _ in encoded]):
            logits = run(*_batch(tokenizer, [encoded[i][0] for i in group]))
            for row, i in enumerate(group):
                n = len(encoded[i][0])
                readings[i] = best_span(logits[row, :n, 0], logits[row, :n, 1], encoded[i][1])
        return [readings[i] for i in range(len(encoded))]


def _length_groups(lengths: Sequence[int], ratio: float = 1.25) -> list[list[int]]:
    """Indices grouped into batches of similar length, the longest at most `ratio` × the shortest.
    One padded batch of a 40- and a 190-token sentence computes 190 tokens for both; on the held-out
    questions this cut the reader's time by about a tenth, with the same logits."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and lengths[i] <= ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _batch(tokenizer: Any, rows: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), tokenizer.token_to_id("<pad>"), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


def _torch_runner(encoder: Any, head: Any, device: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            hidden = encoder(input_ids=torch.from_numpy(ids).to(device),
                             attention_mask=torch.from_numpy(mask).to(device)).last_hidden_state
            return head(hidden).float().cpu().numpy()
    return run


def encode(tokenizer: Any, question: str, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the pair and, per token, its [start, end) in `text` ((-1, -1) outside it)."""
    query = tokenizer.encode(QUERY_PREFIX + question)
    passage = tokenizer.encode(PASSAGE_PREFIX + text)
    eos = query.ids[-1]
    question_ids = query.ids[:MAX_QUESTION_TOKENS - 1] + [eos] if len(query.ids) > MAX_QUESTION_TOKENS else query.ids
    room = MAX_TOKENS - len(question_ids)
    passage_ids, passage_offsets = passage.ids[1:][:room], passage.offsets[1:][:room]
    passage_ids[-1] = eos
    shift = len(PASSAGE_PREFIX)
    offsets = [(-1, -1)] * len(question_ids) + [
        (a - shift, b - shift) if b > a and a >= shift else (-1, -1) for a, b in passage_offsets[:-1]] + [(-1, -1)]
    return question_ids + passage_ids, offsets


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[tuple[int, int]]) -> Reading:
    """The highest-scoring span inside the sentence, at most MAX_ANSWER_TOKENS long."""
    inside = np.asarray([a >= 0 for a, _ in offsets])
    null = float(start_logits[0] + end_logits[0])
    if not inside.any():
        return Reading(-1e4, 0, 0, 0.0)
    starts = np.where(inside, start_logits, -1e4)
    ends = np.where(inside, end_logits, -1e4)
    scores = starts[:, None] + ends[None, :]
    n = len(offsets)
    allowed = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), MAX_ANSWER_TOKENS)
    scores = np.where(allowed, scores, -1e9)
    first, last = divmod(int(scores.argmax()), n)
    start_p = _softmax(start_logits)[first]
    end_p = _softmax(end_logits)[last]
    return Reading(float(scores[first, last]) - null, offsets[first][0], offsets[last][1], float(start_p * end_p))


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def _tokenizer(models_dir: Path) -> Any:
    from .provision import ensure_default_model, load_tokenizer

    return load_tokenizer(ensure_default_model(models_dir) / "tokenizer.json")


def _load(models_dir: Path, weights: Path, device: str) -> tuple[Any, Any, Any]:
    if not weights.is_file():
        raise ModelError(f"the answer reader's weights {weights} are missing: reinstall the package "
                         "(or rebuild them with `python bench/train_reader.py`)")
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from .provision import ensure_default_model

    base = ensure_default_model(models_dir)
    tokenizer = _tokenizer(models_dir)
    config = BertConfig.from_pretrained(str(base))
    encoder = BertModel(config, add_pooling_layer=False)
    state = load_file(str(base / "model.safetensors"))
    tuned = load_file(str(weights))
    head = torch.nn.Linear(config.hidden_size, 2)
    head.load_state_dict({"weight": tuned.pop("qa_head.weight").float(), "bias": tuned.pop("qa_head.bias").float()})
    state.update({name: tensor.float() for name, tensor in tuned.items()})
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or [u for u in unexpected if not u.startswith("pooler.")]:
        raise ModelError(f"the answer reader's weights {weights} do not fit the embedding model at {base}: "
                         "rebuild them with `python bench/train_reader.py`")
    encoder.eval().to(device)
    head.eval().to(device)
    return tokenizer, encoder, head




def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _onnx_path(models_dir: Path, weights: Path) -> Path:
    """Where the ONNX export of these weights is kept: next to the provisioned models, named by
    the weights' hash (a retrained reader gets a new export)."""
    import hashlib

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else "missing"
    return models_dir / "reader-onnx" / f"reader-{digest}.onnx"


def _onnx_runner(path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return run


def _export_onnx(encoder: Any, head: Any, path: Path) -> None:
    import torch

    from .embeddings import export_onnx

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            return self.head(hidden)

    previous = encoder.config._attn_implementation
    encoder.config._attn_implementation = "eager"  # exports faithfully; sdpa does not
    try:
        export_onnx(Logits().eval(), path, "logits")
    finally:
        encoder.config._attn_implementation = previous
