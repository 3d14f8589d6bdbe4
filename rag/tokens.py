"""Token counting with tiktoken's o200k_base, loaded from the copy litellm ships (never downloaded).

tiktoken fetches encodings from the network on first use and caches them under a SHA-1 of the
URL. litellm bundles those cache files; pointing TIKTOKEN_CACHE_DIR at them makes tiktoken load
locally. litellm itself is not imported here (that stays in `llm`): its files are only located.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

ENCODING_NAME = "o200k_base"
_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _litellm_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("tiktoken's o200k_base file comes from the litellm package: "
                          "run `pip install litellm`")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


@lru_cache(maxsize=1)
def encoding():
    import tiktoken

    cache_name = hashlib.sha1(_ENCODING_URL.encode()).hexdigest()
    candidates = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR"),
                  str(_litellm_tokenizer_dir())]
    for folder in filter(None, candidates):
        if (Path(folder) / cache_name).is_file():
            os.environ["TIKTOKEN_CACHE_DIR"] = folder
            return tiktoken.get_encoding(ENCODING_NAME)
    raise ConfigError(
        f"no local copy of tiktoken's {ENCODING_NAME} (file {cache_name}) in "
        f"{', '.join(filter(None, candidates))}: reinstall litellm, which ships it")


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))
