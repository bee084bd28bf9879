"""`lottery serve` static files: cacheable always (Panel's unversioned bundles too), gzip-compressed in remote
mode (--allow-remote), where they cross a network; on localhost compressing would only cost the server CPU."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _headers(url: str) -> dict:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})  # GET: tornado gzips no HEAD
    with urllib.request.urlopen(req, timeout=30) as r:
        return {k.lower(): v for k, v in r.headers.items()}


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local"])
def test_static_scripts_are_cacheable_and_compressed_in_remote_mode(tmp_path, remote):
    port = _free_port()
    cmd = [sys.executable, "-m", "explorer.cli", "serve", "--runs-dir", str(tmp_path / "runs"), "--port", str(port),
           "--address", "127.0.0.1"] + (["--allow-remote"] if remote else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/static"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                versioned = _headers(f"{base}/js/bokeh.min.js?v=1")  # as the page links it
                break
            except OSError:
                assert time.monotonic() < deadline, "lottery serve did not answer within 90 s"
                time.sleep(0.2)  # polling interval of the bounded start-up wait
        # linked by the page without a version argument (Tornado alone gives these no Cache-Control)
        unversioned = _headers(f"{base}/extensions/panel/bundled/datatabulator/tabulator-tables@6.4.0/dist/js/"
                               "tabulator.min.js")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    for headers in (versioned, unversioned):
        assert "max-age" in headers.get("cache-control", ""), headers
        assert (headers.get("content-encoding") == "gzip") == remote, headers
