"""Copy Chainlit's web frontend into chat_app/.offline-ui without its CDN links.

The stock page loads Google Fonts and a KaTeX stylesheet from jsdelivr. Sanad is used offline
and on sensitive material, so the page it serves must not call out to any third party; the
config's `custom_build` points at this copy. Run: `.venv/bin/python chat_app/offline_ui.py`.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import chainlit

TARGET = Path(__file__).resolve().parent / ".offline-ui"
EXTERNAL = re.compile(r"\s*<link[^>]+https://(?:fonts\.googleapis\.com|fonts\.gstatic\.com|cdn\.jsdelivr\.net)[^>]*>")


def build(target: Path = TARGET) -> Path:
    source = Path(chainlit.__file__).parent / "frontend" / "dist"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("*.map"))
    index = staging / "index.html"
    html, removed = EXTERNAL.subn("", index.read_text(encoding="utf-8"))
    index.write_text(html, encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"offline UI in {target} ({removed} external links removed)", file=sys.stderr)
    return target


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET)
