"""Question → ranked passages."""

from __future__ import annotations

from .embeddings import Embedder
from .store import Store
from .types import Passage

MODES = ("hybrid", "dense", "bm25")


class Retriever:
    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    def search(self, query: str, k: int = 5, mode: str = "dense") -> list[Passage]:
        query = query.strip()
        if not query or k <= 0:
            return []
        hits = self.store.dense_search(self.embedder.embed_query(query), k)
        rows = self.store.chunks(i for i, _ in hits)
        return [Passage(chunk_id=i, doc_id=rows[i].doc_id, title=rows[i].title, text=rows[i].text,
                        start=rows[i].start, end=rows[i].end, score=s, dense_score=s)
                for i, s in hits]
