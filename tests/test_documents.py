from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.documents import decode_bytes, headline, html_text, load_paths, normalize_text
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
    text, title = html_text("<div>one</div><div>two</div><br>three")
    assert text.split() == ["one", "two", "three"] and title is None


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
