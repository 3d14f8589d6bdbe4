"""A damaged index is detected and repaired; a failed write leaves the previous index as it was.

Real components throughout: the real model, FAISS files, SQLite and BM25 on disk. One index of two
generations (the seeds, then one more article: two segments) is built per module and copied for
every test. Damage is done to the newest segment's files unless a test says otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rag.store
from rag.api import Index
from rag.errors import StoreError
from rag.store import CURRENT_FILE, GENERATIONS, MANIFEST, SEGMENTS, SQLITE, VECTORS, Store, current_generation

from .conftest import ROOT, SEEDS, cli_env, run_cli, settle
from .legacy import make_legacy

NEW_ARTICLE = (
    "هيئة تنظيم الاتصالات في ألمانيا تفرض غرامة قياسية\n"
    "فرضت الهيئة الألمانية غرامة قدرها خمسون مليون يورو على منصة فيديو بسبب تقاعسها عن حذف "
    "منشورات تحرض على العنف خلال أربع وعشرين ساعة، وفق قانون إنفاذ الشبكات.\n"
    "وقالت الهيئة إن المنصة تلقت أكثر من ألف بلاغ لم تعالج في الوقت المحدد.\n")
QUERIES = ["ماذا قال ماسك عن الحرب الأهلية؟",
           "كم بلغت الغرامة التي فرضتها الهيئة الألمانية على منصة الفيديو؟",
           "What did Musk say about civil war?"]
MODES = ["hybrid", "dense", "bm25"]
REPAIR = "run `rag index` to repair"


def results(index: Index) -> list[list[tuple]]:
    return [[(p.doc_id, p.chunk_id, p.start, p.end, p.score) for p in index.search(q, k=5, mode=mode)]
            for q in QUERIES for mode in MODES]


def assert_same_results(got: list[list[tuple]], expected: list[list[tuple]], same_ids: bool = True) -> None:
    """Same passages in the same order with the same scores; re-embedded documents get new
    chunk ids, so `same_ids=False` compares documents and offsets only."""
    def key(hit: tuple) -> tuple:
        return hit[:4] if same_ids else (hit[0], *hit[2:4])

    assert [[key(hit) for hit in hits] for hits in got] == [[key(hit) for hit in hits] for hits in expected]
    for got_hits, expected_hits in zip(got, expected):
        for got_hit, expected_hit in zip(got_hits, expected_hits):
            assert got_hit[4] == pytest.approx(expected_hit[4], abs=1e-4)


@pytest.fixture(scope="module")
def template(base_settings, embedder, tmp_path_factory):
    """Two generations over a corpus that the tests read but never change."""
    root = tmp_path_factory.mktemp("repair")
    corpus = root / "corpus"
    shutil.copytree(SEEDS, corpus)
    settings = base_settings.replace(index_dir=root / "index")
    index = Index(settings, embedder)
    first = index.update([corpus])
    (corpus / "005_new.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    settle(corpus / "005_new.txt")
    second = index.update([corpus])
    expected = results(index)
    index.close()
    return {"index_dir": settings.resolved_index_dir, "expected": expected,
            "seed_chunks": first.added.chunks, "new_chunks": second.added.chunks}


@pytest.fixture()
def damaged(template, settings, embedder, monkeypatch):
    """A fresh copy of the template index, and a counter of the texts the model encodes."""
    shutil.copytree(template["index_dir"], settings.resolved_index_dir)
    encoded: list[int] = []
    real_encode = embedder.model.encode

    def counting_encode(texts, *args, **kwargs):
        encoded.append(len(texts))
        return real_encode(texts, *args, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", counting_encode)  # what every embedding goes through
    return {"settings": settings, "index": Index(settings, embedder), "encoded": encoded, **template}


def current(settings) -> Path:
    return current_generation(settings.resolved_index_dir)


def segments(settings) -> list[Path]:
    """The segment folders of the current generation, oldest first."""
    manifest = json.loads((current(settings) / MANIFEST).read_text(encoding="utf-8"))
    return [settings.resolved_index_dir / SEGMENTS / s["name"] for s in manifest["segments"]]


def newest_segment(settings) -> Path:
    return segments(settings)[-1]


def generation(settings, name: str) -> Path:
    return settings.resolved_index_dir / GENERATIONS / name


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def scramble(path: Path, length: int = 4096) -> None:
    """Same size, different bytes in the middle."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + length] = bytes(b ^ 0x5A for b in data[middle:middle + length])
    path.write_bytes(bytes(data))


