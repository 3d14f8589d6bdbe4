from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rag.documents import Metadata, decode_bytes, headline, html_text, load_paths, normalize_text
from rag.errors import DocumentError

from .conftest import SEEDS

ARTICLE = "عنوان الخبر\nأعلنت الحكومة اليوم عن قواعد جديدة لمكافحة خطاب الكراهية على الإنترنت."


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1256"])
def test_every_supported_encoding_decodes_to_the_same_text(tmp_path, encoding):
    write(tmp_path, "a.txt", ARTICLE.encode(encoding))
    result = load_paths([tmp_path])
    assert [d.text for d in result.documents] == [ARTICLE]
    assert result.documents[0].title == "عنوان الخبر"


def test_a_longer_windows_1256_seed_round_trips():
    text = (SEEDS / "001_4cc70f0e583a2e76.txt").read_text(encoding="utf-8")
    assert decode_bytes(text.encode("cp1256")) == text


def test_undecodable_file_is_reported_by_name_and_others_still_load(tmp_path):
    write(tmp_path, "good.txt", ARTICLE.encode())
    write(tmp_path, "broken.txt", bytes(range(256)) * 20)
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["good.txt"]
    (skipped,) = result.skipped
    assert skipped.path.endswith("broken.txt") and "UTF-8" in skipped.reason
    assert any("broken.txt" in line for line in result.notices())


def test_unknown_extensions_are_listed_in_one_notice(tmp_path):
    write(tmp_path, "a.txt", ARTICLE.encode())
    write(tmp_path, "photo.png", b"\x89PNG")
    write(tmp_path, "sheet.docx", b"PK")
    write(tmp_path, ".hidden/secret.txt", b"not indexed")
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["a.txt"]
    (notice,) = result.notices()
    assert "photo.png" in notice and "sheet.docx" in notice and ".png" in notice


def test_html_keeps_visible_text_only(tmp_path):
    page = """<!doctype html><html><head><title>عنوان الصفحة</title>
    <style>body { color: red }</style><script>var secret = "hidden";</script></head>
    <body><h1>عنوان الصفحة</h1><p>الفقرة <b>الأولى</b> هنا.</p><!-- comment -->
    <noscript>no script</noscript><p>الفقرة الثانية &amp; الأخيرة.</p></body></html>"""
    write(tmp_path, "page.html", page.encode("utf-8"))
    (doc,) = load_paths([tmp_path]).documents
    assert doc.title == "عنوان الصفحة"
    assert "الفقرة الأولى هنا." in doc.text and "الثانية & الأخيرة" in doc.text
    for hidden in ("secret", "color", "comment", "no script", "<p>"):
        assert hidden not in doc.text


def test_html_in_windows_1256_with_meta_charset(tmp_path):
    page = '<html><head><meta charset="windows-1256"><title>خبر</title></head><body><p>نص عربي.</p></body></html>'
    write(tmp_path, "old.htm", page.encode("cp1256"))
    (doc,) = load_paths([tmp_path]).documents
    assert doc.title == "خبر" and "نص عربي." in doc.text


def test_html_text_function_separates_blocks():
    text, meta = html_text("<div>one</div><div>two</div><br>three")
    assert text.split() == ["one", "two", "three"] and meta == Metadata()


def _minimal_pdf(line: str) -> bytes:
    """A one-page PDF with a real text layer (Helvetica), written by hand."""
    stream = f"BT /F1 18 Tf 72 720 Td ({line}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_layer(tmp_path):
    write(tmp_path, "report.pdf", _minimal_pdf("Germany fines platforms over hate speech"))
    (doc,) = load_paths([tmp_path]).documents
    assert "Germany fines platforms over hate speech" in doc.text
    assert doc.title == "Germany fines platforms over hate speech"  # no headline: the first sentence


def test_unreadable_pdf_is_skipped_with_reason(tmp_path):
    write(tmp_path, "bad.pdf", b"%PDF-1.4 this is not really a pdf")
    write(tmp_path, "a.txt", ARTICLE.encode())
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["a.txt"]
    assert result.skipped[0].path.endswith("bad.pdf")


