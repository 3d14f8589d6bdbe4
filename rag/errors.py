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


class FilterError(RagError):
    """A search filter (since, until, source) has an unusable value or matches no document."""


class IndexNotFoundError(RagError):
    """There is no index at the given directory."""


class StoreError(RagError):
    """The index on disk is unusable (corrupt, from another format version, locked)."""


class LLMError(RagError):
    """The configured LLM provider failed (no key, unreachable, rate limited, bad model).

    `kind` names the failure — no_key, auth, unreachable, timeout, unknown_model, rate_limit or
    failed — and `values` fill its user-facing line (rag.prompts `llm_<kind>`); `detail` is the
    provider's own error, for whoever needs the technical cause."""

    def __init__(self, message: str, model: str = "", kind: str = "failed", detail: str = "",
                 values: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.kind = kind
        self.detail = detail or message
        self.values = dict(values or {})