def open_error(settings, check: bool = False) -> str:
    with pytest.raises(StoreError) as caught:
        Store.open(settings.resolved_index_dir, check=check)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(REPAIR), message
    return message


def repair(damaged) -> int:
    """Run `rag index` (the Python way) and return how many texts the model encoded."""
    damaged["encoded"].clear()
    notes: list[str] = []
    damaged["index"].update(notify=notes.append)
    assert any("repairing" in note for note in notes), notes
    return sum(damaged["encoded"])


def repair_quietly(damaged) -> int:
    damaged["encoded"].clear()
    damaged["index"].update()
    return sum(damaged["encoded"])


def assert_intact(damaged, same_ids: bool = True) -> None:
    settings = damaged["settings"]
    assert run_info(settings, "--check")["check"].startswith("all ")
    assert_same_results(results(Index(settings, damaged["index"].embedder)), damaged["expected"], same_ids)


def run_info(settings, *args: str) -> dict:
    return json.loads(run_cli("info", "--json", *args, env=cli_env(settings)).stdout)


# ----------------------------------------------------------------------------- detection

@pytest.mark.parametrize("name", [VECTORS, SQLITE, "postings/vocab.json", "postings/chunk_ids.npy",
                                  "postings/rows.npy"])
def test_a_truncated_file_is_one_line_naming_it(damaged, name):
    settings = damaged["settings"]
    path = newest_segment(settings) / name
    size = path.stat().st_size
    truncate(path)
    message = open_error(settings)
    assert str(path) in message and f"the manifest says {size}" in message


