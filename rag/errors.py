"""The one exception family of the library. Every message says what to do about it."""

from __future__ import annotations


class RagError(Exception):
    """Base class: anything the library raises on purpose."""


class ConfigError(RagError):
    """A setting, settings file or environment variable has an unusable value."""


class ModelError(RagError):
    """The embedding model cannot be provisioned or loaded."""


class DocumentError(RagError):
    """An input path or document cannot be read."""


class IndexNotFoundError(RagError):
    """There is no index at the given directory."""


class StoreError(RagError):
    """The index on disk is unusable (corrupt, from another format version, locked)."""


class LLMError(RagError):
    """The configured LLM provider failed (no key, unreachable, rate limited, bad model)."""

    def __init__(self, message: str, model: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason or message
