"""Many chat sessions asking at once over real socket.io connections; prints one JSON object.

Starts the chat server (`chainlit run chat_app/app.py`) on a free 127.0.0.1 port over a
temporary RAG_HOME with the seeds (or uses --url), waits until it answers one question, then
opens N socket.io sessions the way the browser does (websocket transport, Chainlit's session
auth payload, `connection_successful`) and has every session send its question at the same
moment. Per session it measures the time to the first streamed token and to the end of the
answer (`task_end`). A session fails when it cannot connect, is disconnected, gets an error
message, an empty answer, or no answer within --timeout. The server's RSS (now and peak) comes
from /proc, and its log is scanned for tracebacks.

    flock /tmp/bench.lock .venv/bin/python bench/chat_load.py [--sessions 50] [--out FILE]

Needs python-socketio's asyncio client (the `test` extra) and a provisioned model
(RAG_TEST_MODEL_DIR or RAG_MODEL_DIR reuse one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import socketio

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUESTIONS = ROOT / "tests" / "data" / "eval" / "seeds_qa_dev.jsonl"


@dataclass
class Session:
    number: int
    question: str
    first_token_s: float | None = None
    end_s: float | None = None
    answer: str = ""
    failure: str | None = None
    events: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, model_dir: Path | None) -> tuple[subprocess.Popen, str]:
    corpus = home / "corpus"
    shutil.copytree(SEEDS, corpus)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_HOME": str(home), "RAG_CHAT_SOURCES": str(corpus),
                "CHAINLIT_APP_ROOT": str(ROOT / "chat_app"), "PYTHONPATH": str(ROOT)})
    if model_dir:
        env["RAG_MODEL_DIR"] = str(model_dir)
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "chainlit", "run", "chat_app/app.py", "--headless", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chat server exited:\n{(home / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise SystemExit("chat server did not start")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def rss_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}[key]] = round(int(rest.split()[0]) / 1024, 1)
    return values


def login_cookie(url: str) -> dict[str, str]:
    """With saved chats and no password login, the chat logs in the local user by Chainlit's
    header login (POST /auth/header from 127.0.0.1): the sessions share that user's cookie."""
    with urllib.request.urlopen(url + "/auth/config", timeout=30) as response:
        config = json.load(response)
    if not config.get("requireLogin"):
        return {}
    if not config.get("headerAuth"):
        raise SystemExit("the chat server needs a password login: run this against one without RAG_CHAT_USERNAME")
    request = urllib.request.Request(url + "/auth/header", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        cookies = [c.split(";")[0] for c in response.headers.get_all("set-cookie") or []]
    return {"Cookie": "; ".join(cookies)}


async def run_session(url: str, session: Session, go: asyncio.Event, connected: asyncio.Barrier,
                      timeout: float, headers: dict[str, str]) -> None:
    client = socketio.AsyncClient(reconnection=False)
    client.on("*", lambda event, *data: session.events.append(event))
    done = asyncio.Event()
    asked_at = 0.0
    asked = False

    def elapsed() -> float:
        return round(time.perf_counter() - asked_at, 3)

    @client.on("stream_start")
    async def stream_start(step):
        if asked and session.first_token_s is None and step.get("type") == "assistant_message":
            session.first_token_s = elapsed()

    @client.on("stream_token")
    async def stream_token(data):
        if asked and session.first_token_s is None:
            session.first_token_s = elapsed()

    @client.on("new_message")
    async def new_message(step):
        if not asked:
            return
        if step.get("isError"):
            session.failure = f"error message: {str(step.get('output'))[:200]}"
        elif step.get("type") == "assistant_message":
            session.answer = step.get("output") or ""

    @client.on("update_message")
    async def update_message(step):
        if asked and step.get("type") == "assistant_message":
            session.answer = step.get("output") or ""

    chat_started = asyncio.Event()  # on_chat_start sent the settings and ended its task
    settings_seen = started = False

    @client.on("chat_settings")
    async def chat_settings(_):
        nonlocal settings_seen
        settings_seen = True

    @client.on("task_start")
    async def task_start(_):
        nonlocal started
        started = started or asked

    @client.on("task_end")
    async def task_end(_):
        if started:
            session.end_s = elapsed()
            done.set()
        elif settings_seen:
            chat_started.set()

    @client.on("disconnect")
    async def disconnect(*reason):
        if not done.is_set():
            session.failure = session.failure or f"disconnected ({', '.join(map(str, reason)) or 'no reason'})"
            done.set()

    try:
        await client.connect(url, socketio_path="/ws/socket.io", transports=["websocket"],
                             headers=dict(headers),  # engineio takes the cookie out of the dict it gets
                             auth={"clientType": "webapp", "sessionId": str(uuid.uuid4()), "threadId": None,
                                   "userEnv": "{}", "chatProfile": "Sanad"}, wait_timeout=60)
        await client.emit("connection_successful")
        await asyncio.wait_for(chat_started.wait(), timeout)
    except Exception as exc:  # noqa: BLE001 - every way of not connecting is one failure
        session.failure = f"connect: {type(exc).__name__}: {exc}"
        await connected.wait()
        return
    await connected.wait()
    await go.wait()
    asked_at = time.perf_counter()
    asked = True
    message = {"id": str(uuid.uuid4()), "threadId": "", "name": "User", "type": "user_message",
               "output": session.question, "createdAt": datetime.now(UTC).isoformat()}
    try:
        await client.emit("client_message", {"message": message, "fileReferences": []})
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        session.failure = session.failure or f"no answer within {timeout:.0f} s"
    except Exception as exc:  # noqa: BLE001
        session.failure = session.failure or f"{type(exc).__name__}: {exc}"
    if session.failure is None and not session.answer.strip():
        session.failure = "empty answer"
    if session.failure is None and session.first_token_s is None:
        session.failure = "nothing was streamed"
    await client.disconnect()


async def load(url: str, questions: list[str], sessions: int, timeout: float) -> list[Session]:
    go = asyncio.Event()
    connected = asyncio.Barrier(sessions + 1)
    runs = [Session(i, questions[i % len(questions)]) for i in range(sessions)]
    headers = await asyncio.to_thread(login_cookie, url)
    tasks = [asyncio.create_task(run_session(url, s, go, connected, timeout, headers)) for s in runs]
    await connected.wait()
    go.set()
    await asyncio.gather(*tasks)
    return runs


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each session waits for its answer")
    parser.add_argument("--url", help="a running chat server instead of starting one")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="ask at once from the start, while the server may still be loading its index")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--log", type=Path, help="keep the server's log here")
    args = parser.parse_args()

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    model_dir = os.environ.get("RAG_TEST_MODEL_DIR") or os.environ.get("RAG_MODEL_DIR")
    with tempfile.TemporaryDirectory(prefix="chat-load-") as tmp:
        process = None
        url = args.url
        if url is None:
            process, url = start_server(Path(tmp), Path(model_dir) if model_dir else None)
        try:
            if not args.no_warm_up:  # index and model loaded before the sessions start
                warm = asyncio.run(load(url, questions, 1, args.timeout))[0]
                if warm.failure:
                    raise SystemExit(f"the warm-up question failed: {warm.failure}; events: {warm.events[-20:]}")
            began = time.perf_counter()
            runs = asyncio.run(load(url, questions, args.sessions, args.timeout))
            wall = time.perf_counter() - began
            log = (Path(tmp) / "server.log").read_text(errors="replace") if process else ""
            first = [s.first_token_s for s in runs if s.failure is None]
            end = [s.end_s for s in runs if s.failure is None]
            failures = [f"session {s.number}: {s.failure}" for s in runs if s.failure]
            result = {
                "sessions": args.sessions,
                "failures": len(failures),
                "failure_reasons": sorted(set(f.split(": ", 1)[1] for f in failures))[:10],
                "first_token_s": {"p50": percentile(first, 50), "p95": percentile(first, 95),
                                  "max": max(first, default=None)},
                "end_s": {"p50": percentile(end, 50), "p95": percentile(end, 95), "max": max(end, default=None)},
                "wall_s": round(wall, 1),
                "server": rss_mb(process.pid) if process else {},
                "server_log": {"tracebacks": log.count("Traceback (most recent call last)"),
                               "recursion_errors": log.count("RecursionError"),
                               "index_loads": log.count("sanad: index ready")},
                "cpus": os.cpu_count(),
            }
        finally:
            if process is not None:
                stop_server(process)
                if args.log:
                    shutil.copyfile(Path(tmp) / "server.log", args.log)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