def test_jsonl_records(tmp_path):
    records = [
        {"id": "n-1", "title": "ألمانيا تغرم المنصات", "text": "فرضت ألمانيا غرامات.",
         "url": "https://x", "date": "2024-08-01"},
        {"text": "سجل بلا معرف ولا عنوان.\nسطر ثان."},
        {"title": "no text"},
    ]
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\nnot json\n"
    write(tmp_path, "feed.jsonl", lines.encode("utf-8"))
    result = load_paths([tmp_path])
    first, second = result.documents
    assert (first.doc_id, first.title) == ("n-1", "ألمانيا تغرم المنصات")
    assert (first.url, first.date) == ("https://x", "2024-08-01")
    assert second.doc_id == "feed.jsonl#2" and second.title == "سجل بلا معرف ولا عنوان."
    reasons = {s.path.rsplit(":", 1)[1]: s.reason for s in result.skipped}
    assert "text" in reasons["3"] and "JSON" in reasons["4"]


def test_json_array_of_records(tmp_path):
    write(tmp_path, "items.json", json.dumps([{"id": 7, "text": "نص."}]).encode())
    (doc,) = load_paths([tmp_path]).documents
    assert doc.doc_id == "7" and doc.text == "نص."


def test_duplicate_ids_are_an_error_naming_both_sources(tmp_path):
    write(tmp_path, "a.jsonl", b'{"id": "same", "text": "one"}\n')
    write(tmp_path, "b.jsonl", b'{"id": "same", "text": "two"}\n')
    with pytest.raises(DocumentError, match="a.jsonl.*b.jsonl"):
        load_paths([tmp_path])


def test_ids_are_relative_paths_and_hash_follows_content(tmp_path):
    write(tmp_path, "sub/x.md", "# عنوان\n\nنص المقال.".encode())
    (doc,) = load_paths([tmp_path]).documents
    assert doc.doc_id == "sub/x.md" and doc.title == "عنوان"
    assert Path(doc.source_path).is_absolute() or doc.source_path.endswith("sub/x.md")
    before = doc.sha256
    write(tmp_path, "sub/x.md", "# عنوان\n\nنص المقال المعدل.".encode())
    assert load_paths([tmp_path]).documents[0].sha256 != before


def test_a_file_given_directly_is_named_by_its_file_name():
    (doc,) = load_paths([SEEDS / "002_586579299e5116f1.txt"]).documents
    assert doc.doc_id == "002_586579299e5116f1.txt"
    # one long line, no headline: the first sentence, cut at a word — never the file name (a hash)
    assert doc.title.startswith("في تصعيد غير مسبوق") and doc.title.endswith("…") and len(doc.title) <= 91
    assert doc.text.startswith(doc.title[:-1])


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DocumentError, match="does not exist"):
        load_paths([tmp_path / "nope"])


def test_seed_titles():
    titles = {d.doc_id: d.title for d in load_paths([SEEDS]).documents}
    assert titles["001_4cc70f0e583a2e76.txt"] == "الرئيس الفرنسي يطلق مبادرة عالمية لمكافحة التطرف على الإنترنت"
    # a leading dateline ("زاد الاردن الاخباري -") is not the headline
    assert titles["003_8d67cffeb0195d8a.txt"].startswith("واجهت مقابلة الملياردير إيلون ماسك")


def test_normalize_text():
    raw = "\ufeffسطر\u200f  أول\r\n\r\n\r\n\r\nﻻ\u00a0بأس\t\x07\n"
    assert normalize_text(raw) == "سطر أول\n\nلا بأس"


def test_headline_rules():
    assert headline("قصير\nنص") == "قصير"
    assert headline("سطر واحد فقط") is None
    assert headline("x" * 300 + "\nنص") is None


# ----------------------------------------------------------------------------- bad input (issue 10)

DEEP = 200_000


def test_deeply_nested_json_is_one_notice_and_the_other_files_load(tmp_path):
    write(tmp_path, "deep.json", b"[" * DEEP + b"]" * DEEP)
    write(tmp_path, "a.txt", ARTICLE.encode())
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["a.txt"]
    (notice,) = result.notices()
    assert "deep.json" in notice and "nests too deeply" in notice


