"""`lottery serve --allow-remote`: an origin allow-list (the bound address or host by default, --allow-origin adds
more) refuses forged cross-origin websocket handshakes, and clients see one-line errors, never tracebacks."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser_support import free_port

from explorer.cli import plain_serve_args, websocket_origins

README = Path(__file__).resolve().parents[1] / "README.md"


def _origins(*argv):
    return websocket_origins(plain_serve_args(["serve", *argv]))


def test_local_origins_by_default_and_with_allow_remote():
    local = {"127.0.0.1:5006", "localhost:5006"}
    assert set(_origins()) == local
    assert set(_origins("--allow-remote")) == local  # bound to 127.0.0.1: never "*"
    assert set(_origins("--port", "8000", "--allow-remote")) == {"127.0.0.1:8000", "localhost:8000"}


def test_a_bound_address_is_its_own_origin():
    assert "10.1.2.3:5006" in _origins("--address", "10.1.2.3", "--allow-remote")
    assert "[::1]:5006" in _origins("--address", "::1")


def test_a_wildcard_address_allows_this_hosts_names_not_everyone():
    origins = _origins("--address", "0.0.0.0", "--allow-remote")
    assert "*" not in origins and f"{socket.gethostname().lower()}:5006" in origins
    assert "localhost:5006" in origins


def test_allow_origin_adds_origins():
    origins = _origins("--allow-remote", "--allow-origin", "lab.example.org:8443",
                       "--allow-origin", "https://other.example:9000", "--allow-origin", "gw.example")
    assert {"lab.example.org:8443", "other.example:9000", "gw.example:80"} <= set(origins)


def test_allow_origin_needs_allow_remote(capsys):
    from explorer.cli import main
    assert main(["serve", "--allow-origin", "lab.example.org:8443"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_readme_says_what_remote_mode_exposes():
    text = README.read_text()
    assert "--allow-origin" in text
    section = text[text.index("Remote mode"):][:2500]
    for needle in ("launch", "delete", "no authentication", "--allow-origin"):
        assert needle in section, needle


# ---------------------------------------------------------------- one-line errors for clients
def test_a_page_that_cannot_be_built_shows_one_line(monkeypatch, tmp_path, capsys):
    import panel as pn

    from explorer import app as app_mod

    def broken(**params):
        raise RuntimeError("disk on fire\nsecond line of detail")
    monkeypatch.setattr(app_mod, "ExplorerApp", broken)
    page = app_mod.session_app(str(tmp_path))
    text = " ".join(str(getattr(o, "object", "")) for o in page.main.objects + page.sidebar.objects
                    for o in ([o] + list(getattr(o, "objects", []))))
    assert "disk on fire" in text and "second line" not in text and "Traceback" not in text
    assert "Traceback" in capsys.readouterr().err  # the server's log keeps the traceback
    assert isinstance(page, pn.template.BaseTemplate)


def test_a_failed_engine_import_is_one_line():
    from explorer.app import _engine_failed

    alert = _engine_failed(ImportError("no module named torch\n  File x.py, line 3")).object
    assert "no module named torch" in alert and "\n" not in alert and "File x.py" not in alert


# ---------------------------------------------------------------- a real server, forged handshakes
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    runs = root / "runs"
    damaged = runs / "imp-lenet300-digits-0123456789"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{}")
    (damaged / "summary.json").write_text("42")
    port = free_port()
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "serve", "--allow-remote", "--port", str(port),
                             "--allow-origin", f"trusted.example:{port}", "--runs-dir", str(runs)],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/bokeh.min.js", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError((root / "serve.log").read_text())
            time.sleep(0.2)
    yield port, root / "serve.log"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _handshake(port, origin) -> int:
    """HTTP status of a websocket upgrade to /ws sent with `origin` (101 = accepted)."""
    import base64

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n").encode())
        head = s.recv(4096).decode(errors="replace")
    return int(head.split()[1])


def test_forged_cross_origin_handshakes_are_refused(server):
    port, _ = server
    assert _handshake(port, "http://evil.example") == 403
    assert _handshake(port, f"http://evil.example:{port}") == 403
    assert _handshake(port, "null") == 403


def test_own_and_added_origins_are_accepted(server):
    port, _ = server
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://trusted.example:{port}"):
        assert _handshake(port, origin) != 403, origin


def test_the_page_of_a_damaged_store_has_no_traceback(server):
    """A session opened as a browser would (bokeh's client pulls the document over the websocket)."""
    import panel.models  # noqa: F401  (registers Panel's Bokeh models, so the client can read the document)
    from bokeh.client import pull_session

    port, _ = server
    html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60).read().decode()
    assert "Traceback" not in html
    with pull_session(url=f"http://127.0.0.1:{port}/") as session:
        doc = " ".join(str(m.properties_with_values(include_defaults=False)) for m in session.document.models)
    assert "could not open" not in doc and ("engine-loading" in doc or "launch-button" in doc)  # the app, built
    assert "Traceback" not in doc and 'File "' not in doc
