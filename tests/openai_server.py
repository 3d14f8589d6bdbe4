"""A stand-in for a local OpenAI-compatible server (llama.cpp's, vLLM's) on 127.0.0.1.

It answers /v1/chat/completions with the replies it is given, streamed as server-sent events in
small pieces the way llama-cpp-python's server streams them (a role chunk, content chunks, a
finish chunk, `[DONE]`), and records every request. Tests use it to send the real model outputs
kept in tests/data/llm_outputs/ through litellm's real HTTP path, which mock_response skips.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LLM_OUTPUTS = Path(__file__).resolve().parent / "data" / "llm_outputs"


def captured(name: str) -> str:
    """A raw model output captured from the real server by bench/llm_live.py."""
    return (LLM_OUTPUTS / name).read_text(encoding="utf-8").rstrip("\n")


class FakeOpenAIServer:
    def __init__(self) -> None:
        self.replies: list[str] = []  # one per request, in order; the last one repeats
        self.requests: list[dict] = []  # {"path", "headers", "body"}
        self.delay_s = 0.0  # before the first byte of each response
        self.url = ""

    def next_reply(self) -> str:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def _chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
               "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _pieces(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@contextmanager
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    state = FakeOpenAIServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.requests.append({"path": self.path, "headers": headers, "body": body})
            if not self.path.endswith("/chat/completions"):
                self.send_error(404)
                return
            reply = state.next_reply()
            model = body.get("model", "fake")
            time.sleep(state.delay_s)
            if not body.get("stream"):
                data = json.dumps({"id": "chatcmpl-fake", "object": "chat.completion",
                                   "created": int(time.time()), "model": model,
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": reply}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
                                  ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(_chunk(model, {"role": "assistant"}))
            for piece in _pieces(reply):
                self.wfile.write(_chunk(model, {"content": piece}))
                self.wfile.flush()
            self.wfile.write(_chunk(model, {}, finish="stop"))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