def test_one_deep_jsonl_line_is_skipped_by_line_and_the_others_load(tmp_path):
    lines = [json.dumps({"id": "first", "text": "السطر الأول."}, ensure_ascii=False).encode(),
             b"[" * DEEP + b"]" * DEEP,
             json.dumps({"id": "third", "text": "السطر الثالث."}, ensure_ascii=False).encode(),
             b'{"id": 1' + b"0" * 5000 + b', "text": "x"}']  # a number too long to convert
    write(tmp_path, "feed.jsonl", b"\n".join(lines))
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["first", "third"]
    reasons = {s.path.rsplit(":", 1)[1]: s.reason for s in result.skipped}
    assert "nests too deeply" in reasons["2"] and "invalid JSON" in reasons["4"]
    assert any(line.endswith("feed.jsonl:2: nests too deeply to be read") for line in result.notices())


def test_a_parser_that_runs_out_of_memory_costs_only_its_file(tmp_path, monkeypatch):
    import rag.documents

    def exhausted(markup):
        raise MemoryError

    monkeypatch.setattr(rag.documents, "html_text", exhausted)
    write(tmp_path, "huge.html", b"<p>x</p>")
    write(tmp_path, "a.txt", ARTICLE.encode())
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["a.txt"]
    assert "huge.html" in result.skipped[0].path and "memory" in result.skipped[0].reason


@pytest.mark.parametrize("failure", [struct.error("unpack requires a buffer"),
                                     RecursionError("maximum recursion depth exceeded"),
                                     AttributeError("'NullObject' object has no attribute 'get'")])
def test_any_pdf_library_failure_is_a_notice_naming_the_file(tmp_path, monkeypatch, failure):
    import pypdf

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(pypdf, "PdfReader", broken)
    write(tmp_path, "report.pdf", _minimal_pdf("text"))
    write(tmp_path, "a.txt", ARTICLE.encode())
    result = load_paths([tmp_path])
    assert [d.doc_id for d in result.documents] == ["a.txt"]
    (skipped,) = result.skipped
    assert skipped.path.endswith("report.pdf") and "not a readable PDF" in skipped.reason


def test_lone_surrogates_from_json_escapes_become_replacement_characters(tmp_path):
    write(tmp_path, "feed.jsonl", b'{"id": "s\\ud800", "text": "\\udc00 \xd9\x86\xd8\xb5"}\n')
    (doc,) = load_paths([tmp_path]).documents
    assert doc.doc_id == "s\ufffd" and doc.text == "\ufffd نص"
    doc.text.encode("utf-8")  # storable


def test_a_file_over_the_size_limit_is_skipped_unread_within_a_second(tmp_path, monkeypatch):
    import time

    huge = tmp_path / "huge.txt"
    with huge.open("wb") as fh:  # sparse: 200 MB that take no disk
        fh.truncate(200_000_000)
    write(tmp_path, "a.txt", ARTICLE.encode())
    read = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or original(self))
    began = time.perf_counter()
    result = load_paths([tmp_path], max_bytes=50_000_000)
    assert time.perf_counter() - began < 1.0
    assert [d.doc_id for d in result.documents] == ["a.txt"] and read == ["a.txt"]
    (skipped,) = result.skipped
    assert skipped.path.endswith("huge.txt")
    assert "200.0 MB, over the 50 MB limit" in skipped.reason and "max_document_mb" in skipped.reason


def test_a_50_mb_file_decodes_and_normalizes_in_well_under_1_gb(tmp_path):
    """Peak RSS of a fresh process that loads one 50 MB Arabic text file."""
    import subprocess
    import sys

    paragraph = ("أعلنت الحكومة اليوم عن قواعد جديدة لمكافحة خطاب الكراهية على الإنترنت، "
                 "وقال المتحدث إن المنصات أمامها ثلاثون يومًا.\u00a0  \n").encode()
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        for _ in range(50_000_000 // len(paragraph)):
            fh.write(paragraph)
    # VmHWM, not ru_maxrss: the latter is inherited from the (large) test process through fork
    script = ("import re, sys; from rag.documents import load_paths; "
              "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
              "before = hwm(); "
              "(doc,) = load_paths([sys.argv[1]], max_bytes=60_000_000).documents; "
              "print(before, hwm(), len(doc.text))")
    out = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True, text=True,
                         check=True, timeout=600, cwd=Path(__file__).resolve().parent.parent).stdout.split()
    before_kb, peak_kb, chars = map(int, out)
    assert chars > 25_000_000
    assert peak_kb < 1_000_000, f"peak RSS {peak_kb / 1024:.0f} MB (imports {before_kb / 1024:.0f} MB)"


