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
from collections.abc import Sequence
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
    """Loads on first use; `read` is safe to call from several threads."""

    def __init__(self, models_dir: Path, weights: Path = WEIGHTS, device: str = "cpu") -> None:
        self.models_dir = models_dir
        self.weights = weights
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, Any] | None = None

    @property
    def available(self) -> bool:
        return self.weights.is_file()

    def _model(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _load(self.models_dir, self.weights, self.device)
        return self._loaded

    @cached_property
    def metadata(self) -> dict[str, Any]:
        from safetensors import safe_open

        with safe_open(str(self.weights), framework="numpy") as fh:
            return json.loads((fh.metadata() or {}).get("reader", "{}"))

    def read(self, question: str, texts: Sequence[str]) -> list[Reading]:
        if not texts:
            return []
        import torch

        tokenizer, encoder, head = self._model()
        encoded = [encode(tokenizer, question, text) for text in texts]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), tokenizer.token_to_id("<pad>"), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (token_ids, _) in enumerate(encoded):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
            mask[row, :len(token_ids)] = 1
        with torch.inference_mode():
            hidden = encoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            logits = head(hidden).float().cpu().numpy()
        return [best_span(logits[row, :len(token_ids), 0], logits[row, :len(token_ids), 1], offsets)
                for row, (token_ids, offsets) in enumerate(encoded)]


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


def _load(models_dir: Path, weights: Path, device: str) -> tuple[Any, Any, Any]:
    if not weights.is_file():
        raise ModelError(f"the answer reader's weights {weights} are missing: reinstall the package "
                         "(or rebuild them with `python bench/train_reader.py`)")
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    from .provision import ensure_default_model

    base = ensure_default_model(models_dir)
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
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
