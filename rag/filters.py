"""Search filters from what people type: `--since 2024-01-01 --until 2024-06-30 --source BBC`.

`parse_filters` turns strings (or dates) into a `Filters`, with an error that names the bad
value and says what to write instead; `no_match` explains a filter that leaves no document,
with what the index does hold. Filtering itself happens inside retrieval (rag.retrieval).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

from .errors import FilterError
from .types import Filters

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
LISTED_OUTLETS = 8


def parse_date(value: str | dt.date) -> dt.date:
    """A YYYY-MM-DD date; FilterError (without the option's name) when it is none."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if _DAY.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise FilterError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2024-08-01")


def split_sources(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """Sources from one string or several, each of which may list several separated by commas."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    out = [part.strip() for item in items for part in str(item).split(",")]
    return tuple(dict.fromkeys(part for part in out if part))


def parse_filters(since: str | dt.date | None = None, until: str | dt.date | None = None,
                  sources: str | Sequence[str] | None = None) -> Filters:
    """`Filters` from user input; empty strings mean "no limit"."""
    days = {}
    for name, value in (("since", since), ("until", until)):
        if value is None or (isinstance(value, str) and not value.strip()):
            days[name] = None
            continue
        try:
            days[name] = parse_date(value)
        except FilterError as exc:
            raise FilterError(f"{name}: {exc}") from None
    if days["since"] and days["until"] and days["since"] > days["until"]:
        raise FilterError(f"since {days['since']} is after until {days['until']}: no date is in between, "
                          "swap them")
    return Filters(since=days["since"], until=days["until"], sources=split_sources(sources))


def no_match(filters: Filters, documents: Sequence[tuple[str, str | None, str | None]]) -> str:
    """Why nothing passes `filters`, given (doc_id, outlet, date) of every indexed document."""
    days = sorted(d[:10] for _, _, d in documents if d and _DAY.fullmatch(d[:10]))
    outlets = sorted({o for _, o, _ in documents if o}, key=str.casefold)
    held = [f"{len(days)} of {len(documents)} documents have a date"
            + (f", from {days[0]} to {days[-1]}" if days else "")]
    if filters.sources:
        if outlets:
            listed = ", ".join(repr(o) for o in outlets[:LISTED_OUTLETS])
            more = f" and {len(outlets) - LISTED_OUTLETS} more" if len(outlets) > LISTED_OUTLETS else ""
            held.append(f"outlets: {listed}{more}")
        else:
            held.append("none names its outlet")
    return (f"no document in the index matches {filters.describe()} ({'; '.join(held)}): widen the filter "
            "or leave it out (`rag docs` lists every document with its outlet and date)")
