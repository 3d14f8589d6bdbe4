"""Files → Documents: formats, encodings, normalized text, titles, ids and content hashes.

Supported: .txt .md .html/.htm (visible text) .pdf (text layer) .jsonl/.json (news records with
`text` and optional `title`, `outlet`, `url`, `date`, `id`). Text is decoded from UTF-8 (with or
without BOM), UTF-16 or legacy encodings such as Windows-1256, then normalized once; offsets
everywhere refer to that stored text.

Article metadata — title, outlet (the site or publication), publication date, URL — comes only
from what a file states: a record's fields under their common names (`RECORD_FIELDS`) or an HTML
page's `<meta>` tags (`META_TAGS`, `<link rel=canonical>`). Dates are normalized to ISO 8601
(`YYYY-MM-DD`, or the full date and time when one is given); a value that is no date is dropped.

A file that cannot be read — any parser failure, too deep, too large — becomes one `Skipped`
line naming it (and the record's line for .jsonl); everything else is still loaded. Files
over the size limit are skipped before they are read. `NoticeLog` remembers what was already
reported, so an unchanged bad file is not reported again on every run.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

from .errors import DocumentError
from .types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".json"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES | {".pdf"}
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


# A file modified this recently may be modified again within the same mtime tick, keeping its
# size: its state is not recorded, so the next run reads it again (git's "racy" entries).
SETTLED_NS = 2_000_000_000
# Recorded with the file states: a reader that may decode or normalize differently (any change
# to this module) reads every file again once, and the content hashes decide what changed.
READER_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class FileState:
    """What `load_paths` trusts instead of reading a file again: its size and modification time."""
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileState:
        return cls(stat.st_size, stat.st_mtime_ns)


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    per_root: dict[str, int] = field(default_factory=dict)  # documents found under each path given
    # files read whole and without a problem, as they were before reading (see `load_paths`)
    file_states: dict[str, FileState] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # files not read: their state was `unchanged`

    def notices(self, skipped: Sequence[Skipped] | None = None) -> list[str]:
        """Human-readable lines for `skipped` (default: all): unsupported types grouped, other
        problems one per file."""
        by_suffix: dict[str, list[str]] = {}
        lines = []
        for item in self.skipped if skipped is None else skipped:
            if item.reason.startswith("unsupported type"):
                by_suffix.setdefault(Path(item.path).suffix.lower() or "(none)", []).append(item.path)
            else:
                lines.append(f"skipped {item.path}: {item.reason}")
        if by_suffix:
            listed = "; ".join(f"{suffix}: {', '.join(paths)}" for suffix, paths in sorted(by_suffix.items()))
            count = sum(len(p) for p in by_suffix.values())
            lines.insert(0, f"skipped {count} file(s) of unsupported type ({listed}); "
                            f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
        return lines


class NoticeLog:
    """What was already reported about skipped files, in a small JSON file (path → size,
    mtime, reason), so that an unchanged bad file is reported once and not on every run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def new_notices(self, result: LoadResult) -> list[str]:
        """Notices for the files skipped now that were not reported in this same state, then one
        line counting the others; remembers the files skipped now."""
        before = self._read()
        now: dict[str, list] = {}
        fresh = []
        for item in result.skipped:
            state = _file_state(item.path)
            if state is not None:
                now[item.path] = [*state, item.reason]
            if state is None or before.get(item.path) != now[item.path]:
                fresh.append(item)
        if now != before:
            self._write(now)
        lines = result.notices(fresh)
        if known := len(result.skipped) - len(fresh):
            lines.append(f"{known} file(s) still skipped as reported before (unchanged since)")
        return lines

    def _read(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: everything is reported again
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, list]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(staging, self.path)


