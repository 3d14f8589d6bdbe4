"""Files handed over by a user (the chat's upload button) → checked copies in the uploads folder
→ an incremental index update.

Each file is checked on its own before it joins the corpus: name, type, size, and that it
actually yields a document (decodable, not empty). Rejected files never reach the uploads
folder; accepted ones are indexed together, and if that update fails they are taken back out,
so the corpus and the index never disagree and nothing already indexed is lost.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .documents import SUPPORTED_SUFFIXES, load_paths
from .types import UpdateReport


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str


@dataclass(frozen=True)
class UploadResult:
    accepted: tuple[str, ...]
    rejected: tuple[Rejected, ...]
    report: UpdateReport | None


def add_uploads(index, files: Sequence[tuple[str, str | Path]], max_bytes: int,
                notify: Callable[[str], None] | None = None) -> UploadResult:
    """Check `files` ((display name, path on disk) pairs), copy the good ones into the
    settings' uploads folder and index them. `index` is a `rag.Index`."""
    uploads = index.settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    existing = index.document_sources() if index.exists() else {}
    accepted: list[tuple[str, Path]] = []
    rejected: list[Rejected] = []
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=uploads.parent) as tmp:
        for number, (name, path) in enumerate(files):
            problem, staged = _check(name, Path(path), Path(tmp) / str(number), max_bytes, existing, uploads)
            if problem:
                rejected.append(Rejected(name, problem))
            else:
                accepted.append((Path(name).name, staged))
        if not accepted:
            return UploadResult((), tuple(rejected), None)
        placed = _place(accepted, uploads, Path(tmp) / "replaced")
        try:
            report = index.update([uploads], notify=notify)
        except BaseException:
            _take_back(placed)
            raise
    return UploadResult(tuple(name for name, _ in accepted), tuple(rejected), report)


def _check(name: str, path: Path, staging: Path, max_bytes: int, existing: dict[str, str],
           uploads: Path) -> tuple[str | None, Path]:
    clean = Path(name).name
    suffix = Path(clean).suffix.lower()
    if not clean or clean.startswith("."):
        return "the file name is not usable: rename the file", path
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        return f"unsupported type {suffix or '(no extension)'}: upload one of {kinds}", path
    size = path.stat().st_size
    if size == 0:
        return "the file is empty", path
    if size > max_bytes:
        return f"{size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit: split the file", path
    staging.mkdir(parents=True)
    staged = staging / clean
    shutil.copyfile(path, staged)
    loaded = load_paths([staged])
    if not loaded.documents:
        reason = loaded.skipped[0].reason if loaded.skipped else "contains no text"
        return reason, staged
    for doc in loaded.documents:
        source = existing.get(doc.doc_id)
        if source and not Path(re.sub(r":\d+$", "", source)).resolve().is_relative_to(uploads.resolve()):
            return (f"a document named {doc.doc_id!r} is already in the corpus ({source}): "
                    "rename the file"), staged
    return None, staged


def _place(accepted: list[tuple[str, Path]], uploads: Path, backups: Path) -> list[tuple[Path, Path | None]]:
    """Move accepted files into the uploads folder, keeping any file they replace."""
    placed = []
    for name, staged in accepted:
        target = uploads / name
        backup = None
        if target.exists():
            backups.mkdir(exist_ok=True)
            backup = backups / name
            shutil.move(target, backup)
        shutil.move(staged, target)
        placed.append((target, backup))
    return placed


def _take_back(placed: list[tuple[Path, Path | None]]) -> None:
    for target, backup in reversed(placed):
        target.unlink(missing_ok=True)
        if backup is not None:
            shutil.move(backup, target)
