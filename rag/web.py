"""ASGI middleware for the chat server, in plain ASGI and the standard library.

- `SecurityHeaders` adds a Content-Security-Policy (and a few companions) to every HTTP
  response: images, scripts, styles, fonts and connections only from the page's own origin,
  so even text that slipped through escaping could not make the browser fetch anything.
- `LoginGuard` throttles the password login (`POST /login`): after repeated failures for a
  client and name it answers HTTP 429 with Retry-After instead of checking the password.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .auth import LoginThrottle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", re.S | re.I)


def inline_script_hashes(html: str) -> list[str]:
    """CSP sources ('sha256-…') for the inline <script> blocks of a page."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in _INLINE_SCRIPT.findall(html)]


def content_security_policy(page_html: str = "") -> str:
    """Same-origin only. `page_html` is the served page: its own inline scripts are allowed by
    hash. Styles may be inline (the UI's components set them); they cannot load anything
    from elsewhere. data:/blob: serve previews of the user's own files and workers."""
    scripts = " ".join(["'self'", *inline_script_hashes(page_html)])
    return "; ".join([
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class SecurityHeaders:
    """Adds `headers` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self.headers if k not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def form_field(content_type: str, body: bytes, name: str) -> str | None:
    """One field of an HTML form post (urlencoded or multipart/form-data), or None."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        values = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get(name)
        return values[0] if values else None
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == name:
                payload = part.get_payload(decode=True) or b""
                return payload.decode("utf-8", "replace")
    return None


class LoginGuard:
    """Throttles POST `path` (Chainlit's password login) with a `LoginThrottle`.

    The body is read here to learn the user name, then handed on unchanged; the response
    status tells success (200) from failure (401). A client that must wait gets HTTP 429 and
    Retry-After; its password is not checked."""

    def __init__(self, app: ASGIApp, throttle: LoginThrottle, path: str = "/login",
                 max_body: int = 64 * 1024) -> None:
        self.app = app
        self.throttle = throttle
        self.path = path
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _json_response(send, 413, {"detail": "login form too large"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        username = form_field(headers.get("content-type", ""), bytes(body), "username") or ""
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.retry_after(client, username)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return await _json_response(
                send, 429, {"detail": f"Too many failed logins: try again in {seconds} s."},
                [(b"retry-after", str(seconds).encode())])

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.throttle.succeeded(client, username)
                elif message["status"] == 401:
                    self.throttle.failed(client, username)
            await send(message)

        await self.app(scope, replay, record)


async def _json_response(send: Send, status: int, data: dict, extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(data, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


class LocalOnly:
    """Answers HTTP 403 to requests for `path` that do not come from this machine.

    Without login, the chat's saved chats belong to one local user, whom Chainlit's header login
    (`POST /auth/header`) identifies: only a browser on the machine itself may log in that way.
    The address is the connection's (uvicorn replaces it with X-Forwarded-For only for a proxy on
    127.0.0.1), so a reverse proxy on the same machine that does not set X-Forwarded-For makes
    every client local: configure a password login behind one."""

    def __init__(self, app: ASGIApp, path: str, message: str) -> None:
        self.app = app
        self.path = path
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            client = scope.get("client")
            if not client or client[0] not in LOOPBACK:
                return await _json_response(send, 403, {"detail": self.message})
        await self.app(scope, receive, send)
