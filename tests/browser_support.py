"""What the browser tests share: Debian's Chromium and its flags, a free port, a server subprocess that logs
to a file (its tail goes into failure messages), and the `browser` fixture.

Nothing here imports Playwright or torch at import: a test module calls `playwright_or_skip()` first (it is
skipped where Chromium or Playwright is missing), and takes the fixture with `from browser_support import browser`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
PAGE_READY_MS = 90_000  # a served app's first load, the engine's import included (2 busy cores)
WAIT_MS = 30_000  # anything else a page should show soon
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def playwright_or_skip():
    """Playwright's sync API, for a browser test module to call as it is imported: the module is skipped where
    Debian's Chromium or Playwright is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started by a test (`lottery serve`, `jupyter lab`), its output in `log_path`."""

    STOP_S = 10  # how long it may take to exit after SIGTERM before it is killed

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def launch(self, args: list[str], **popen) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, **popen)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log:
            self._log.close()

    def log_tail(self, n: int = 12_000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


def serve(runs_dir: Path, log_path: Path, start_s: float = 90) -> ServerProcess:
    """`lottery serve` of `runs_dir` on a free port (its address in `.url`), once it answers for a static file.
    One torch thread: these tests check behaviour beside Chromium on a small machine, not speed."""
    server = ServerProcess(log_path)
    port = free_port()
    server.url = f"http://127.0.0.1:{port}/"
    server.launch([sys.executable, "-m", "explorer.cli", "serve", "--runs-dir", str(runs_dir), "--port", str(port)],
                  env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + start_s
    while True:  # (the bounded start-up wait of a process, not a wait for the UI)
        assert server.proc.poll() is None, server.log_tail()
        try:
            urllib.request.urlopen(server.url + "static/js/bokeh.min.js", timeout=2)
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"lottery serve did not answer within {start_s} s:\n{server.log_tail()}")
            time.sleep(0.2)


@contextlib.contextmanager
def app_page(browser, url: str, width: int):
    """A page of the served app at `url`, `width` px wide, once its launch panel is ready: (page, the errors the
    page raised so far and later); its browser context is closed after."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": width, "height": 1000})
    ctx.set_default_timeout(WAIT_MS)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url, timeout=PAGE_READY_MS)
        expect(page.get_by_role("button", name="Launch")).to_be_enabled(timeout=PAGE_READY_MS)
        yield page, errors
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()
