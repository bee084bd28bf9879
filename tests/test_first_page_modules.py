"""What `lottery serve` imports before its first page is out, pinned to an allow-list (no timing involved).

The first page is only as fast as its imports: torch, transformers, peft, flow_matching or dask would add
seconds. Tabs load their modules on first visit and the engine's torch side comes after the first page
(explorer.engine_import), so a new tab or helper that pulls one of them into start-up fails here, naming
the module. A light new dependency of the first page is added to the lists below on purpose.

How: a subprocess runs `lottery serve` on a free port (its engine import switched off, as it would only start
once a browser has loaded the page) and, from a thread, asks for the first page over HTTP (which builds the
page's session), then prints every module it has imported and the scripts the page links.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

# Third-party top-level packages the server and the first page may import (what they import today)
THIRD_PARTY = {
    "bokeh", "certifi", "colorama", "htmlparser", "jinja2", "linkify_it", "markdown", "markdown_it", "markupsafe",
    "mdit_py_plugins", "mdurl", "nh3", "numpy", "packaging", "panel", "param", "psutil", "pyviz_comms", "tornado",
    "tqdm", "yaml",
}
# The project's own modules on the first page: the app, its run views and the JSON side of the store
PROJECT = {
    "engine", "engine.errors", "engine.store",
    "explorer", "explorer.app", "explorer.browser", "explorer.cli", "explorer.engine_import", "explorer.offline",
    "explorer.tabs", "explorer.views",
}
# Seconds of start-up each: the engine's side and the tabs' libraries. HoloViews and pandas (with narwhals)
# too, about a second together: the first page draws its live curves with Bokeh and builds the run table
# (pandas) when the Runs tab is first shown.
NEVER = {"torch", "transformers", "peft", "flow_matching", "torchdiffeq", "dask", "distributed", "safetensors",
         "sklearn", "scipy", "gudhi", "torchvision", "holoviews", "pandas", "narwhals"}

SERVE_AND_LIST = r"""
import json, os, sys, threading, time, urllib.request
from explorer import cli, engine_import
engine_import.EngineImport.start = lambda self: None  # the engine's import comes after the first page
runs, port = sys.argv[1], sys.argv[2]

def first_page():
    deadline = time.monotonic() + 120
    while True:
        try:
            html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60).read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.05)
    print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
    print("SCRIPTS " + json.dumps([s for s in html.split('"') if s.split("?")[0].endswith(".js")]), flush=True)
    print("PAGE " + json.dumps(html), flush=True)
    os._exit(0)

threading.Thread(target=first_page, daemon=True).start()
sys.exit(cli.main(["serve", "--runs-dir", runs, "--port", port]))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def first_page(tmp_path_factory) -> dict:
    """{"MODULES": modules imported once the first page was served, "SCRIPTS": the scripts it links, "PAGE": its
    HTML}"""
    runs = tmp_path_factory.mktemp("first-page") / "runs"
    p = subprocess.run([sys.executable, "-c", SERVE_AND_LIST, str(runs), str(_free_port())],
                       capture_output=True, text=True, timeout=240)
    found = {key: json.loads(rest) for key, _, rest in (line.partition(" ") for line in p.stdout.splitlines())
             if key in ("MODULES", "SCRIPTS", "PAGE")}
    assert p.returncode == 0 and len(found) == 3, p.stdout[-3000:] + p.stderr[-3000:]
    return found


def test_first_page_imports_only_the_allowed_modules(first_page):
    modules = first_page["MODULES"]
    top = {m.partition(".")[0] for m in modules}
    third_party = {t for t in top - set(sys.stdlib_module_names)
                   if not t.startswith("_") and t not in ("engine", "explorer", "cython_runtime")}
    assert not top & NEVER, f"the first page imports {sorted(top & NEVER)}: import them in a tab's module"
    assert third_party <= THIRD_PARTY, (
        f"new on the first page: {sorted(third_party - THIRD_PARTY)}; import it where it is used (a tab's "
        "module, inside a function), or add it to THIRD_PARTY if it is light")
    project = {m for m in modules if m.partition(".")[0] in ("engine", "explorer")}
    assert project <= PROJECT, (
        f"new project modules on the first page: {sorted(project - PROJECT)}; tabs load on first visit "
        "(explorer/tabs.py); add it to PROJECT if the first page needs it and it imports nothing heavy")


def test_first_page_leaves_out_mathjax(first_page):
    """The page's largest script (BokehJS's MathJax bundle, 1.8 MB) is not loaded: the app shows no LaTeX
    (explorer.offline.without_mathjax)."""
    scripts = first_page["SCRIPTS"]
    assert any("bokeh.min.js" in s for s in scripts), scripts  # the page's scripts were read
    assert not any("mathjax" in s for s in scripts), scripts


def test_first_page_sends_its_scripts_ahead_once(first_page):
    """The page's scripts go out before its session is built (explorer.cli.scripts_before_session): their tags
    open the head, ahead of the title Panel's template starts with, and none is linked twice (BokehJS run twice
    breaks the page)."""
    html = first_page["PAGE"]
    classic = re.findall(r'<script type="text/javascript" src="([^"]+)"', html)
    assert any("bokeh.min.js" in url for url in classic), classic
    assert len(classic) == len(set(classic)), classic
    assert html.index("bokeh.min.js") < html.index("<title>")
    assert html.count('<script type="esms-options">') == 1
    assert html.index('<script type="esms-options">') < html.index("es-module-shims")
