"""Uploads into a real index: checked one by one, indexed together, rolled back on failure."""

from __future__ import annotations

import pytest

from rag.api import Index
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
        ("000_4180ecd25a632971.txt", write(incoming, "a7", ARTICLE.encode())),  # a seed's name
    ]
    index.settings = index.settings.replace(max_upload_mb=2.0)
    result = index.add_uploads(files)
    assert result.accepted == ("moderation.txt", "legacy.txt")
    reasons = {r.name: r.reason for r in result.rejected}
    assert reasons["empty.md"] == "the file is empty"
    assert reasons["slides.pptx"].startswith("unsupported type .pptx")
    assert "encoding" in reasons["binary.txt"]
    assert "over the 2 MB limit" in reasons["huge.txt"]
    assert "already in the corpus" in reasons["000_4180ecd25a632971.txt"]
    assert result.report.added.documents == 2 and result.report.unchanged.documents == 5
    uploads = index.settings.uploads_dir
    assert sorted(p.name for p in uploads.iterdir()) == ["legacy.txt", "moderation.txt"]
    hits = index.search("كم مقطعا حذفت منصة الفيديو خلال شهر؟", k=3)
    assert hits[0].doc_id == "moderation.txt"


def test_reuploading_a_file_updates_it(index, tmp_path):
    first = write(tmp_path, "v1", ARTICLE.encode())
    index.add_uploads([("note.txt", first)])
    second = write(tmp_path, "v2", (ARTICLE + "وأضافت أنها ستنشر تقريرا شهريا.\n").encode())
    result = index.add_uploads([("note.txt", second)])
    assert result.report.changed.documents == 1 and result.report.added.documents == 0


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