def _file_state(skipped_path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of the file a skipped item names (a .jsonl record is `file:line`)."""
    for candidate in (skipped_path, re.sub(r":\d+$", "", skipped_path)):
        try:
            stat = os.stat(candidate)
            return stat.st_size, stat.st_mtime_ns
        except OSError:
            continue
    return None


def load_paths(paths: Sequence[str | Path], max_bytes: int | None = None,
               unchanged: Mapping[str, FileState] | None = None) -> LoadResult:
    """Read every supported file under the given folders/files. Doc ids are paths relative to
    the folder given (a file given directly is named by its file name); JSON records use their
    `id` when they have one. A file reached twice (a folder and a file inside it, or the same
    path given twice) is read once, under the first name. Files over `max_bytes` are skipped.

    A file whose size and modification time equal its state in `unchanged` (keyed by the path
    documents record as `source_path`) is not read: it is listed in `reused`, and the caller
    knows its documents already."""
    result = LoadResult()
    seen: dict[str, str] = {}
    # resolving every path costs a few lstat calls per file; only files sharing an inode (the
    # same file reached twice, or hard links, which stay distinct documents) are resolved
    by_inode: dict[tuple[int, int], list[Path]] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise DocumentError(f"{root} does not exist: give a folder or file to index")
        # (path, path relative to the root): strings, as a Path per file of an archive of 10⁵
        # files costs seconds; a Path is made only for the files that are read
        files = [(str(root), root.name)] if root.is_file() else _walk(root)
        result.per_root.setdefault(str(raw), 0)
        for name, rel in files:
            try:
                stat = os.stat(name)
                state, inode = FileState.of(stat), (stat.st_dev, stat.st_ino)
            except OSError:
                state, inode = None, (-1, -1)
            same = by_inode.setdefault(inode, [])
            if same and os.path.realpath(name) in {os.path.realpath(p) for p in same}:
                result.per_root[str(raw)] += 1  # found here too; already read
                continue
            same.append(name)
            if (state is not None and unchanged and unchanged.get(name) == state
                    and (max_bytes is None or state.size <= max_bytes)):
                result.reused.append(name)
                result.per_root[str(raw)] += 1
                continue
            skips = len(result.skipped)
            docs = _load_file(Path(name), rel, result, max_bytes)
            if (docs and state is not None and len(result.skipped) == skips
                    and state.mtime_ns < time.time_ns() - SETTLED_NS):
                result.file_states[name] = state
            for doc in docs:
                if doc.doc_id in seen:
                    raise DocumentError(
                        f"document id {doc.doc_id!r} comes from both {seen[doc.doc_id]} and "
                        f"{doc.source_path}: ids must be unique, so rename one of them or give "
                        "the records distinct `id` fields")
                seen[doc.doc_id] = doc.source_path
                result.documents.append(doc)
                result.per_root[str(raw)] += 1
    return result


def source_file(source_path: str) -> Path:
    """The file a document was read from: its `source_path` without a record's `:line`."""
    return Path(source_file_name(source_path))


def source_file_name(source_path: str) -> str:
    """`source_file` as a string (`source_path`s are written from normalized paths)."""
    return _RECORD_LINE.sub("", source_path)


_RECORD_LINE = re.compile(r":\d+$")


def _walk(root: Path) -> list[tuple[str, str]]:
    """(path, path relative to root) of the files under root, hidden ones (.git, .DS_Store, editor
    swap files) left out, in the order of their relative paths' parts. Symlinked folders are not
    followed."""
    found: list[tuple[str, str]] = []
    pending = [(str(root), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, prefix + entry.name + "/"))
                elif entry.is_file():
                    found.append((entry.path, prefix + entry.name))
    found.sort(key=lambda item: item[1].split("/"))
    return found


def _load_file(path: Path, rel: str, result: LoadResult, max_bytes: int | None = None) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        result.skipped.append(Skipped(str(path), f"unsupported type {suffix or '(no extension)'}"))
        return []
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise DocumentError(f"is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit "
                                "(setting max_document_mb): split it, or raise the limit")
        if suffix == ".pdf":
            docs = [_document(rel, str(path), _pdf_text(path), fallback_title=path.stem)]
        elif suffix in RECORD_SUFFIXES:
            docs = _records(path, rel, decode_bytes(path.read_bytes(), path), result)
        elif suffix in HTML_SUFFIXES:
            text, meta = html_text(decode_bytes(path.read_bytes(), path, html=True))
            docs = [_document(rel, str(path), text, fallback_title=path.stem, meta=meta)]
        else:
            docs = [_document(rel, str(path), decode_bytes(path.read_bytes(), path), fallback_title=path.stem)]
    except DocumentError as exc:
        result.skipped.append(Skipped(str(path), str(exc)))
        return []
    except OSError as exc:
        result.skipped.append(Skipped(str(path), f"cannot be read ({exc.strerror or exc})"))
        return []
    except RecursionError:
        result.skipped.append(Skipped(str(path), "nests too deeply to be read: flatten its structure"))
        return []
    except MemoryError:
        result.skipped.append(Skipped(str(path), "is too large to read into memory: split it"))
        return []
    kept = [d for d in docs if d.text]
    if not kept and docs:
        result.skipped.append(Skipped(str(path), "contains no text"))
    return kept


# ----------------------------------------------------------------------------- decoding

_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16")]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]+)""", re.I)


