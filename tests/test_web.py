"""The chat server's ASGI middleware, driven with real ASGI calls (the browser tests run it in
the real server)."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

from rag.auth import LoginThrottle
from rag.web import LocalOnly, LoginGuard, SecurityHeaders, content_security_policy, form_field, inline_script_hashes

from .conftest import run_coroutine

PAGE = """<html><head><script>
      const global = globalThis;
    </script><script type="module" crossorigin src="/assets/index.js"></script>
<script>window.theme = {"a": 1};</script></head><body></body></html>"""


def call(app, method: str = "GET", path: str = "/", body: bytes = b"", headers=(), client=("10.0.0.1", 5000)):
    """One HTTP request through an ASGI app → (status, headers dict, body, what the app received)."""
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers), "client": client}
    chunks = [body[:7], body[7:]]  # in two parts, as a server may deliver it
    sent = []

    async def receive():
        if chunks:
            part = chunks.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    run_coroutine(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


class FakeLogin:
    """Stands in for Chainlit's /login: 200 for the right password, 401 otherwise."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        ok = b"password=right" in body or b"\r\n\r\nright\r\n" in body
        await send({"type": "http.response.start", "status": 200 if ok else 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok" if ok else b"no"})


def urlencoded(username: str, password: str) -> tuple[bytes, list]:
    return (urllib.parse.urlencode({"username": username, "password": password}).encode(),
            [(b"content-type", b"application/x-www-form-urlencoded")])


def multipart(username: str, password: str) -> tuple[bytes, list]:
    boundary = "----WebKitFormBoundaryx7Yq"
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in (("username", username), ("password", password))) + f"--{boundary}--\r\n"
    return body.encode(), [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]


def test_form_field_reads_both_browser_encodings():
    for encode in (urlencoded, multipart):
        body, headers = encode("محلل", "كلمة&سر=؟")
        content_type = headers[0][1].decode()
        assert form_field(content_type, body, "username") == "محلل"
        assert form_field(content_type, body, "password") == "كلمة&سر=؟"
        assert form_field(content_type, body, "missing") is None


def test_login_guard_answers_429_after_five_failures_for_a_client_and_name():
    app = FakeLogin()
    guard = LoginGuard(app, LoginThrottle(5))
    statuses = [call(guard, "POST", "/login", *multipart("محلل", f"wrong{n}"))[0] for n in range(5)]
    assert statuses == [401] * 5
    status, headers, body = call(guard, "POST", "/login", *multipart("محلل", "right"))
    assert status == 429 and int(headers["retry-after"]) >= 1 and "try again" in body.decode()
    assert len(app.bodies) == 5  # the throttled attempt never reached the password check
    # another client, and another name from the same client, still get through
    assert call(guard, "POST", "/login", *urlencoded("محلل", "right"), client=("10.0.0.2", 1))[0] == 200
    assert call(guard, "POST", "/login", *urlencoded("other", "right"))[0] == 200


def test_login_guard_hands_the_body_on_unchanged_and_ignores_other_paths():
    app = FakeLogin()
    guard = LoginGuard(app, LoginThrottle(5))
    body, headers = multipart("analyst", "right")
    assert call(guard, "POST", "/login", body, headers)[0] == 200
    assert app.bodies == [body]
    for _ in range(10):
        call(guard, "POST", "/other", *urlencoded("analyst", "wrong"))
    assert call(guard, "POST", "/login", *urlencoded("analyst", "right"))[0] == 200


def test_security_headers_are_added_to_every_response():
    async def page(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": PAGE.encode()})

    policy = content_security_policy(PAGE)
    status, headers, _ = call(SecurityHeaders(page, {"Content-Security-Policy": policy,
                                                     "X-Content-Type-Options": "nosniff"}))
    assert headers["content-security-policy"] == policy and headers["x-content-type-options"] == "nosniff"
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    for name in ("default-src", "img-src", "connect-src", "font-src", "style-src"):
        assert directives[name].startswith("'self'")
        assert "http" not in directives[name] and "*" not in directives[name]
    assert directives["script-src"].split()[0] == "'self'" and "unsafe" not in directives["script-src"]
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


def test_inline_scripts_are_allowed_by_their_exact_hash():
    expected = [base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
                for text in ("\n      const global = globalThis;\n    ", 'window.theme = {"a": 1};')]
    assert inline_script_hashes(PAGE) == [f"'sha256-{h}'" for h in expected]
    assert all(f"'sha256-{h}'" in content_security_policy(PAGE) for h in expected)


def test_the_local_login_is_refused_to_other_machines_and_other_paths_pass():
    async def chainlit(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"logged in"})

    app = LocalOnly(chainlit, path="/auth/header", message="open it on the server's own machine")
    for local in ("127.0.0.1", "::1"):
        assert call(app, "POST", "/auth/header", client=(local, 5000))[::2] == (200, b"logged in")
    status, _, body = call(app, "POST", "/auth/header", client=("192.168.1.20", 5000))
    assert status == 403 and b"server's own machine" in body
    assert call(app, "POST", "/auth/header", client=None)[0] == 403  # no address known: not local
    assert call(app, "GET", "/", client=("192.168.1.20", 5000))[0] == 200
