"""Files → Documents: formats, encodings, normalized text, titles, ids and content hashes.

Supported: .txt .md .html/.htm (visible text) .pdf (text layer) .jsonl/.json (news records with
`text` and optional `title`, `url`, `date`, `id`). Text is decoded from UTF-8 (with or without
BOM), UTF-16 or legacy encodings such as Windows-1256, then normalized once; offsets everywhere
refer to that stored text.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    per_root: dict[str, int] = field(default_factory=dict)  # documents found under each path given

    def notices(self) -> list[str]:
        """Human-readable lines: unsupported types grouped, other problems one per file."""
        by_suffix: dict[str, list[str]] = {}
        lines = []
        for item in self.skipped:
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


def load_paths(paths: Sequence[str | Path]) -> LoadResult:
    """Read every supported file under the given folders/files. Doc ids are paths relative to
    the folder given (a file given directly is named by its file name); JSON records use their
    `id` when they have one."""
    result = LoadResult()
    seen: dict[str, str] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise DocumentError(f"{root} does not exist: give a folder or file to index")
        files = [root] if root.is_file() else sorted(_walk(root))
        base = root.parent if root.is_file() else root
        result.per_root.setdefault(str(raw), 0)
        for path in files:
            rel = path.relative_to(base).as_posix()
            for doc in _load_file(path, rel, result):
                if doc.doc_id in seen:
                    raise DocumentError(
                        f"document id {doc.doc_id!r} comes from both {seen[doc.doc_id]} and "
                        f"{doc.source_path}: ids must be unique, so rename one of them or give "
                        "the records distinct `id` fields")
                seen[doc.doc_id] = doc.source_path
                result.documents.append(doc)
                result.per_root[str(raw)] += 1
    return result


def _walk(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden files and folders (.git, .DS_Store, editor swap files)
        if path.is_file():
            yield path


def _load_file(path: Path, rel: str, result: LoadResult) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        result.skipped.append(Skipped(str(path), f"unsupported type {suffix or '(no extension)'}"))
        return []
    try:
        if suffix == ".pdf":
            docs = [_document(rel, str(path), _pdf_text(path), fallback_title=path.stem)]
        elif suffix in RECORD_SUFFIXES:
            docs = _records(path, rel, decode_bytes(path.read_bytes(), path), result)
        elif suffix in HTML_SUFFIXES:
            text, title = html_text(decode_bytes(path.read_bytes(), path, html=True))
            docs = [_document(rel, str(path), text, title=title, fallback_title=path.stem)]
        else:
            raw = decode_bytes(path.read_bytes(), path)
            docs = [_document(rel, str(path), raw, fallback_title=path.stem)]
    except DocumentError as exc:
        result.skipped.append(Skipped(str(path), str(exc)))
        return []
    except OSError as exc:
        result.skipped.append(Skipped(str(path), f"cannot be read ({exc.strerror or exc})"))
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


def decode_bytes(data: bytes, path: Path | str = "<bytes>", html: bool = False) -> str:
    """Decode text of unknown encoding: BOM, strict UTF-8, an HTML meta charset, then
    detection (UTF-16 without BOM, Windows-1256 and other legacy encodings)."""
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
    if (text := _utf16_without_bom(data)) is not None:
        return text
    if html and (match := _META_CHARSET.search(data[:4096])):
        try:
            return data.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    text = str(best) if best is not None else None
    if text is None or _looks_binary(text):
        raise DocumentError(
            "is not text in a known encoding (tried UTF-8, UTF-16, Windows-1256 and others): "
            "save it as UTF-8 and index it again")
    return text


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text has a high byte that repeats: 0x00 for Latin, 0x06 for Arabic."""
    if len(data) < 4 or len(data) % 2:
        return None
    for encoding, high in (("utf-16-le", data[1::2]), ("utf-16-be", data[0::2])):
        if sum(1 for b in high if b in (0x00, 0x06)) >= 0.7 * len(high):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue
            if not _looks_binary(text):
                return text
    return None


def _looks_binary(text: str) -> bool:
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    return "\x00" in text or controls > max(2, len(text) // 200)


# ----------------------------------------------------------------------------- text

_INVISIBLE = re.compile("[\u200b\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ufeff\u00ad]")
_PRESENTATION_FORMS = re.compile("[\ufb50-\ufdff\ufe70-\ufefe]+")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


def normalize_text(text: str) -> str:
    """The stored form of a document: NFC, presentation forms unfolded (PDFs), invisible
    direction marks dropped, unusual spaces made plain, line ends unified, blank runs shortened."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _PRESENTATION_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def headline(text: str) -> str | None:
    """The first line when it reads as a headline: short, and followed by more text. A leading
    dateline such as "Agency name -" is passed over."""
    lines = [line for line in text.split("\n") if line.strip()]
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


def content_hash(title: str, text: str, url: str | None, date: str | None) -> str:
    payload = json.dumps([title, text, url, date], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _document(doc_id: str, source: str, raw_text: str, *, title: str | None = None,
              fallback_title: str, url: str | None = None, date: str | None = None) -> Document:
    text = normalize_text(raw_text)
    title = normalize_text(title) if title else None
    if not title:
        title = headline(text) or lead_title(text) or fallback_title
    return Document(doc_id=doc_id, title=title, text=text,
                    sha256=content_hash(title, text, url, date), source_path=source,
                    url=url, date=date)


# ----------------------------------------------------------------------------- formats

def _records(path: Path, rel: str, raw: str, result: LoadResult) -> list[Document]:
    if path.suffix.lower() == ".jsonl":
        items = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                result.skipped.append(Skipped(f"{path}:{number}", f"invalid JSON ({exc.msg})"))
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        data = data if isinstance(data, list) else [data]
        items = list(enumerate(data, start=1))
    docs = []
    for number, record in items:
        where = f"{path}:{number}"
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            result.skipped.append(Skipped(where, "record has no `text` string"))
            continue
        record_id = record.get("id")
        doc_id = str(record_id) if record_id not in (None, "") else f"{rel}#{number}"
        title = record.get("title") if isinstance(record.get("title"), str) else None
        docs.append(_document(doc_id, where, record["text"], title=title,
                              fallback_title=doc_id, url=_opt_str(record.get("url")),
                              date=_opt_str(record.get("date"))))
    return docs


def _opt_str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise DocumentError(f"is not a readable PDF ({exc})") from None
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

    def handle_starttag(self, tag: str, attrs) -> None:
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


def html_text(markup: str) -> tuple[str, str | None]:
    """Visible text of an HTML page (no scripts, styles or tags) and its title."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    text = re.sub(r"[ \t]*\n[ \t\n]*", "\n", "".join(parser.parts))
    title = " ".join("".join(parser.title).split()) or " ".join("".join(parser.h1).split())
    return text, title or None
