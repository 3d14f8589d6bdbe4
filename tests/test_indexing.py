"""Incremental, atomic index updates: real files, the real model, a real FAISS index and SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rag.api import Index
from rag.errors import DocumentError, IndexNotFoundError
from rag.store import GENERATIONS, SEGMENTS, SQLITE, Store, current_generation

from .conftest import ROOT, SEEDS, cli_env, run_cli
from .legacy import make_legacy

NEW_ARTICLE = (
    "هيئة تنظيم الاتصالات في ألمانيا تفرض غرامة قياسية\n"
    "فرضت الهيئة الألمانية غرامة قدرها خمسون مليون يورو على منصة فيديو بسبب تقاعسها عن حذف "
    "منشورات تحرض على العنف خلال أربع وعشرين ساعة، وفق قانون إنفاذ الشبكات.\n"
    "وقالت الهيئة إن المنصة تلقت أكثر من ألف بلاغ لم تعالج في الوقت المحدد.\n")


def stored_chunks(store: Store) -> int:
    """Live chunks as the segments' SQLite files count them (tombstoned ones left out), through
    the store's open connections: a writer may delete the files of an old generation meanwhile."""
    return sum(segment.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] - record.deleted_chunks
               for segment, record in zip(store._segments, store.manifest.segments))


def docs_in(store: Store) -> set[str]:
    return set(store.document_ids())


def test_first_run_indexes_everything(settings, embedder, corpus):
    report = Index(settings, embedder).update([corpus])
    assert report.full_rebuild and report.rebuild_reason == "new index"
    assert report.added.documents == 5 and report.added.chunks == report.embedded_chunks > 20
    store = Index(settings, embedder).store
    assert store.size == report.added.chunks
    assert store.manifest.documents == 5 and store.manifest.chunks == report.added.chunks
    assert store.manifest.embedding["name"] == "multilingual-e5-small"
    assert store.manifest.embedding["dimension"] == 384
    assert store.manifest.settings["chunk_tokens"] == settings.chunk_tokens
    assert store.manifest.sources == [str(corpus.resolve())]


