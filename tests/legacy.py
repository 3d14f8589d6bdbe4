"""Indexes as format 2 wrote them (one generation = one SQLite, FAISS file and bm25 folder, no
segments), made from a generation of one segment that the current code wrote."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from rag.store import MANIFEST, SEGMENTS, _manifest_checksum


def make_legacy(generation_dir: Path) -> None:
    manifest_path = generation_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    (segment,) = manifest.pop("segments")
    folder = generation_dir.parent.parent / SEGMENTS / segment["name"]
    for path in folder.iterdir():
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, generation_dir / path.name)
    shutil.rmtree(folder)
    for key in ("next_chunk_id", "manifest_sha256"):
        del manifest[key]
    manifest["format_version"] = manifest["settings"]["format_version"] = 2
    manifest["files"] = {}
    for path in sorted(generation_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            data = path.read_bytes()
            manifest["files"][path.relative_to(generation_dir).as_posix()] = {
                "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["manifest_sha256"] = _manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
