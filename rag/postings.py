"""BM25 postings of one segment: raw term frequencies, so scores stay exact across segments.

bm25s bakes a corpus's idf and average length into its stored scores, which would make each
segment's scores depend on the segment. Here a segment keeps only what does not: per term the
rows it occurs in and how often, per row its chunk id and length. `Store` sums document
frequencies, live chunk counts and lengths over all segments (tombstoned rows left out) and
scores with those, which is BM25 over the live chunks exactly (Lucene idf, as bm25s computes).

Files of a postings folder: vocab.json (term of each term id), indptr.npy (term id → slice of
rows/tf), rows.npy, tf.npy, lengths.npy and chunk_ids.npy (one per row, ascending).
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

BM25_K1, BM25_B = 1.2, 0.75
FILES = ("vocab.json", "indptr.npy", "rows.npy", "tf.npy", "lengths.npy", "chunk_ids.npy")


@dataclass(frozen=True)
class Postings:
    vocab: dict[str, int]
    indptr: np.ndarray  # int64, len(vocab) + 1
    rows: np.ndarray  # int32: the rows (indexes into chunk_ids) of each term, by term
    tf: np.ndarray  # float32, aligned with rows
    lengths: np.ndarray  # float32: tokens per row
    chunk_ids: np.ndarray  # int64, ascending

    @classmethod
    def build(cls, rows: Iterable[tuple[int, str, str]],
              lexical_tokens: Callable[[str, str], list[str]]) -> Postings:
        """From (chunk_id, title, text) rows in ascending chunk_id order."""
        vocab: dict[str, int] = {}
        # compact arrays, not lists: a million chunks have ~10⁸ (term, row) pairs
        terms, row_of, counts = array("i"), array("i"), array("i")
        chunk_ids, lengths = array("q"), array("i")
        for row, (chunk_id, title, text) in enumerate(rows):
            tokens = lexical_tokens(title, text) or [""]
            chunk_ids.append(chunk_id)
            lengths.append(len(tokens))
            counted = Counter(tokens)
            terms.extend(vocab.setdefault(token, len(vocab)) for token in counted)
            row_of.extend(repeat(row, len(counted)))
            counts.extend(counted.values())
        term_ids = np.frombuffer(terms, dtype=np.int32) if terms else np.zeros(0, dtype=np.int32)
        order = np.argsort(term_ids, kind="stable")  # rows stay ascending within a term
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_ids, minlength=len(vocab)), out=indptr[1:])
        return cls(vocab, indptr, _array(row_of, np.int32)[order], _array(counts, np.int32)[order].astype(np.float32),
                   _array(lengths, np.int32).astype(np.float32), _array(chunk_ids, np.int64))

    def save(self, folder: Path) -> None:
        folder.mkdir()
        (folder / "vocab.json").write_text(json.dumps(list(self.vocab), ensure_ascii=False), encoding="utf-8")
        for name in FILES[1:]:
            np.save(folder / name, getattr(self, name.removesuffix(".npy")))

    @classmethod
    def load(cls, folder: Path) -> Postings:
        """Raises OSError or ValueError when a file is missing or unreadable."""
        terms = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        # mapped, not read: a search touches only the postings of its query terms
        arrays = {name.removesuffix(".npy"): np.load(folder / name, mmap_mode="r", allow_pickle=False)
                  for name in FILES[1:]}
        postings = cls({term: i for i, term in enumerate(terms)}, **arrays)
        if (len(postings.indptr) != len(terms) + 1 or postings.indptr[-1] != len(postings.rows)
                or len(postings.tf) != len(postings.rows) or len(postings.lengths) != len(postings.chunk_ids)):
            raise ValueError(f"the arrays in {folder} do not fit together")
        return postings

    def document_frequency(self, token: str, live: np.ndarray | None) -> int:
        term = self.vocab.get(token)
        if term is None:
            return 0
        start, end = self.indptr[term], self.indptr[term + 1]
        return int(end - start) if live is None else int(live[self.rows[start:end]].sum())

    def length_norm(self, average_length: float) -> np.ndarray:
        """k1 · (1 − b + b · length / average length) of every row."""
        return (BM25_K1 * ((1 - BM25_B) + BM25_B * self.lengths / average_length)).astype(np.float32)

    def scores(self, weighted: list[tuple[str, float]], average_length: float,
               norm: np.ndarray | None = None) -> np.ndarray:
        """BM25 of every row for (token, idf) pairs (a repeated query token counts each time);
        `norm`: `length_norm(average_length)`, when the caller keeps it."""
        total = np.zeros(len(self.chunk_ids), dtype=np.float32)
        norm = self.length_norm(average_length) if norm is None else norm
        for token, idf in weighted:
            term = self.vocab.get(token)
            if term is None:
                continue
            start, end = self.indptr[term], self.indptr[term + 1]
            rows, tf = self.rows[start:end], self.tf[start:end]
            part = norm[rows]  # idf · tf / (norm + tf), in place: a term can have 10⁶ rows
            part += tf
            np.divide(tf, part, out=part)
            part *= np.float32(idf)
            total[rows] += part
        return total


def _array(values: array, dtype) -> np.ndarray:
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


def lucene_idf(n_chunks: int, frequency: int) -> float:
    return math.log(1 + (n_chunks - frequency + 0.5) / (frequency + 0.5))
