"""Uploads into a real index: checked one by one, indexed together, rolled back on failure,
never overwriting each other."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from rag.api import Index
from rag.errors import DocumentError, StoreError
from rag.store import current_generation

ARTICLE = "مقال جديد عن الإشراف\nأعلنت منصة فيديو أنها حذفت أربعة آلاف مقطع يحرض على العنف خلال شهر واحد.\n"


@pytest.fixture()
def index(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    return index


def write(folder, name, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


def test_good_files_are_indexed_and_bad_ones_rejected_with_reasons(index, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    files = [
        ("moderation.txt", write(incoming, "a1", ARTICLE.encode("utf-8"))),
        ("legacy.txt", write(incoming, "a2", ARTICLE.replace("فيديو", "بث").encode("cp1256"))),
        ("empty.md", write(incoming, "a3", b"")),
        ("slides.pptx", write(incoming, "a4", b"PK\x03\x04")),
        ("binary.txt", write(incoming, "a5", bytes(range(256)) * 20)),
        ("huge.txt", write(incoming, "a6", b"x" * 3_000_001)),
        ("../../etc/passwd.txt", write(incoming, "a7", b"root:x:0:0")),  # a path, not a name
    ]
    index.settings = index.settings.replace(max_upload_mb=2.0)
    result = index.add_uploads(files)
    assert result.accepted == ("moderation.txt", "legacy.txt", "passwd.txt")
    reasons = {r.name: r.reason for r in result.rejected}
    assert reasons["empty.md"] == "the file is empty"
    assert reasons["slides.pptx"].startswith("unsupported type .pptx")
    assert "encoding" in reasons["binary.txt"]
    assert "over the 2 MB limit" in reasons["huge.txt"]
    assert result.report.added.documents == 3 and result.report.unchanged.documents == 5
    uploads = index.settings.uploads_dir
    assert sorted(p.name for p in uploads.iterdir()) == ["legacy.txt", "moderation.txt", "passwd.txt"]
    hits = index.search("كم مقطعا حذفت منصة الفيديو خلال شهر؟", k=3)
    assert hits[0].doc_id == "moderation.txt"


def short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def test_same_name_other_content_keeps_both_and_says_so(index, tmp_path):
    first, second = ARTICLE.encode(), (ARTICLE + "وأضافت أنها ستنشر تقريرا شهريا عن المقاطع المحذوفة.\n").encode()
    index.add_uploads([("note.txt", write(tmp_path, "v1", first))])
    result = index.add_uploads([("note.txt", write(tmp_path, "v2", second))])
    stored = f"note-{short_hash(second)}.txt"
    assert result.accepted == (stored,) and [(k.name, k.stored_as) for k in result.renamed] == [("note.txt", stored)]
    assert result.report.added.documents == 1 and result.report.changed.documents == 0
    assert (index.settings.uploads_dir / "note.txt").read_bytes() == first
    assert (index.settings.uploads_dir / stored).read_bytes() == second
    assert {"note.txt", stored} <= set(index.document_sources())
    hits = index.search("هل ستنشر المنصة تقريرا شهريا عن المقاطع المحذوفة؟", k=3)
    assert hits[0].doc_id == stored


def test_a_name_taken_by_a_corpus_article_is_kept_under_name_and_hash(index, tmp_path):
    data = ARTICLE.encode()
    result = index.add_uploads([("000_4180ecd25a632971.txt", write(tmp_path, "a", data))])
    stored = f"000_4180ecd25a632971-{short_hash(data)}.txt"
    assert result.accepted == (stored,) and result.renamed[0].stored_as == stored
    assert result.report.added.documents == 1 and result.report.unchanged.documents == 5


def test_same_content_again_is_one_document_and_says_so(index, tmp_path):
    data = ARTICLE.encode()
    index.add_uploads([("note.txt", write(tmp_path, "v1", data))])
    generation = current_generation(index.settings.resolved_index_dir)
    result = index.add_uploads([("note.txt", write(tmp_path, "v2", data)), ("copy.txt", write(tmp_path, "v3", data))])
    assert result.report is None and result.accepted == ()
    assert [(k.name, k.stored_as) for k in result.already_there] == [("note.txt", "note.txt"), ("copy.txt", "note.txt")]
    assert current_generation(index.settings.resolved_index_dir) == generation
    assert sorted(p.name for p in index.settings.uploads_dir.iterdir()) == ["note.txt"]


def test_same_content_twice_in_one_upload_is_one_document(index, tmp_path):
    data = ARTICLE.encode()
    result = index.add_uploads([("a.txt", write(tmp_path, "1", data)), ("b.txt", write(tmp_path, "2", data))])
    assert result.accepted == ("a.txt",)
    assert [(k.name, k.stored_as) for k in result.already_there] == [("b.txt", "a.txt")]


def test_two_sessions_uploading_the_same_name_at_once_keep_both(index, tmp_path):
    contents = [(ARTICLE + f"وأضافت المنصة في بيانها رقم {n} أنها ستواصل الحذف.\n").encode() for n in range(2)]
    paths = [write(tmp_path, f"v{n}", data) for n, data in enumerate(contents)]
    results, start = [], threading.Barrier(2)

    def upload(path):
        start.wait()
        results.append(index.add_uploads([("same.txt", path)]))

    threads = [threading.Thread(target=upload, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = sorted(name for result in results for name in result.accepted)
    assert len(stored) == 2 and "same.txt" in stored
    kept = {(index.settings.uploads_dir / name).read_bytes() for name in stored}
    assert kept == set(contents)
    assert set(stored) <= set(index.document_sources())


def test_a_record_id_already_in_the_corpus_is_rejected(index, tmp_path):
    index.add_uploads([("feed.jsonl", write(tmp_path, "1", '{"id": "n-1", "text": "نص أول."}\n'.encode()))])
    result = index.add_uploads([("other.jsonl", write(tmp_path, "2", '{"id": "n-1", "text": "نص آخر."}\n'.encode()))])
    (rejected,) = result.rejected
    assert "'n-1' is already in the corpus" in rejected.reason and "another `id`" in rejected.reason


def test_nothing_is_kept_when_indexing_fails(index, tmp_path, monkeypatch):
    generation = current_generation(index.settings.resolved_index_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(index, "update", broken)
    with pytest.raises(RuntimeError):
        index.add_uploads([("moderation.txt", write(tmp_path, "a", ARTICLE.encode()))])
    assert not (index.settings.uploads_dir / "moderation.txt").exists()
    assert current_generation(index.settings.resolved_index_dir) == generation


def test_only_rejections_leave_the_index_alone(index, tmp_path):
    generation = current_generation(index.settings.resolved_index_dir)
    result = index.add_uploads([("x.exe", write(tmp_path, "x", b"MZ"))])
    assert result.report is None and result.accepted == ()
    assert current_generation(index.settings.resolved_index_dir) == generation


# ----------------------------------------------------------------------------- removing uploads

QUESTION = "كم مقطعا حذفت منصة الفيديو خلال شهر؟"


def test_removing_an_upload_deletes_its_file_so_it_stays_out(index, tmp_path):
    index.add_uploads([("moderation.txt", write(tmp_path, "a", ARTICLE.encode()))])
    assert [d.doc_id for d in index.documents() if d.uploaded] == ["moderation.txt"]
    assert index.search(QUESTION, k=1)[0].doc_id == "moderation.txt"
    report = index.remove(["moderation.txt"], uploads_only=True)
    uploaded = index.settings.uploads_dir / "moderation.txt"
    assert report.deleted_files == (str(uploaded),) and report.will_return == ()
    assert not uploaded.exists() and not list(index.settings.home.glob(".removing-*"))
    assert "moderation.txt" not in [p.doc_id for p in index.search(QUESTION, k=10)]
    again = index.update()  # what a chat start or `rag index` does: the upload does not come back
    assert again.added.documents == 0 and "moderation.txt" not in index.document_sources()
    back = index.add_uploads([("moderation.txt", write(tmp_path, "b", ARTICLE.encode()))])
    assert back.accepted == ("moderation.txt",) and back.already_there == ()  # not "already there"


def test_the_chat_may_remove_only_uploads(index):
    generation = current_generation(index.settings.resolved_index_dir)
    with pytest.raises(DocumentError) as error:
        index.remove(["000_4180ecd25a632971.txt"], uploads_only=True)
    assert "is not an upload" in str(error.value) and "would come back" in str(error.value)
    assert current_generation(index.settings.resolved_index_dir) == generation


def test_a_failed_removal_puts_the_uploaded_file_back(index, tmp_path, monkeypatch):
    index.add_uploads([("moderation.txt", write(tmp_path, "a", ARTICLE.encode()))])
    generation = current_generation(index.settings.resolved_index_dir)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rag.store._write_synced", full_disk)  # a removal writes tombstones in a new manifest
    with pytest.raises(StoreError, match="disk holding .* is full"):
        index.remove(["moderation.txt"])
    assert (index.settings.uploads_dir / "moderation.txt").read_bytes() == ARTICLE.encode()
    assert current_generation(index.settings.resolved_index_dir) == generation
    assert not list((index.settings.resolved_index_dir / "generations").glob(".staging-*"))


def test_records_of_one_uploaded_file_go_together(index, tmp_path):
    lines = [json.dumps({"id": f"r{n}", "text": ARTICLE + f"الخبر رقم {n}."}, ensure_ascii=False) for n in (1, 2)]
    index.add_uploads([("feed.jsonl", write(tmp_path, "f", "\n".join(lines).encode()))])
    feed = index.settings.uploads_dir / "feed.jsonl"
    with pytest.raises(DocumentError) as error:
        index.remove(["r1"])
    assert "also holds r2" in str(error.value) and str(feed) in str(error.value)
    assert {"r1", "r2"} <= set(index.document_sources()) and feed.exists()
    report = index.remove([feed])
    assert [d.doc_id for d in report.removed] == ["r1", "r2"] and not feed.exists()
