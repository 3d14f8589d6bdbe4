"""The chat app in a real server process, driven by a real browser (Debian's chromium)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from rag.provision import ensure_default_model

from ..conftest import ROOT, SEEDS

ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
SERVER_LOGS: list[Path] = []  # of the servers started so far; their tails go into a failure's report
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_chat(home: Path, model_dir: Path, corpus: Path, extra_env: dict[str, str] | None = None):
    """Start `chainlit run chat_app/app.py` on a free localhost port; returns (process, url)."""
    if not (ROOT / "chat_app" / ".offline-ui" / "index.html").is_file():
        subprocess.run([sys.executable, "chat_app/offline_ui.py"], cwd=ROOT, check=True,
                       env={**os.environ, "CHAINLIT_APP_ROOT": str(ROOT / "chat_app")})
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAG_") and k not in ("CI", "DEBUG", "WATCH", "HEADLESS")}
    env.update({"RAG_HOME": str(home), "RAG_INDEX_DIR": str(home / "index"), "RAG_MODEL_DIR": str(model_dir),
                "RAG_CHAT_SOURCES": str(corpus), "CHAINLIT_APP_ROOT": str(ROOT / "chat_app"),
                "OPENAI_API_KEY": "none", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", **(extra_env or {})})
    log = open(home / "server.log", "w")
    SERVER_LOGS.append(home / "server.log")
    process = subprocess.Popen(
        [sys.executable, "-m", "chainlit", "run", "chat_app/app.py", "--headless", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"chat server exited:\n{(home / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise AssertionError(f"chat server did not start:\n{(home / 'server.log').read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test reports what the page showed and the tails of the server logs, and
    leaves a screenshot under test-artifacts/failures/ — a timeout alone says nothing."""
    report = yield
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page")
        if page is not None and not page.is_closed():
            try:
                folder = ROOT / "test-artifacts" / "failures"
                folder.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(folder / f"{item.name}.png"), full_page=True)
                report.sections.append(("page text (end)", page.locator("body").inner_text()[-3000:]))
            except Exception as exc:  # noqa: BLE001 - the report must survive a dead page
                report.sections.append(("page", f"could not be read: {exc}"))
        for log in SERVER_LOGS:
            if log.is_file():
                lines = [line for line in log.read_text(errors="replace").splitlines()
                         if "Translated markdown file" not in line]
                report.sections.append((f"{log} (last 80 lines)", "\n".join(lines[-80:])))
    return report


@pytest.fixture(scope="session")
def chat_url(model_dir, tmp_path_factory):
    ensure_default_model(model_dir)
    home = tmp_path_factory.mktemp("chat-home")
    corpus = home / "corpus"
    shutil.copytree(SEEDS, corpus)
    process, url = start_chat(home, model_dir, corpus)
    yield url
    stop(process)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Debian's chromium is needed for the browser tests: run `make browser`"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class OffMachineGuard:
    """Routes every request of a browser context: 127.0.0.1 goes through, anything else is
    recorded and aborted (so a test fails on it, and nothing is ever sent out)."""

    def __init__(self, context) -> None:
        self.blocked: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        if urllib.parse.urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


def guarded_page(browser, url: str, *, bypass_csp: bool = False):
    """A fresh chat page whose every off-machine request is caught (`page.guard.blocked`).
    CSP violations the page reports are collected in `window.__cspViolations`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", bypass_csp=bypass_csp)
    context.add_init_script("""window.__cspViolations = [];
        document.addEventListener('securitypolicyviolation',
            e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));""")
    guard = OffMachineGuard(context)
    page = context.new_page()
    page.guard = guard
    page.goto(url)
    page.wait_for_selector("#upload-button", timeout=60_000)  # the socket is connected
    page.wait_for_timeout(500)
    return page


@pytest.fixture()
def page(browser, chat_url):
    """A fresh chat page; it records any request that leaves localhost."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    page.external_requests = []
    page.on("request", lambda r: page.external_requests.append(r.url)
            if not r.url.startswith(chat_url) and r.url.split(":")[0] in ("http", "https", "ws", "wss") else None)
    page.goto(chat_url)
    page.wait_for_selector("#upload-button", timeout=60_000)  # the socket is connected
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