def test_add_edit_delete_embed_only_what_changed(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    before = index.store
    vectors_before = {cid: before.vectors_of([cid])[0] for cid in range(1, before.size + 1)}

    (corpus / "005_new.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    added = index.update([corpus])
    assert (added.added.documents, added.changed.documents, added.removed.documents) == (1, 0, 0)
    assert added.unchanged.documents == 5 and not added.full_rebuild
    assert added.embedded_chunks == added.added.chunks  # only the new article was embedded
    hits = index.search("كم بلغت الغرامة التي فرضتها الهيئة الألمانية على منصة الفيديو؟", k=3)
    assert hits[0].doc_id == "005_new.txt"

    # unchanged documents keep their chunk ids and vectors
    store = index.store
    for chunk_id, vector in vectors_before.items():
        np.testing.assert_array_equal(store.vectors_of([chunk_id])[0], vector)

    edited = corpus / "004_bc7fe0a8626652c3.txt"
    edited.write_text(edited.read_text(encoding="utf-8") + "\nوأضاف المتحدث أن البرنامج سيشمل فرنسا.\n",
                      encoding="utf-8")
    changed = index.update([corpus])
    assert (changed.added.documents, changed.changed.documents, changed.removed.documents) == (0, 1, 0)
    assert changed.embedded_chunks == changed.changed.chunks

    (corpus / "005_new.txt").unlink()
    removed = index.update([corpus])
    assert (removed.added.documents, removed.changed.documents, removed.removed.documents) == (0, 0, 1)
    assert removed.embedded_chunks == 0 and removed.removed.chunks == added.added.chunks
    assert "005_new.txt" not in docs_in(index.store)
    hits = index.search("كم بلغت الغرامة التي فرضتها الهيئة الألمانية على منصة الفيديو؟", k=10)
    assert all(h.doc_id != "005_new.txt" for h in hits)
    assert index.store.size == stored_chunks(index.store) == index.store.manifest.chunks


def test_unchanged_run_publishes_nothing(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    again = index.update([corpus])
    assert again.embedded_chunks == 0 and again.unchanged.documents == 5
    assert current_generation(settings.resolved_index_dir) == generation


def test_files_as_recorded_are_not_read_again(settings, embedder, corpus, monkeypatch):
    """An update reads only files whose size or mtime differ from what the index recorded; a
    file touched without a change is read, found unchanged and embedded no more."""
    import rag.documents

    index = Index(settings, embedder)
    index.update([corpus])
    read: list[str] = []
    real_load = rag.documents._load_file
    monkeypatch.setattr(rag.documents, "_load_file",
                        lambda path, *args, **kw: read.append(path.name) or real_load(path, *args, **kw))
    first, touched = sorted(corpus.glob("*.txt"))[:2]
    (corpus / "new.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    os.utime(touched)
    report = index.update()
    assert sorted(read) == sorted(["new.txt", touched.name])
    assert report.added.documents == 1 and report.changed.documents == 0 and report.unchanged.documents == 5
    assert report.embedded_chunks == report.added.chunks
    read.clear()
    first.write_text(first.read_text(encoding="utf-8") + "\nفقرة أخرى.\n", encoding="utf-8")
    touched.unlink()
    report = index.update()
    # new.txt and the touched file were modified just now (their state is not trusted yet)
    assert sorted(read) == sorted(["new.txt", first.name])
    assert report.changed.documents == 1 and report.removed.documents == 1 and report.unchanged.documents == 4
    assert touched.name not in docs_in(index.store) and "new.txt" in docs_in(index.store)
    read.clear()
    monkeypatch.setattr("rag.store.READER_VERSION", "another reader")  # it may read files differently
    report = index.update()
    assert len(read) == 5 and report.embedded_chunks == 0 and report.unchanged.documents == 5


def test_rerun_without_paths_uses_the_recorded_sources(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    (corpus / "005_new.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    assert index.update().added.documents == 1


def test_changed_settings_rebuild_instead_of_mixing(settings, embedder, corpus):
    Index(settings, embedder).update([corpus])
    smaller = settings.replace(chunk_tokens=80)
    report = Index(smaller, embedder).update([corpus])
    assert report.full_rebuild and "chunk_tokens" in report.rebuild_reason
    assert report.embedded_chunks == report.added.chunks and report.added.documents == 5
    assert Index(smaller, embedder).store.manifest.settings["chunk_tokens"] == 80
    forced = Index(smaller, embedder).update([corpus], full=True)
    assert forced.full_rebuild and forced.rebuild_reason == "full rebuild requested"


def test_bad_input_leaves_the_index_untouched(settings, embedder, corpus, tmp_path):
    index = Index(settings, embedder)
    index.update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    with pytest.raises(DocumentError, match="does not exist"):
        index.update([tmp_path / "typo"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_bytes(b"PK")
    with pytest.raises(DocumentError, match="no supported documents.*unchanged"):
        index.update([empty])
    assert current_generation(settings.resolved_index_dir) == generation
    assert docs_in(index.store) == {p.name for p in SEEDS.iterdir()}


def test_sources_accumulate_unless_replaced(settings, embedder, corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    index = Index(settings, embedder)
    index.update([corpus])
    added = index.update([other])
    assert added.added.documents == 1 and added.unchanged.documents == 5 and added.removed.documents == 0
    assert index.sources() == [str(corpus.resolve()), str(other.resolve())]
    replaced = index.update([other], replace=True)
    assert replaced.removed.documents == 5 and docs_in(index.store) == {"only.txt"}


def test_a_vanished_source_is_an_error_not_a_mass_removal(settings, embedder, corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    index = Index(settings, embedder)
    index.update([corpus, other])
    generation = current_generation(settings.resolved_index_dir)
    (other / "only.txt").unlink()
    other.rmdir()
    with pytest.raises(DocumentError, match="no longer exists.*--replace"):
        index.update()
    assert current_generation(settings.resolved_index_dir) == generation


def test_search_without_index_says_how_to_build_one(settings, embedder):
    with pytest.raises(IndexNotFoundError, match="rag index seeds"):
        Index(settings, embedder).search("سؤال")


def test_old_generations_are_cleaned_up(settings, embedder, corpus):
    index = Index(settings, embedder)
    index.update([corpus])
    for i in range(3):
        (corpus / f"extra{i}.txt").write_text(NEW_ARTICLE + f"\nرقم {i}.", encoding="utf-8")
        index.update([corpus])
    names = sorted(p.name for p in (settings.resolved_index_dir / GENERATIONS).iterdir())
    assert len(names) == 2 and names[-1] == current_generation(settings.resolved_index_dir).name


# --------------------------------------------------------------------- crashes and concurrency

def _spawn_index(settings, corpus: Path, extra_code: str = "") -> subprocess.Popen:
    code = "\n".join([
        "import sys",
        textwrap.dedent(extra_code),
        "from rag.cli import main",
        f"sys.exit(main(['index', {str(corpus)!r}]))",
    ])
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **cli_env(settings)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _seed_search_ok(settings) -> None:
    proc = run_cli("search", "ماذا قال ماسك عن الحرب الأهلية؟", "--json", env=cli_env(settings))
    hits = json.loads(proc.stdout)
    assert hits and hits[0]["doc_id"] == "000_4180ecd25a632971.txt"


def test_killed_while_embedding_leaves_previous_index_usable(settings, embedder, corpus, tmp_path):
    Index(settings, embedder).update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(60):
        (many / f"{i:03d}.txt").write_text(NEW_ARTICLE + f"\nالخبر رقم {i}.", encoding="utf-8")
    marker = tmp_path / "embedding-started"
    proc = _spawn_index(settings, many, extra_code=textwrap.dedent(f"""
        import pathlib, time, rag.embeddings as e
        _orig = e.Embedder.embed_passages_with_spans
        def spy(self, texts, spans, progress=False):
            result = _orig(self, texts, spans, progress)
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(60)  # still embedding when the kill comes
            return result
        e.Embedder.embed_passages_with_spans = spy
    """))
    assert _wait_for(marker.exists), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert current_generation(settings.resolved_index_dir) == generation
    _seed_search_ok(settings)
    # the next run finishes the job and cleans up after the dead writer
    report = Index(settings, embedder).update([many])
    assert report.added.documents == 60 and report.unchanged.documents == 5
    assert not list((settings.resolved_index_dir / GENERATIONS).glob(".staging-*"))


def test_killed_while_publishing_leaves_previous_index_usable(settings, embedder, corpus):
    Index(settings, embedder).update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    (corpus / "005_new.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    marker = settings.home / "publishing"
    settings.home.mkdir(parents=True, exist_ok=True)
    # Hang right before CURRENT is swapped: the new generation is fully written but not live.
    proc = _spawn_index(settings, corpus, extra_code=textwrap.dedent(f"""
        import pathlib, time, rag.store as s
        def hang(path, content):
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(600)
        s._atomic_write = hang
    """))
    assert _wait_for(marker.exists), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert current_generation(settings.resolved_index_dir) == generation
    assert "005_new.txt" not in docs_in(Store.open(settings.resolved_index_dir))
    _seed_search_ok(settings)
    report = Index(settings, embedder).update([corpus])
    assert report.added.documents == 1
    assert "005_new.txt" in docs_in(Store.open(settings.resolved_index_dir))


def test_concurrent_index_runs_are_serialized(settings, corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    first = _spawn_index(settings, corpus)
    second = _spawn_index(settings, other)
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for another indexing run" in err1 + err2
    store = Store.open(settings.resolved_index_dir)
    # both runs took effect, one after the other, and the result is complete and consistent
    assert docs_in(store) == {"only.txt"} | {p.name for p in corpus.iterdir()}
    assert store.size == stored_chunks(store) == store.manifest.chunks


def test_reader_in_another_process_sees_old_or_new_never_a_mix(settings, embedder, corpus, tmp_path):
    index = Index(settings, embedder)
    index.update([corpus])
    ready = tmp_path / "reader-ready"
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import pathlib, time
            from rag.store import Store
            seen = set()
            end = time.time() + 25
            while time.time() < end:
                s = Store.open({str(settings.resolved_index_dir)!r})
                n = sum(seg.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] - r.deleted_chunks
                        for seg, r in zip(s._segments, s.manifest.segments))
                assert s.size == n == s.manifest.chunks, (s.size, n, s.manifest.chunks)
                seen.add(s.manifest.generation)
                s.close()
                pathlib.Path({str(ready)!r}).touch()
            print(len(seen))
        """)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists():  # the reader is reading before the writer starts
        assert time.time() < deadline and reader.poll() is None, reader.stderr.read() if reader.poll() else ""
        time.sleep(0.05)
    for i in range(4):
        (corpus / f"n{i}.txt").write_text(NEW_ARTICLE + f"\nرقم {i}.", encoding="utf-8")
        index.update([corpus])
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert int(out.strip()) >= 2


# --------------------------------------------------------------------- listing and removing documents

REMOVED = "001_4cc70f0e583a2e76.txt"
CHRISTCHURCH = "ما هي مبادرة نداء كرايست تشيرش التي أطلقها ماكرون وأرديرن؟"


def test_documents_lists_ids_titles_files_chunks_and_characters(settings, embedder, corpus):
    record = {"id": "wire-1", "title": "خبر وكالة", "text": NEW_ARTICLE, "url": "https://example.org/a",
              "date": "2024-08-05"}
    (corpus / "wire.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    index = Index(settings, embedder)
    index.update([corpus])
    documents = index.documents()
    assert [d.doc_id for d in documents] == sorted(p.name for p in SEEDS.iterdir()) + ["wire-1"]
    assert sum(d.chunks for d in documents) == index.store.size
    for d in documents:
        stored = index.store.document(d.doc_id)
        assert (d.title, d.characters, d.source_path) == (stored.title, len(stored.text), stored.source_path)
        assert d.chunks >= 1 and not d.uploaded
    wire = documents[-1]
    assert (wire.url, wire.date) == (record["url"], record["date"])
    assert wire.source_path == f"{corpus.resolve()}/wire.jsonl:1"
    assert documents[0].date is None and documents[0].url is None


def test_remove_takes_out_one_document_and_embeds_nothing(settings, embedder, corpus, monkeypatch):
    index = Index(settings, embedder)
    index.update([corpus])
    before = index.store
    chunks_before = {d.doc_id: d.chunks for d in index.documents()}
    removed_ids = {(i,) for i in before.chunk_ids_of([REMOVED]).tolist()}
    kept_vectors = {cid: before.vectors_of([cid])[0] for cid in range(1, before.size + 1)
                    if (cid,) not in removed_ids}

    assert index.search(CHRISTCHURCH, k=1)[0].doc_id == REMOVED

    def no_embedding(*args, **kwargs):
        raise AssertionError("removal must not embed anything")

    monkeypatch.setattr(type(embedder), "embed_passages_with_spans", no_embedding)
    report = index.remove([REMOVED])
    assert [d.doc_id for d in report.removed] == [REMOVED] and report.chunks == chunks_before[REMOVED]
    assert [d.doc_id for d in report.will_return] == [REMOVED] and report.deleted_files == ()
    after = index.store
    assert after.generation_dir != before.generation_dir
    assert docs_in(after) == set(chunks_before) - {REMOVED}
    assert after.size == before.size - chunks_before[REMOVED] == after.manifest.chunks
    assert after.manifest.documents == 4 and after.manifest.fingerprint == before.manifest.fingerprint
    assert after.manifest.sources == before.manifest.sources
    for cid, vector in kept_vectors.items():  # the other documents' vectors are the very same
        np.testing.assert_array_equal(after.vectors_of([cid])[0], vector)
    for mode in ("hybrid", "bm25"):
        assert all(p.doc_id != REMOVED for p in index.search(CHRISTCHURCH, k=10, mode=mode))
    assert (corpus / REMOVED).exists()  # a source folder's file is left alone …

    monkeypatch.undo()
    again = index.update()  # … so the next update of the folder reads it again
    assert again.added.documents == 1 and again.embedded_chunks == chunks_before[REMOVED]


def test_remove_by_path_and_unknown_ids_remove_nothing(settings, embedder, corpus, tmp_path):
    index = Index(settings, embedder)
    index.update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    for wrong in (["no-such-id"], [REMOVED, "no-such-id"], [str(tmp_path / "elsewhere.txt")]):
        with pytest.raises(DocumentError) as error:
            index.remove(wrong)
        assert repr(wrong[-1]) in str(error.value) and "`rag docs`" in str(error.value)
        assert "\n" not in str(error.value)
    assert current_generation(settings.resolved_index_dir) == generation
    report = index.remove(corpus / REMOVED)
    assert [d.doc_id for d in report.removed] == [REMOVED]
    assert len(index.remove([corpus]).removed) == 4  # a folder: every document read from it
    assert index.documents() == [] and index.search("ماسك", k=3) == []


def test_killed_while_publishing_a_removal_leaves_the_old_index(settings, embedder, corpus):
    Index(settings, embedder).update([corpus])
    generation = current_generation(settings.resolved_index_dir)
    marker = settings.home / "publishing"
    settings.home.mkdir(parents=True, exist_ok=True)
    proc = _spawn_cli(settings, ["remove", REMOVED], extra_code=f"""
        import pathlib, time, rag.store as s
        def hang(path, content):
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(600)
        s._atomic_write = hang
    """)
    assert _wait_for(marker.exists), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert current_generation(settings.resolved_index_dir) == generation
    store = Store.open(settings.resolved_index_dir)
    assert REMOVED in docs_in(store) and store.size == store.manifest.chunks
    assert Index(settings, embedder).remove([REMOVED]).removed[0].doc_id == REMOVED
    assert not list((settings.resolved_index_dir / GENERATIONS).glob(".staging-*"))
    assert REMOVED not in docs_in(Store.open(settings.resolved_index_dir))


def _spawn_cli(settings, args: list[str], extra_code: str = "") -> subprocess.Popen:
    code = "\n".join(["import sys", textwrap.dedent(extra_code), "from rag.cli import main",
                      f"sys.exit(main({args!r}))"])
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **cli_env(settings)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------- format 2 indexes

def make_without_outlets(generation_dir: Path, old_hashes: dict[str, str]) -> None:
    """Turn a generation into what format 2 wrote before outlets — one set of files, no
    `outlet` column, content hashes without it — with checksums as they were then."""
    db = sqlite3.connect(generation_dir.parent.parent / SEGMENTS / Store.open(
        generation_dir.parent.parent).segment_names[0] / SQLITE)
    db.execute("DROP INDEX IF EXISTS documents_fields")  # an index of the current format
    db.execute("ALTER TABLE documents DROP COLUMN outlet")
    db.executemany("UPDATE documents SET sha256 = ? WHERE doc_id = ?", [(h, i) for i, h in old_hashes.items()])
    db.commit()
    db.execute("VACUUM")
    db.close()
    make_legacy(generation_dir)


def test_a_format_2_index_without_outlets_is_converted_by_the_next_run(settings, embedder, corpus):
    from rag.documents import content_hash
    from rag.errors import StoreError

    record = {"id": "wire-1", "title": "خبر وكالة", "text": NEW_ARTICLE, "source": "وكالة الأنباء",
              "date": "2024-08-05"}
    (corpus / "wire.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    index = Index(settings, embedder)
    index.update([corpus])
    stored = index.store.document("wire-1")
    assert stored.outlet == "وكالة الأنباء"
    question = "كم بلغت الغرامة التي فرضتها الهيئة الألمانية؟"
    expected = [(p.doc_id, p.start, p.end, p.score) for p in index.search(question, k=5)]
    old = current_generation(settings.resolved_index_dir)
    make_without_outlets(old, {"wire-1": content_hash(stored.title, stored.text, stored.url, stored.date)})

    with pytest.raises(StoreError, match="older version .* run `rag index` to convert it"):
        Store.open(settings.resolved_index_dir)
    reopened = Index(settings, embedder)
    notes: list[str] = []
    report = reopened.update(notify=notes.append)  # converted; only the record whose outlet is new is embedded
    assert any("converting the index" in note for note in notes), notes
    assert (report.changed.documents, report.unchanged.documents, report.full_rebuild) == (1, 5, False)
    assert report.embedded_chunks == report.changed.chunks
    assert current_generation(settings.resolved_index_dir) != old
    assert reopened.store.manifest.format_version == 3
    assert [(p.doc_id, p.start, p.end, p.score) for p in reopened.search(question, k=5)] == expected
    assert {d.doc_id: d.outlet for d in reopened.documents()}["wire-1"] == "وكالة الأنباء"
    assert [p.doc_id for p in reopened.search(question, k=1, sources="وكالة الأنباء")] == ["wire-1"]