# Encoding detection looks at this much of a file; the whole file is then decoded once.
DETECTION_SAMPLE_BYTES = 1 << 20
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # Cc but tab, newline, form feed, return


def decode_bytes(data: bytes, path: Path | str = "<bytes>", html: bool = False) -> str:
    """Decode text of unknown encoding: BOM, strict UTF-8, an HTML meta charset, then
    detection (UTF-16 without BOM, Windows-1256 and other legacy encodings). Detection reads
    a sample, so a large file is held once as bytes and once as text."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise DocumentError(f"has a {encoding} byte-order mark but is not valid {encoding}") from None
    try:
        text = data.decode("utf-8")
        if not _looks_binary(text):
            return text
    except UnicodeDecodeError:
        pass
    text = None  # a binary-looking decode is not kept while the next one is tried
    if (text := _utf16_without_bom(data)) is not None:
        return text
    if html and (match := _META_CHARSET.search(data[:4096])):
        try:
            return data.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    from charset_normalizer import from_bytes

    sample = data
    if len(data) > DETECTION_SAMPLE_BYTES:
        cut = data.rfind(b"\n", 0, DETECTION_SAMPLE_BYTES)
        sample = data[:cut if cut > 0 else DETECTION_SAMPLE_BYTES]
    best = from_bytes(sample).best()
    text = None
    if best is not None:
        try:
            text = data.decode(best.encoding)
        except (LookupError, UnicodeDecodeError):
            text = None
    if text is None or _looks_binary(text):
        raise DocumentError(
            "is not text in a known encoding (tried UTF-8, UTF-16, Windows-1256 and others): "
            "save it as UTF-8 and index it again")
    return text


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text has a high byte that repeats: 0x00 for Latin, 0x06 for Arabic."""
    if len(data) < 4 or len(data) % 2:
        return None
    sample = data[:DETECTION_SAMPLE_BYTES]
    for encoding, high in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if high.count(0x00) + high.count(0x06) >= 0.7 * len(high):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue
            if not _looks_binary(text):
                return text
    return None


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    allowed = max(2, len(text) // 200)
    for count, _ in enumerate(_CONTROL.finditer(text), start=1):
        if count > allowed:
            return True
    return False


# ----------------------------------------------------------------------------- text

_INVISIBLE = re.compile("[\u200b\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ufeff\u00ad]")
_PRESENTATION_FORMS = re.compile("[\ufb50-\ufdff\ufe70-\ufefe]+")
_SPACE_CHARS = " \t\u00a0\u2000-\u200a\u202f\u205f\u3000"
# runs of spaces other than a lone " " (matching every single space would cost an object per word)
_SPACES = re.compile(f"[{_SPACE_CHARS[1:]}][{_SPACE_CHARS}]*| [{_SPACE_CHARS}]+")
_CONTROL_BUT_TAB_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # only JSON escapes can make one; UTF-8 cannot hold it
_LINE_END_SPACE = re.compile(r"[^\S\n]+(?=\n)")
_LINE_START_SPACE = re.compile(r"(?<=\n)[^\S\n]+")
_LEADING_SPACE = re.compile(r"\A[^\S\n]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_NO_CUT_BEFORE = re.compile("[\ufb50-\ufdff\ufe70-\ufefe\u1100-\u11ff\ua960-\ua97f\ud7b0-\ud7ff\r]")
NORMALIZE_SLICE = 1 << 20  # characters normalized at a time
CUT_SEARCH = 4096  # how far past a slice's end a clean place to cut a long line is looked for


def normalize_text(text: str) -> str:
    """The stored form of a document: NFC, presentation forms unfolded (PDFs), invisible
    direction marks dropped, unusual spaces made plain, line ends unified, each line stripped,
    blank runs shortened.

    Large texts are normalized a slice at a time (cut after a newline, or inside a long line
    between two characters no step can join), so a 50 MB document costs a few copies of
    itself, not one Python object per word or line."""
    parts = [_normalize_slice(text[start:end], line_start)
             for start, end, line_start in _slices(text, NORMALIZE_SLICE, CUT_SEARCH)]
    text = "".join(parts)
    del parts
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def _normalize_slice(text: str, line_start: bool) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _PRESENTATION_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _INVISIBLE.sub("", text)
    text = _CONTROL_BUT_TAB_NEWLINE.sub("", text)
    text = _LONE_SURROGATE.sub("\ufffd", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_END_SPACE.sub("", text)
    text = _LINE_START_SPACE.sub("", text)
    return _LEADING_SPACE.sub("", text) if line_start else text


def _slices(text: str, size: int, search: int) -> Iterator[tuple[int, int, bool]]:
    """[start, end) slices of about `size` characters and whether each starts a line."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline >= 0:
                end = newline + 1
            else:  # a long line: cut at a clean place, else (never in real text) where the search ends
                limit = min(len(text), end + search)
                end = next((p for p in range(end, limit) if _can_cut(text, p)), limit)
        yield start, end, start == 0 or text[start - 1] == "\n"
        start = end


def _can_cut(text: str, at: int) -> bool:
    """Whether normalizing text[:at] and text[at:] apart gives the same as together: the
    character before is no space, control or mark and nothing composes across."""
    before, after = text[at - 1], text[at]
    return not (before.isspace() or unicodedata.category(before)[0] in "CMZ" or unicodedata.combining(before)
                or unicodedata.category(after)[0] == "M" or unicodedata.combining(after)
                or _NO_CUT_BEFORE.match(before) or _NO_CUT_BEFORE.match(after)
                or _INVISIBLE.match(before) or _INVISIBLE.match(after))


def headline(text: str) -> str | None:
    """The first line when it reads as a headline: short, and followed by more text. A leading
    dateline such as "Agency name -" is passed over."""
    lines = [m.group() for m in itertools.islice(re.finditer(r"[^\n]*\S[^\n]*", text), 3)]
    if len(lines) > 1 and len(lines[0]) < 40 and re.search(r"[-–—:]$", lines[0]):
        lines = lines[1:]
    if len(lines) < 2:
        return None
    first = lines[0].lstrip("#").strip()
    return first if 0 < len(first) <= MAX_TITLE_CHARS else None


LEAD_TITLE_CHARS = 90


def lead_title(text: str) -> str | None:
    """For an article without a headline: its first sentence, cut at a word and marked with an
    ellipsis when longer than LEAD_TITLE_CHARS (never a file name or a hash)."""
    from .arabic import sentence_spans

    spans = sentence_spans(text[:2000])
    if not spans:
        return None
    first = text[spans[0][0]:spans[0][1]].strip()
    if len(first) <= LEAD_TITLE_CHARS:
        return first.rstrip(".،,؛:") or None
    cut = first[:LEAD_TITLE_CHARS]
    cut = cut[:cut.rfind(" ")] if " " in cut else cut
    return cut.rstrip(" .،,؛:-–—") + "…"


def content_hash(title: str, text: str, url: str | None, date: str | None, outlet: str | None = None) -> str:
    """sha256 of `json.dumps([title, text, url, date], ensure_ascii=False)` in UTF-8 (with
    `outlet` as a fifth item when there is one, so documents without one keep the hash they had
    before outlets were read), computed piece by piece: JSON escapes each character on its own,
    so the text is encoded a slice at a time instead of as one more full copy."""
    digest = hashlib.sha256()
    digest.update(f"[{json.dumps(title, ensure_ascii=False)}, \"".encode())
    for start in range(0, len(text), _HASH_SLICE):
        digest.update(json.dumps(text[start:start + _HASH_SLICE], ensure_ascii=False)[1:-1]
                      .encode("utf-8"))
    tail = [url, date] + ([outlet] if outlet is not None else [])
    digest.update(("\", " + json.dumps(tail, ensure_ascii=False)[1:]).encode())
    return digest.hexdigest()


_HASH_SLICE = 1 << 20


def _document(doc_id: str, source: str, raw_text: str, *, title: str | None = None,
              fallback_title: str, meta: Metadata | None = None) -> Document:
    meta = meta or Metadata()
    text = normalize_text(raw_text)
    title = normalize_text(title or meta.title or "") or None
    if not title:
        title = headline(text) or lead_title(text) or fallback_title
    return Document(doc_id=doc_id, title=title, text=text,
                    sha256=content_hash(title, text, meta.url, meta.date, meta.outlet), source_path=source,
                    url=meta.url, date=meta.date, outlet=meta.outlet)


# ----------------------------------------------------------------------------- formats

def _records(path: Path, rel: str, raw: str, result: LoadResult) -> list[Document]:
    if path.suffix.lower() == ".jsonl":
        items = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except ValueError as exc:  # JSONDecodeError, or a number too long to convert
                result.skipped.append(Skipped(f"{path}:{number}", f"invalid JSON ({_json_problem(exc)})"))
            except RecursionError:
                result.skipped.append(Skipped(f"{path}:{number}", "nests too deeply to be read"))
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except ValueError as exc:
            raise DocumentError(f"is not valid JSON ({_json_problem(exc)})") from None
        data = data if isinstance(data, list) else [data]
        items = list(enumerate(data, start=1))
    docs = []
    for number, record in items:
        where = f"{path}:{number}"
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            result.skipped.append(Skipped(where, "record has no `text` string"))
            continue
        record_id = record.get("id")
        doc_id = _opt_str(record_id) or f"{rel}#{number}"
        docs.append(_document(doc_id, where, record["text"], fallback_title=doc_id,
                              meta=record_metadata(record)))
    return docs


# ----------------------------------------------------------------------------- metadata

@dataclass(frozen=True)
class Metadata:
    """What a file states about its article; None where it states nothing usable."""

    title: str | None = None
    outlet: str | None = None
    date: str | None = None  # ISO 8601: YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS][±HH:MM]
    url: str | None = None


# The first field present with a usable value wins. `source` and `publisher` may also be an
# object with a `name` (NewsAPI, schema.org).
RECORD_FIELDS = {
    "title": ("title", "headline"),
    "outlet": ("outlet", "source", "site", "site_name", "publisher", "source_name", "newspaper"),
    "date": ("date", "published", "published_at", "publishedAt", "published_date", "pub_date",
             "datePublished", "publication_date"),
    "url": ("url", "link", "canonical_url"),
}
# <meta property|name|itemprop=KEY content=…>, compared in lower case.
META_TAGS = {
    "title": ("og:title", "citation_title", "dc.title", "twitter:title"),
    "outlet": ("og:site_name", "citation_journal_title", "citation_publisher", "dc.publisher",
               "publisher"),
    "date": ("article:published_time", "citation_publication_date", "citation_date",
             "citation_online_date", "datepublished", "dc.date.issued", "dc.date", "dcterms.created",
             "date", "pubdate", "publish-date", "publish_date", "og:published_time", "sailthru.date",
             "parsely-pub-date"),
    "url": ("og:url", "citation_public_url"),
}
MAX_META_CHARS = 2000  # a longer "title" or "url" is not one


def record_metadata(record: dict) -> Metadata:
    """The metadata of a JSON news record (see RECORD_FIELDS)."""
    def first(kind: str, parse) -> str | None:
        for name in RECORD_FIELDS[kind]:
            value = record.get(name)
            if isinstance(value, dict):
                value = value.get("name")
            if (parsed := parse(value)) is not None:
                return parsed
        return None

    return Metadata(title=first("title", _meta_text), outlet=first("outlet", _meta_text),
                    date=first("date", normalize_date), url=first("url", _meta_text))


def _meta_text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(_LONE_SURROGATE.sub("\ufffd", unicodedata.normalize("NFC", value)).split())
    return value if 0 < len(value) <= MAX_META_CHARS else None


_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?"
                       r"\s*(Z|[+-]\d{2}:?\d{2})?)?", re.I)
_OTHER_DATES = ("%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y",
                "%B %d %Y", "%b %d %Y")


def normalize_date(value: object) -> str | None:
    """A publication date as ISO 8601 — `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM:SS` with its offset
    when a time is given — or None when `value` is no date (`2024-13-01`, "yesterday", a bare
    year). Accepts ISO dates and times, RFC 2822 (`Thu, 01 Aug 2024 10:00:00 GMT`), `2024/08/01`,
    `1 August 2024`, `August 1, 2024`, and Unix times in seconds or milliseconds (JSON numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        if not 1e8 <= seconds <= 4.2e9:  # 1973 … 2103: anything else is no timestamp
            return None
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not isinstance(value, str) or not (value := value.strip()) or len(value) > 64:
        return None
    if match := _ISO_DATE.fullmatch(value):
        year, month, day, hour, minute, second, offset = match.groups()
        try:
            day_part = dt.date(int(year), int(month), int(day)).isoformat()
            if hour is None:
                return day_part
            clock = dt.time(int(hour), int(minute), int(second or 0)).isoformat()
        except ValueError:
            return None
        zone = "" if offset is None else "Z" if offset.upper() == "Z" else f"{offset[:3]}:{offset[-2:]}"
        return f"{day_part}T{clock}{zone}"
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        moment = None
    if moment is not None:
        zone = "" if moment.tzinfo is None else moment.strftime("%z")
        zone = "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}" if zone else ""
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + zone
    for layout in _OTHER_DATES:
        try:
            return dt.datetime.strptime(value, layout).date().isoformat()
        except ValueError:
            continue
    return None


def _json_problem(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(";")[0]


def _opt_str(value: object) -> str | None:
    return None if value in (None, "") else _LONE_SURROGATE.sub("\ufffd", str(value))


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as exc:
        raise DocumentError(f"is not a readable PDF ({exc})") from None
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf fails on broken files in many ways (#10)
        raise DocumentError(f"is not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise DocumentError("has no text layer (a scanned PDF?): run OCR on it first")
    return text


class _VisibleText(HTMLParser):
    _HIDDEN = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
    _BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
              "table", "section", "article", "header", "footer", "blockquote", "pre", "hr",
              "figcaption", "aside", "main", "nav", "dd", "dt", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0
        self.title: list[str] = []
        self.h1: list[str] = []
        self._in: list[str] = []
        self.meta: dict[str, str] = {}  # lower-cased property/name/itemprop → first content
        self.canonical: str | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "meta":
            values = {name.lower(): value for name, value in attrs if value is not None}
            key = values.get("property") or values.get("name") or values.get("itemprop")
            if key and "content" in values:
                self.meta.setdefault(key.strip().lower(), values["content"])
        elif tag == "link" and self.canonical is None:
            values = {name.lower(): value for name, value in attrs if value is not None}
            if "canonical" in values.get("rel", "").lower().split() and values.get("href"):
                self.canonical = values["href"]
        if tag in self._HIDDEN:
            self.hidden_depth += 1
        if tag in ("title", "h1"):
            self._in.append(tag)
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self.hidden_depth:
            self.hidden_depth -= 1
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "title":
            self.title.append(data)
        if self.hidden_depth:
            return
        if self._in and self._in[-1] == "h1":
            self.h1.append(data)
        self.parts.append(data)


def html_text(markup: str) -> tuple[str, Metadata]:
    """Visible text of an HTML page (no scripts, styles or tags) and its metadata: the title from
    og:title and the like, else <title>, else the first <h1>; outlet, date and URL from <meta>
    tags (META_TAGS) and <link rel=canonical>."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    text = re.sub(r"[ \t]*\n[ \t\n]*", "\n", "".join(parser.parts))

    def first(kind: str, parse) -> str | None:
        return next((parsed for key in META_TAGS[kind] if key in parser.meta
                     and (parsed := parse(parser.meta[key])) is not None), None)

    title = (first("title", _meta_text) or _meta_text("".join(parser.title))
             or _meta_text("".join(parser.h1)))
    url = first("url", _meta_text) or _meta_text(parser.canonical)
    return text, Metadata(title=title, outlet=first("outlet", _meta_text), date=first("date", normalize_date),
                          url=url)
