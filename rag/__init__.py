"""Sanad: cited answers from Arabic news articles, offline.

    import rag
    rag.update(["seeds"])                       # build or refresh the index
    index = rag.open()                          # the default index directory
    for p in index.search("ماذا قال ماسك عن الحرب الأهلية؟"):
        print(p.score, p.title, p.text)
"""

from .answer import AnswerStream, AsyncAnswerStream
from .api import Index, ask, open, search, stream, update
from .config import Settings
from .errors import (
    ConfigError,
    DocumentError,
    FilterError,
    IndexNotFoundError,
    LLMError,
    ModelError,
    RagError,
    StoreError,
)
from .types import (
    Answer,
    Chunk,
    Citation,
    Counts,
    Document,
    Fact,
    Filters,
    IndexedDocument,
    Passage,
    RemovalReport,
    SourceView,
    UpdateReport,
)
from .uploads import Rejected, UploadResult

__all__ = [
    "Answer", "AnswerStream", "AsyncAnswerStream", "Chunk", "Citation", "ConfigError", "Counts", "Document",
    "DocumentError", "Fact", "FilterError", "Filters", "Index", "IndexNotFoundError", "IndexedDocument", "LLMError",
    "ModelError", "Passage", "RagError", "Rejected", "RemovalReport", "Settings", "SourceView", "StoreError",
    "UpdateReport", "UploadResult", "ask", "open", "search", "stream", "update",
]