def test_the_same_file_reached_twice_is_one_document(tmp_path):
    write(tmp_path, "corpus/sub/a.txt", ARTICLE.encode())
    write(tmp_path, "corpus/b.txt", ARTICLE.replace("اليوم", "أمس").encode())
    corpus = tmp_path / "corpus"
    result = load_paths([corpus, corpus / "sub" / "a.txt", corpus, str(corpus) + "/"])
    assert sorted(d.doc_id for d in result.documents) == ["b.txt", "sub/a.txt"]
    assert result.per_root[str(corpus / "sub" / "a.txt")] == 1  # found there too: not "no documents"
    (doc,) = load_paths([corpus / "sub" / "a.txt", corpus / "sub" / "a.txt"]).documents
    assert doc.doc_id == "a.txt"


def test_bad_files_are_reported_once_until_they_change(tmp_path):
    from rag.documents import NoticeLog

    corpus = tmp_path / "corpus"
    write(corpus, "a.txt", ARTICLE.encode())
    write(corpus, "broken.txt", bytes(range(256)) * 20)
    write(corpus, "feed.jsonl", b'{"text": "ok"}\nnot json\n')
    write(corpus, "photo.png", b"\x89PNG")
    log = NoticeLog(tmp_path / "index" / "reported-skips.json")
    first = log.new_notices(load_paths([corpus]))
    assert len(first) == 3 and any("broken.txt" in line for line in first)
    assert any("feed.jsonl:2" in line for line in first) and any("photo.png" in line for line in first)
    assert log.new_notices(load_paths([corpus])) == ["3 file(s) still skipped as reported before (unchanged since)"]
    write(corpus, "broken.txt", bytes(range(256)) * 30)  # changed, still broken
    again = log.new_notices(load_paths([corpus]))
    assert any("broken.txt" in line for line in again) and not any("feed.jsonl" in line for line in again)
    assert again[-1].startswith("2 file(s) still skipped")
    (tmp_path / "index" / "reported-skips.json").write_text("{broken")  # unreadable: all reported again
    assert len(log.new_notices(load_paths([corpus]))) == 3


# ----------------------------------------------------------------------------- metadata

