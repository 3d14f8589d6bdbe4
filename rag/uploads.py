"""Files handed over by a user (the chat's upload button) → checked copies in the uploads folder
→ an incremental index update.

Each file is checked on its own before it joins the corpus: name, type, size, and that it
actually yields a document (decodable, not empty). Rejected files never reach the uploads
folder; accepted ones are indexed together, and if that update fails they are taken back out,
so the corpus and the index never disagree and nothing already indexed is lost.

Nothing is ever overwritten: a file whose name is taken by other content is kept under its
name plus a short hash of its bytes (`note-1a2b3c4d.txt`), so both are searchable; a file
whose bytes are already in the uploads folder adds nothing. One upload at a time changes the
folder (a lock shared by threads and processes), so two sessions cannot race for a name.

Removing an uploaded document (`rag remove`) deletes its file too, or the next update would
read it again; `set_aside` keeps the file until the index without it is published.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .documents import SUPPORTED_SUFFIXES, load_paths
from .types import UpdateReport

HASH_CHARS = 8  # of the file's sha256 in the name of a renamed upload


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str


@dataclass(frozen=True)
class Kept:
    """An upload that is in the index under another name than the one it came with."""

    name: str  # as uploaded
    stored_as: str  # its file name in the uploads folder, which is its document id


@dataclass(frozen=True)
class UploadResult:
    accepted: tuple[str, ...]  # file names in the uploads folder of the files indexed now
    rejected: tuple[Rejected, ...]
    report: UpdateReport | None
    renamed: tuple[Kept, ...] = ()  # accepted under name + hash: their name belongs to other content
    already_there: tuple[Kept, ...] = ()  # the same bytes are already uploaded: nothing added


def add_uploads(index, files: Sequence[tuple[str, str | Path]], max_bytes: int,
                notify: Callable[[str], None] | None = None) -> UploadResult:
    """Check `files` ((display name, path on disk) pairs), copy the good ones into the
    settings' uploads folder and index them. `index` is a `rag.Index`."""
    uploads = index.settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    with uploads_lock(uploads):
        return _add(index, files, uploads, max_bytes, notify)


@contextmanager
def uploads_lock(uploads: Path) -> Iterator[None]:
    """Held by whoever changes the uploads folder; taken before the index's writer lock."""
    from filelock import FileLock

    with FileLock(str(uploads.parent / ".uploads.lock")):
        yield


@contextmanager
def set_aside(files: Sequence[Path], uploads: Path) -> Iterator[None]:
    """Move uploaded files out of the uploads folder for the duration of the block: deleted if it
    succeeds, put back if it fails. Use under `uploads_lock`. A process killed inside the block
    leaves them in a hidden folder beside the uploads folder, which the next call deletes: the
    index still lists their documents until the next update, which drops them."""
    for abandoned in uploads.parent.glob(".removing-*"):
        shutil.rmtree(abandoned, ignore_errors=True)
    if not files:
        yield
        return
    aside = Path(tempfile.mkdtemp(prefix=".removing-", dir=uploads.parent))
    moved: list[tuple[Path, Path]] = []
    try:
        for number, path in enumerate(files):
            target = aside / f"{number}-{path.name}"
            os.replace(path, target)
            moved.append((path, target))
        yield
    except BaseException:
        for path, target in moved:
            os.replace(target, path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _add(index, files: Sequence[tuple[str, str | Path]], uploads: Path, max_bytes: int,
         notify: Callable[[str], None] | None) -> UploadResult:
    existing = index.document_sources() if index.exists() else {}
    batch: dict[str, str] = {}  # sha256 → stored name, for the files of this upload
    accepted: list[tuple[str, Path]] = []
    rejected: list[Rejected] = []
    renamed: list[Kept] = []
    already: list[Kept] = []
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=uploads.parent) as tmp:
        for number, (name, path) in enumerate(files):
            clean = Path(name).name
            problem = _check_file(clean, Path(path), max_bytes)
            if problem:
                rejected.append(Rejected(name, problem))
                continue
            digest = _file_hash(Path(path))
            if same := batch.get(digest) or _uploaded_copy(uploads, Path(path), digest):
                already.append(Kept(clean, same))
                continue
            taken = {n for n, _ in accepted}
            problem, stored_as, staged = _stage(clean, Path(path), digest, Path(tmp) / str(number),
                                                uploads, existing, taken)
            if problem:
                rejected.append(Rejected(name, problem))
                continue
            accepted.append((stored_as, staged))
            batch[digest] = stored_as
            if stored_as != clean:
                renamed.append(Kept(clean, stored_as))
        report = None
        if accepted:
            placed = [shutil.move(staged, uploads / stored_as) for stored_as, staged in accepted]
            try:
                report = index.update([uploads], notify=notify)
            except BaseException:
                for target in placed:
                    Path(target).unlink(missing_ok=True)
                raise
    return UploadResult(tuple(n for n, _ in accepted), tuple(rejected), report, tuple(renamed), tuple(already))


def _check_file(clean: str, path: Path, max_bytes: int) -> str | None:
    suffix = Path(clean).suffix.lower()
    if not clean or clean.startswith("."):
        return "the file name is not usable: rename the file"
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        return f"unsupported type {suffix or '(no extension)'}: upload one of {kinds}"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    if size > max_bytes:
        return f"{size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit: split the file"
    return None


def _stage(clean: str, path: Path, digest: str, staging: Path, uploads: Path, existing: dict[str, str],
           taken: set[str]) -> tuple[str | None, str, Path]:
    """Copy the file into `staging` under the first free name (its own, then name + hash) and
    check that it yields documents with new ids. → (problem or None, stored name, staged path)."""
    stem, suffix = Path(clean).stem, Path(clean).suffix
    hashed = f"{stem}-{digest[:HASH_CHARS]}{suffix}"
    staging.mkdir(parents=True)
    for stored_as in (clean, hashed):
        if stored_as in taken or (uploads / stored_as).exists():
            continue
        staged = staging / stored_as
        shutil.copyfile(path, staged)
        loaded = load_paths([staged])
        if not loaded.documents:
            return (loaded.skipped[0].reason if loaded.skipped else "contains no text"), stored_as, staged
        clashes = [doc.doc_id for doc in loaded.documents if doc.doc_id in existing]
        if not clashes:
            return None, stored_as, staged
        staged.unlink()
        by_record = [i for i in clashes if not re.fullmatch(rf"{re.escape(stored_as)}(#\d+)?", i)]
        if by_record:  # a record's own `id` is taken: another file name cannot help
            return (f"a document with the id {by_record[0]!r} is already in the corpus "
                    f"({existing[by_record[0]]}): give the record another `id`"), stored_as, staging
    return f"the names {clean} and {hashed} are both taken: rename the file", clean, staging


def _uploaded_copy(uploads: Path, path: Path, digest: str) -> str | None:
    """The name of a file in the uploads folder with exactly these bytes, if there is one."""
    size = path.stat().st_size
    for other in sorted(uploads.iterdir()):
        if other.is_file() and other.stat().st_size == size and _file_hash(other) == digest:
            return other.name
    return None


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