def test_a_damaged_file_is_one_line_from_the_cli(damaged):
    settings = damaged["settings"]
    truncate(newest_segment(settings) / VECTORS)
    proc = run_cli("search", QUERIES[0], env=cli_env(settings), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and VECTORS in lines[0] and lines[0].endswith(REPAIR), proc.stderr


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_a_damaged_manifest_is_named(damaged, damage):
    settings = damaged["settings"]
    path = current(settings) / MANIFEST
    if damage == "truncated":
        truncate(path)
    else:  # still valid JSON, one count changed: only its checksum tells
        text = path.read_text(encoding="utf-8")
        chunks = json.loads(text)["chunks"]
        path.write_text(text.replace(f'"chunks": {chunks}', f'"chunks": {chunks + 1}'), encoding="utf-8")
        assert json.loads(path.read_text(encoding="utf-8"))["chunks"] == chunks + 1
    assert str(path) in open_error(settings)


@pytest.mark.parametrize("damage", ["truncated", "other generation", "missing"])
def test_a_damaged_current_pointer_is_named(damaged, damage):
    settings = damaged["settings"]
    pointer = settings.resolved_index_dir / CURRENT_FILE
    if damage == "truncated":
        truncate(pointer)
    elif damage == "other generation":  # one digit changed: the pointer's own check tells
        pointer.write_text(pointer.read_text(encoding="utf-8").replace("gen-000002", "gen-000001"),
                           encoding="utf-8")
    else:
        pointer.unlink()
    assert str(pointer) in open_error(settings)


@pytest.mark.parametrize("name", [VECTORS, SQLITE])
def test_same_size_damage_is_caught_by_info_check(damaged, name):
    settings = damaged["settings"]
    path = segments(settings)[0] / name  # the seeds' segment: big enough to damage in the middle
    scramble(path)
    Store.open(settings.resolved_index_dir).close()  # sizes match: a plain open does not read it all
    assert run_info(settings)["documents"] == 6
    proc = run_cli("info", "--check", env=cli_env(settings), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {path} is damaged (its checksum does not match the manifest): {REPAIR}"]


def test_damage_that_keeps_size_and_mtime_is_left_to_the_full_check(damaged):
    """The trade-off of a fast `rag index`: a file whose size and mtime are what the manifest
    recorded when its checksum last matched is not read again, so silent damage (bit rot) is
    found by `rag info --check`, which points to `rag index --check`, which repairs it."""
    settings = damaged["settings"]
    path = segments(settings)[0] / VECTORS
    stat = path.stat()
    scramble(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = current(settings)
    assert repair_quietly(damaged) == 0 and current(settings) == before  # nothing to do, nothing noticed
    proc = run_cli("info", "--check", env=cli_env(settings), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {path} is damaged (its checksum does not match the manifest): run `rag index --check` to repair"]
    damaged["encoded"].clear()
    notes: list[str] = []
    damaged["index"].update(check=True, notify=notes.append)
    assert any("repairing" in note for note in notes) and sum(damaged["encoded"]) == 0
    assert_intact(damaged)


def test_a_checked_file_is_not_checksummed_again(damaged, monkeypatch):
    """After a run has checksummed a file (here: all of them, the index copied with new mtimes),
    the next runs only compare its size and mtime."""
    settings = damaged["settings"]
    for path in settings.resolved_index_dir.rglob("*"):
        if path.is_file():
            os.utime(path)
    read: list[Path] = []
    real = rag.store._sha256
    monkeypatch.setattr(rag.store, "_sha256", lambda path: read.append(path) or real(path))
    damaged["index"].update()
    assert len(read) >= 8  # every file once, their new mtimes recorded by the new generation
    read.clear()
    damaged["index"].update()
    assert read == []


def test_an_intact_index_passes_the_check(damaged):
    info = run_info(damaged["settings"], "--check")
    assert info["check"] == f"all {info['files']} files match their checksums" and info["files"] >= 8


# ----------------------------------------------------------------------------- repair

@pytest.mark.parametrize("name", [VECTORS, "postings/vocab.json", "postings/indptr.npy"])
@pytest.mark.parametrize("damage", [truncate, scramble])
def test_faiss_and_bm25_are_repaired_without_the_model(damaged, name, damage):
    settings = damaged["settings"]
    damaged_generation = current(settings)
    damage(newest_segment(settings) / name)
    assert repair(damaged) == 0  # BM25 from the chunk text, FAISS from the vectors kept in SQLite
    assert current(settings) != damaged_generation
    assert_intact(damaged)


def test_damaged_sqlite_falls_back_to_the_previous_generation(damaged):
    """SQLite cannot be rebuilt from the other files: the generation before it is the base, and
    only what that one lacks (the article added since) is read again and embedded."""
    settings = damaged["settings"]
    truncate(newest_segment(settings) / SQLITE)
    assert repair(damaged) == damaged["new_chunks"]
    assert_intact(damaged)


def test_damaged_sqlite_everywhere_rebuilds_from_the_sources(damaged):
    settings = damaged["settings"]
    for folder in segments(settings):
        scramble(folder / SQLITE)
    assert repair(damaged) == damaged["seed_chunks"] + damaged["new_chunks"]
    assert_intact(damaged, same_ids=False)


@pytest.mark.parametrize("damage", ["truncated", "other generation", "missing"])
def test_a_damaged_current_pointer_falls_back_to_the_newest_intact_generation(damaged, damage):
    settings = damaged["settings"]
    pointer = settings.resolved_index_dir / CURRENT_FILE
    if damage == "truncated":
        truncate(pointer)
    elif damage == "other generation":
        pointer.write_text(pointer.read_text(encoding="utf-8").replace("gen-000002", "gen-000001"),
                           encoding="utf-8")
    else:
        pointer.unlink()
    assert repair(damaged) == 0  # gen-000002 itself is intact
    assert current(settings).name == "gen-000003"
    assert_intact(damaged)


def test_a_damaged_manifest_falls_back_to_the_previous_generation(damaged):
    settings = damaged["settings"]
    truncate(current(settings) / MANIFEST)
    assert repair(damaged) == damaged["new_chunks"]
    assert_intact(damaged)


# ----------------------------------------------------------------------------- older indexes

def make_unchecked(damaged) -> Path:
    """Turn the index into what format 2 wrote before checksums: one generation of one set of
    files, no file records, no manifest or pointer check, no copy of the vectors in SQLite."""
    damaged["index"].update(optimize=True)  # one segment: what make_legacy turns into format 2
    index_dir = damaged["settings"].resolved_index_dir
    generation_dir = current_generation(index_dir)
    make_legacy(generation_dir)
    manifest_path = generation_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key in ("files", "manifest_sha256"):
        del manifest[key]
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    db = sqlite3.connect(generation_dir / SQLITE)
    db.execute("DROP TABLE chunk_vectors")
    db.commit()
    db.execute("VACUUM")
    db.close()
    (index_dir / CURRENT_FILE).write_text(json.dumps({"generation": generation_dir.name}), encoding="utf-8")
    return generation_dir


def legacy_refused(settings) -> None:
    with pytest.raises(StoreError, match="older version of Sanad .*run `rag index` to convert it"):
        Store.open(settings.resolved_index_dir)


def test_an_index_from_before_checksums_is_converted_without_the_model(damaged):
    settings = damaged["settings"]
    old = make_unchecked(damaged)
    legacy_refused(settings)

    assert repair_quietly(damaged) == 0  # the vectors come from its FAISS file
    upgraded = current(settings)
    assert upgraded != old and Store.open(settings.resolved_index_dir).manifest.files
    db = sqlite3.connect(newest_segment(settings) / SQLITE)
    assert db.execute("SELECT COUNT(*) FROM chunk_vectors").fetchone()[0] == \
        damaged["seed_chunks"] + damaged["new_chunks"]
    db.close()
    assert_intact(damaged)
    # and from now on its FAISS file is repaired without the model
    truncate(newest_segment(settings) / VECTORS)
    assert repair(damaged) == 0
    assert_intact(damaged)


def test_an_old_index_with_a_damaged_faiss_file_embeds_its_documents_again(damaged):
    """Before the copy in SQLite the vectors lived only in FAISS: nothing else can recover them."""
    settings = damaged["settings"]
    old = make_unchecked(damaged)
    truncate(old / VECTORS)
    legacy_refused(settings)
    assert repair(damaged) == damaged["seed_chunks"] + damaged["new_chunks"]
    assert_intact(damaged, same_ids=False)


# ----------------------------------------------------------------------------- failed writes

def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def pointer_without_space(path: Path, content: str) -> None:
    """The write of CURRENT's temporary file runs out of space half-way."""
    if CURRENT_FILE not in path.name:
        return real_write_synced(path, content)
    path.write_text(content[:5], encoding="utf-8")
    no_space()


real_write_synced = rag.store._write_synced


@pytest.mark.parametrize("where", ["_write_bm25", "_write_synced"])
def test_a_full_disk_leaves_the_previous_index_and_no_staging(damaged, monkeypatch, tmp_path, where):
    """BM25 fails inside the staging folder; CURRENT fails after the folder was renamed into place."""
    settings = damaged["settings"]
    before = current(settings)
    generations = sorted(p.name for p in (settings.resolved_index_dir / GENERATIONS).iterdir())
    corpus = tmp_path / "more"
    corpus.mkdir()
    (corpus / "more.txt").write_text(NEW_ARTICLE + "\nخبر آخر.", encoding="utf-8")
    monkeypatch.setattr(rag.store, where, no_space if where == "_write_bm25" else pointer_without_space)
    with pytest.raises(StoreError) as caught:
        damaged["index"].update([corpus])
    message = str(caught.value)
    assert "\n" not in message
    assert f"the disk holding {settings.resolved_index_dir} is full" in message
    assert "free some space" in message and "previous index is unchanged" in message
    assert current(settings) == before
    assert sorted(p.name for p in (settings.resolved_index_dir / GENERATIONS).iterdir()) == generations
    assert not list(settings.resolved_index_dir.glob(".*.tmp"))
    monkeypatch.undo()
    assert_same_results(results(Index(settings, damaged["index"].embedder)), damaged["expected"])


def test_a_full_disk_is_one_line_from_the_cli(damaged, tmp_path):
    settings = damaged["settings"]
    before = current(settings)
    corpus = tmp_path / "more"
    corpus.mkdir()
    (corpus / "more.txt").write_text(NEW_ARTICLE + "\nخبر آخر.", encoding="utf-8")
    code = textwrap.dedent(f"""
        import errno, sys
        import rag.store
        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        rag.store._write_bm25 = no_space
        from rag.cli import main
        sys.exit(main(["index", {str(corpus)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **cli_env(settings)}, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is full" in errors[0], proc.stderr
    assert current(settings) == before
    assert not list((settings.resolved_index_dir / GENERATIONS).glob(".staging-*"))


def test_rag_remove_refuses_to_carry_damage_into_a_new_generation(damaged):
    settings = damaged["settings"]
    before = current(settings)
    scramble(newest_segment(settings) / VECTORS)
    with pytest.raises(StoreError, match=f"{VECTORS} is damaged .*checksum.*{REPAIR}"):
        damaged["index"].remove(["005_new.txt"])
    assert current(settings) == before