def test_record_metadata_under_its_common_field_names(tmp_path):
    records = [
        {"id": "a", "headline": "ألمانيا تغرم منصة", "text": "فرضت ألمانيا غرامة.",
         "source": {"id": "dw", "name": "DW عربية"}, "publishedAt": "2024-03-05T09:30:00Z", "link": "https://example.org/a"},
        {"id": "b", "title": "خبر", "text": "نص الخبر.", "publisher": " Al  Jazeera ",
         "published_at": "2019-03-16 08:15", "url": "https://example.org/b"},
        {"id": "c", "text": "نص ثالث.", "outlet": "BBC", "site": "ignored: outlet comes first",
         "published": "Thu, 01 Aug 2024 10:00:00 +0300"},
        {"id": "d", "text": "نص رابع.", "site_name": "Reuters", "date": 1722470400},
        {"id": "e", "text": "نص خامس.", "outlet": 42, "source": "", "publisher": "Sky News", "date": "yesterday",
         "pub_date": "2024/08/02"},
    ]
    write(tmp_path, "feed.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode())
    docs = {d.doc_id: d for d in load_paths([tmp_path]).documents}
    got = {i: (d.title, d.outlet, d.date, d.url) for i, d in docs.items()}
    assert got["a"] == ("ألمانيا تغرم منصة", "DW عربية", "2024-03-05T09:30:00Z", "https://example.org/a")
    assert got["b"] == ("خبر", "Al Jazeera", "2019-03-16T08:15:00", "https://example.org/b")
    assert got["c"][1:] == ("BBC", "2024-08-01T10:00:00+03:00", None)
    assert got["d"][1:3] == ("Reuters", "2024-08-01T00:00:00Z")  # a Unix time
    # a field that is no text or no date is passed over for the next one
    assert got["e"][1:3] == ("Sky News", "2024-08-02")


@pytest.mark.parametrize("value, expected", [
    ("2024-08-01", "2024-08-01"), ("2024-8-1", "2024-08-01"), ("٢٠٢٤-٠٨-٠١", "2024-08-01"),
    ("2024-08-01T10:20:30.5+0300", "2024-08-01T10:20:30+03:00"), ("2024-08-01T10:20Z", "2024-08-01T10:20:00Z"),
    ("Thu, 01 Aug 2024 10:00:00 GMT", "2024-08-01T10:00:00Z"), ("1 August 2024", "2024-08-01"),
    ("August 1, 2024", "2024-08-01"), ("2024/08/01", "2024-08-01"), (1722470400000, "2024-08-01T00:00:00Z"),
    ("2024-13-01", None), ("2024-02-30", None), ("2024-08-01T25:00", None), ("yesterday", None), ("2024", None),
    ("", None), (2024, None), (True, None), (None, None), ({"date": "2024-08-01"}, None), ("x" * 1000, None),
])
def test_dates_are_normalized_to_iso_or_dropped(value, expected):
    from rag.documents import normalize_date

    assert normalize_date(value) == expected


def test_malformed_metadata_is_ignored_and_the_record_still_loads(tmp_path):
    record = {"id": "m", "text": "نص الخبر.", "title": ["not", "text"], "outlet": {"name": None},
              "date": "2024-13-45", "url": "x" * 5000}
    write(tmp_path, "m.json", json.dumps(record).encode())
    (doc,) = load_paths([tmp_path]).documents
    assert (doc.title, doc.outlet, doc.date, doc.url) == ("نص الخبر", None, None, None)


OPEN_GRAPH_PAGE = """<!doctype html><html><head>
<title>ألمانيا تغرم منصة فيديو | موقع الأخبار</title>
<meta property="og:title" content="ألمانيا تغرم منصة فيديو">
<meta property="og:site_name" content="موقع الأخبار">
<meta property="og:url" content="https://news.example/de-fine?x=1&amp;y=2">
<meta property="article:published_time" content="2024-03-05T09:30:00+01:00">
<link rel="canonical" href="https://news.example/canonical">
</head><body><p>فرضت ألمانيا غرامة على منصة فيديو.</p></body></html>"""

CITATION_PAGE = """<html><head><title>Fines for platforms</title>
<meta name="citation_title" content="غرامات المنصات في أوروبا">
<meta name="citation_journal_title" content="مجلة الإعلام">
<meta name="citation_publication_date" content="2023/11/20">
<link rel="Canonical" href="https://journal.example/42">
</head><body><h1>عنوان آخر</h1><p>نص البحث.</p></body></html>"""

PLAIN_META_PAGE = """<html><head><title>خبر قصير</title>
<META NAME="date" CONTENT="not a date"><meta name="pubdate" content="20220115">
<meta name="description" content="وصف"></head><body><p>نص.</p></body></html>"""


@pytest.mark.parametrize("page, expected", [
    (OPEN_GRAPH_PAGE, ("ألمانيا تغرم منصة فيديو", "موقع الأخبار", "2024-03-05T09:30:00+01:00",
                       "https://news.example/de-fine?x=1&y=2")),
    (CITATION_PAGE, ("غرامات المنصات في أوروبا", "مجلة الإعلام", "2023-11-20", "https://journal.example/42")),
    # a malformed date is passed over for the next tag; no outlet or URL stated: none
    (PLAIN_META_PAGE, ("خبر قصير", None, "2022-01-15", None)),
])
def test_html_meta_tags_give_title_outlet_date_and_url(tmp_path, page, expected):
    write(tmp_path, "page.html", page.encode("utf-8"))
    (doc,) = load_paths([tmp_path]).documents
    assert (doc.title, doc.outlet, doc.date, doc.url) == expected
    assert "og:" not in doc.text and "citation" not in doc.text  # meta tags are not text


def test_seeds_state_no_metadata_so_none_is_invented():
    for doc in load_paths([SEEDS]).documents:
        assert (doc.outlet, doc.date, doc.url) == (None, None, None), doc.doc_id


def test_a_document_without_an_outlet_keeps_its_earlier_hash():
    """Indexes built before outlets were read are not re-embedded for documents that have none."""
    import hashlib

    from rag.documents import content_hash

    for url, date in ((None, None), ("https://x", "2024-08-01")):
        before = hashlib.sha256(json.dumps(["t", "نص", url, date], ensure_ascii=False).encode()).hexdigest()
        assert content_hash("t", "نص", url, date) == before
        assert content_hash("t", "نص", url, date, "BBC") != before
