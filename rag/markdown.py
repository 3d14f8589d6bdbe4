"""Text → Markdown that renders as exactly that text: no links, images, HTML, headings, lists.

Article text, LLM output, file names and notices are untrusted. The chat renders GitHub
Markdown (autolinks, directives, alerts), so

- every ASCII punctuation character — the only characters Markdown gives a meaning to — is
  written with a backslash, which CommonMark turns back into the character itself;
- GFM also turns bare `http://…`, `www.…` and `name@host` in the *rendered* text into links,
  whatever their escapes, so a WORD JOINER (U+2060, invisible, no effect on bidi or shaping)
  goes where those patterns would start: `http⁠://`, `www⁠.`, `name⁠@host`. They show as text.

`MarkdownStream` escapes a text that arrives in pieces: what it emits adds up to
`escape(whole text)`, holding back only the last few characters until it knows what follows.

`linked_answer` is the one place that leaves Markdown's brackets unescaped: a bare `[n]` (no
link target, no definition: CommonMark shows it as text) which the chat turns into a link to
the element of that name.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Sequence

from .markers import Marker
from .types import SourceView

_PUNCTUATION = {ord(ch): "\\" + ch for ch in string.punctuation}
# U+200B is the chat's streaming-cursor placeholder: drawn as a blinking cursor, not text.
_PUNCTUATION[0x200B] = ""
WORD_JOINER = "\u2060"
# Where GFM's literal autolinks would start: between `http`/`https`/`www` and `://`/`.`, and
# before the `@` of an address. Each place depends on at most 5 characters before it and 3
# after it.
_AUTOLINK_START = re.compile(r"(?<=https)(?=://)|(?<=http)(?=://)|(?<=www)(?=\.)|(?<=[-.+\w])(?=@)",
                             re.IGNORECASE | re.ASCII)
_BEFORE, _AFTER = 5, 3


def escape(text: str) -> str:
    """`text` as Markdown that displays it literally."""
    return _escape_span(text, 0, len(text))


def _escape_span(text: str, start: int, end: int) -> str:
    """Escaped text[start:end], with the word joiners that belong before positions
    start … end-1 (found with the context around them in `text`)."""
    out, cursor = [], start
    for match in _AUTOLINK_START.finditer(text, max(0, start - _BEFORE), min(len(text), end + _AFTER)):
        if start <= match.start() < end:
            out += [text[cursor:match.start()].translate(_PUNCTUATION), WORD_JOINER]
            cursor = match.start()
    out.append(text[cursor:end].translate(_PUNCTUATION))
    return "".join(out)


class MarkdownStream:
    """Escapes a text piece by piece: the pieces `feed` and `close` return add up to
    `escape(text)`."""

    def __init__(self) -> None:
        self._text = ""  # the last characters emitted (context) + those held back
        self._emitted = 0  # how many characters of self._text are already emitted

    def feed(self, piece: str) -> str:
        self._text += piece
        end = len(self._text) - _AFTER
        if end <= self._emitted:
            return ""
        out = _escape_span(self._text, self._emitted, end)
        keep = max(0, end - _BEFORE)
        self._text, self._emitted = self._text[keep:], end - keep
        return out

    def close(self) -> str:
        out = _escape_span(self._text, self._emitted, len(self._text))
        self._text, self._emitted = "", 0
        return out


def bold(text: str) -> str:
    """Escaped text in bold. Markdown bold cannot span lines or start/end with a space, so each
    line's run of words is marked on its own."""
    return re.sub(r"\S(?:.*\S)?", lambda m: f"**{escape(m.group())}**", text)


def source_card(view: SourceView) -> str:
    """A passage with its cited words in bold (the chat's style turns them into a highlight),
    then where it comes from: outlet · date · URL when the article states them (the URL as
    text, never a link), then the document id and offsets."""
    body = "".join(bold(text) if cited else escape(text) for text, cited in view.segments)
    origin = " · ".join(escape(value) for value in (view.outlet, (view.date or "")[:10] or None, view.url) if value)
    where = f"_{escape(view.doc_id)} · {view.start}–{view.end}_"
    return f"{body}\n\n_{origin}_\n\n{where}" if origin else f"{body}\n\n{where}"


def link(n: int) -> str:
    """The bare `[n]` that the chat turns into a link to its element named `[n]`."""
    return f"[{int(n)}]"


def linked_answer(text: str, markers: Sequence[Marker], linked: Collection[int]) -> str:
    """escape(text), except that each number of a marker that is in `linked` is written as
    `link(n)`: "[1, 2]" becomes "[1][2]". Everything else, the quotes' own brackets included,
    is escaped as usual."""
    out, cursor = [], 0
    for marker in sorted(markers, key=lambda m: m.start):
        if not any(n in linked for n in marker.numbers):
            continue
        out.append(_escape_span(text, cursor, marker.start))
        out += [link(n) if n in linked else escape(f"[{n}]") for n in marker.numbers]
        cursor = marker.end
    out.append(_escape_span(text, cursor, len(text)))
    return "".join(out)


def source_article(view: SourceView, text: str) -> str:
    """A whole article (`text`, the document of `view`) with the view's cited quotes in bold —
    or, for a passage shown without a quote, that passage — each line its own paragraph, then
    a line naming its source (last, as in the cards: the article's language sets the direction)."""
    spans = sorted(s for s in view.quotes if 0 <= s[0] < s[1] <= len(text)) or [(view.start, view.end)]
    out, cursor = [], 0
    for start, end in spans:
        start = max(start, cursor)  # overlapping quotes: marked once
        if end <= start:
            continue
        out += [_escape_span(text, cursor, start), bold(text[start:end])]
        cursor = end
    out.append(_escape_span(text, cursor, len(text)))
    title = "" if text.lstrip().startswith(view.title) else f"{escape(view.title)} · "
    return "".join(out).replace("\n", "\n\n") + f"\n\n_{title}{escape(view.doc_id)}_"
