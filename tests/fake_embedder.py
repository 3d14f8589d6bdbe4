"""A stand-in for the embedding model: vectors from a hash of the text, so the bookkeeping and
scale tests run without the model. Same interface as `rag.embeddings.Embedder` where the index
uses it."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEmbedder:
    dimension = 32
    loaded = True

    def identity(self) -> dict[str, str | int]:
        return {"name": "hash-embedder", "dimension": self.dimension}

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def embed_passages_with_spans(self, texts, spans, progress=False):
        vectors = np.vstack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)
        sentences = [np.vstack([self._vector(t[s:e]) for s, e in spans_of]) if spans_of
                     else np.zeros((0, self.dimension), np.float32) for t, spans_of in zip(texts, spans)]
        return vectors, sentences

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)
