"""Cold starts, as a person meets them; prints one JSON object.

Over a temporary RAG_HOME with the seeds indexed (the model provisioned beforehand, as `make
chat` does on its first run), each in a fresh process:
  - `rag search "…" --k 5` and `rag ask "…"`: wall time of the whole command (median of --runs),
  - the chat: from starting `chainlit run` to /health answering, to the index and models being
    ready (the server's "sanad: index ready" line), then one question over a real socket.io
    session: time to the first streamed token and to the end of the answer.
Targets (issue 11): a cold `rag search`/`rag ask` ≤ 3 s; the chat's first answer ≤ 2 s after the
page is up.

    .venv/bin/python bench/cold_start.py [--runs 3] [--out FILE]

RAG_TEST_MODEL_DIR or RAG_MODEL_DIR reuse a provisioned model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from chat_load import Session, load, start_server, stop_server  # noqa: E402

SEARCH = "نداء كرايست تشيرش"
QUESTION = "من أطلق نداء كرايست تشيرش؟"


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - began


def wait_for_line(log: Path, line: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise SystemExit(f"chat server exited:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    raise SystemExit(f"no {line!r} in the server log within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model_dir = os.environ.get("RAG_TEST_MODEL_DIR") or os.environ.get("RAG_MODEL_DIR")
    rag = [sys.executable, "-m", "rag.cli"]
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env.update({"RAG_HOME": str(home), "PYTHONPATH": str(ROOT)})
        if model_dir:
            env["RAG_MODEL_DIR"] = model_dir
        subprocess.run(rag + ["index", "seeds"], env=env, cwd=ROOT, check=True, capture_output=True)
        subprocess.run(rag + ["ask", QUESTION], env=env, cwd=ROOT, check=True, capture_output=True)  # exports
        search = [timed(rag + ["search", SEARCH, "--k", "5"], env) for _ in range(args.runs)]
        ask = [timed(rag + ["ask", QUESTION], env) for _ in range(args.runs)]
        imports = [timed([sys.executable, "-c", "import rag"], env) for _ in range(args.runs)]

        chat_home = home / "chat"
        chat_home.mkdir()
        process, url = start_server(chat_home, Path(model_dir) if model_dir else None)  # builds its index
        wait_for_line(chat_home / "server.log", "sanad: index ready", process)
        stop_server(process)
        shutil.rmtree(chat_home / "corpus")
        began = time.perf_counter()
        process, url = start_server(chat_home, Path(model_dir) if model_dir else None)
        try:
            health_s = time.perf_counter() - began
            wait_for_line(chat_home / "server.log", "sanad: index ready", process)
            ready_s = time.perf_counter() - began
            first: Session = asyncio.run(load(url, [QUESTION], 1, 120))[0]
        finally:
            stop_server(process)
    if first.failure:
        raise SystemExit(f"the chat's first question failed: {first.failure}")
    result = {
        "rag_search_s": {"median": round(statistics.median(search), 2), "runs": [round(t, 2) for t in search]},
        "rag_ask_s": {"median": round(statistics.median(ask), 2), "runs": [round(t, 2) for t in ask]},
        "import_rag_s": round(statistics.median(imports), 2),
        "chat": {"health_s": round(health_s, 2), "index_and_models_ready_s": round(ready_s, 2),
                 "first_answer_first_token_s": first.first_token_s, "first_answer_end_s": first.end_s},
        "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
