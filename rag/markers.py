"""The [n] markers that cite passages in an answer's text.

A bracketed number inside a quoted sentence belongs to the article (Wikipedia's "[3]"), not to
the answer: `find_markers` skips those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MARKER = re.compile(r"\[\s*(\d+(?:\s*[,،]\s*\d+)*)\s*\]")


@dataclass(frozen=True)
class Marker:
    """One [n] or [n, m] of an answer: text[start:end], citing `numbers`."""

    start: int
    end: int
    numbers: tuple[int, ...]


def marker_numbers(match: re.Match) -> list[int]:
    return [int(x) for x in re.split(r"[,،]\s*", match.group(1))]


def quoted_spans(text: str, quotes: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of every occurrence of every quote in `text`."""
    spans = []
    for quote in quotes:
        if not quote:
            continue
        at = text.find(quote)
        while at >= 0:
            spans.append((at, at + len(quote)))
            at = text.find(quote, at + 1)
    return spans


def find_markers(text: str, quotes: Sequence[str]) -> list[Marker]:
    """The answer's own markers, in text order: those outside the quoted sentences."""
    inside = quoted_spans(text, quotes)
    return [Marker(m.start(), m.end(), tuple(marker_numbers(m))) for m in MARKER.finditer(text)
            if not any(a <= m.start() < b for a, b in inside)]
