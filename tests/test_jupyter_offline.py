"""Nothing the explorer shows needs the network: notebooks in a real JupyterLab, the served app, the report.

Browser tests (Playwright driving Debian's Chromium) in which every request that leaves the machine is
aborted and recorded, as behind a classroom firewall:

1. the teaching notebooks in JupyterLab (below);
2. `lottery serve`: the first page, the launch panel and every tab make no request beyond 127.0.0.1;
3. `lottery report`: the HTML file, opened from disk with every non-file request blocked, draws its plots.

The notebooks:
A JupyterLab server (a subprocess on a free 127.0.0.1 port, its root a temporary copy of notebooks/, so the
notebooks' `runs/` land there) serves the module; Playwright drives Debian's Chromium through each notebook:
open it, Run All in the smoke setting (LOTTERY_SMOKE=1), then check what a person would see:

- every cell whose output is a Bokeh/HoloViews/Panel view (the plots, `ExplorerApp`) shows a drawn canvas,
- every ipywidgets output (the launcher) shows its widgets,
- no cell shows an error,
- no request leaves 127.0.0.1: every other request is aborted and recorded (a CDN script that cannot load
  leaves a blank output, which is what a classroom behind a firewall sees).

Waits are bounded Playwright waits on what the page shows, never fixed sleeps. On failure a screenshot and
the server's log land in test-artifacts/.

    python -m pytest -q tests/test_jupyter_offline.py    # needs /usr/bin/chromium and jupyterlab
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser_support import CHROMIUM, ServerProcess, browser, free_port, playwright_or_skip  # noqa: F401  (browser: a fixture)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
ARTIFACTS = REPO / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

SERVER_START_S = 90      # jupyter lab answers its REST API
KERNEL_READY_MS = 90_000  # notebook opened, kernel started and idle
RUN_ALL_MS = 300_000     # all cells of one notebook in the smoke setting (notebook 03 trains a leaderboard)
RENDER_MS = 60_000       # outputs drawn once the cells have run

pytestmark = pytest.mark.ui

sync_api = playwright_or_skip()
pytest.importorskip("jupyterlab", reason="pip install -e '.[notebook]'")


class Lab(ServerProcess):
    """`jupyter lab` on 127.0.0.1 without a token, isolated from the user's Jupyter settings."""

    STOP_S = 20

    def __init__(self, root: Path):
        super().__init__(root / "lab.log")
        self.root = root / "notebooks"
        self.home = root / "jupyter"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        shutil.copytree(REPO / "notebooks", self.root, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
        settings = self.home / "settings"
        # Every cell in the DOM (JupyterLab 4 otherwise virtualises off-screen cells, which would then have no
        # rendered output to check)
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text(json.dumps({"fetchNews": "false"}))  # no "get Jupyter news?" popup
        env = dict(os.environ, LOTTERY_SMOKE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   JUPYTER_CONFIG_DIR=str(self.home / "config"), JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.launch(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
             "--ServerApp.disable_check_xsrf=True",  # the test's own REST calls (shutting kernels down)
             f"--ServerApp.root_dir={self.root}", "--expose-app-in-browser",  # window.jupyterapp: Run All
             f"--LabServerApp.user_settings_dir={settings}", f"--LabServerApp.workspaces_dir={self.home / 'ws'}",
             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"],  # the server asks no package index either
            env=env, cwd=self.root)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "status")
                return
            except OSError:
                time.sleep(0.2)  # polling interval of the bounded start-up wait
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Each notebook's kernel (and the runs its app polls) ends with its test: the next has the CPU."""
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ what the page shows, read in the page
# For every code cell, read in the page: the mime types of its outputs (from the notebook model: what the
# kernel sent), its errors, and what was drawn. A plot output is a Bokeh document holding a figure
# (a plot alone or inside a Panel layout such as ExplorerApp; `pn.extension` also sends figure-less Bokeh
# outputs that draw nothing). A cell's plots are drawn when as many of its output nodes hold a canvas with a
# size (searched through the shadow roots Bokeh renders into); its widgets when their buttons are there.
CELLS_JS = """() => {
  const BOKEH = ['application/vnd.holoviews_exec.v0+json', 'application/vnd.bokehjs_exec.v0+json'];
  const FIGURE = /"name":"(Figure|GridPlot)"/;
  const WIDGET = 'application/vnd.jupyter.widget-view+json';
  const deep = (root, sel, out = []) => {
    out.push(...root.querySelectorAll(sel));
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) deep(el.shadowRoot, sel, out);
    return out;
  };
  const sized = c => c.width > 0 && c.height > 0 && c.getBoundingClientRect().width > 0;
  const nb = window.jupyterapp.shell.currentWidget.content;
  return nb.widgets.map((cell, index) => {
    if (cell.model.type !== 'code') return null;
    const outputs = cell.model.outputs.toJSON();
    const isPlot = o => BOKEH.some(m => m in (o.data || {})) && FIGURE.test(String(o.data['text/html'] || ''));
    const nodes = Array.from(cell.node.querySelectorAll('.jp-OutputArea-output'));
    return {
      index,
      source: cell.model.sharedModel.getSource().slice(0, 80),
      mimes: outputs.flatMap(o => Object.keys(o.data || {})),
      errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
      plots: outputs.filter(isPlot).length,
      drawn: nodes.filter(n => deep(n, 'canvas').some(sized)).length,  // output nodes showing a canvas
      widgets: outputs.filter(o => WIDGET in (o.data || {})).length,
      widget_views: cell.node.querySelectorAll('.jupyter-widgets .widget-button').length,
      text: cell.node.querySelector('.jp-Cell-outputArea').innerText.slice(0, 300),
    };
  }).filter(c => c !== null);
}"""
ALL_DRAWN_JS = f"""() => ({CELLS_JS})().every(c => c.drawn >= c.plots && (!c.widgets || c.widget_views > 0))"""


def _outside(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme not in ("data", "blob", "about") and parts.hostname not in LOCAL_HOSTS


def offline_context(browser, outside: list[str], allowed=lambda url: not _outside(url)):
    """A browser context in which every request not `allowed` is recorded in `outside` and aborted."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})

    def route(r):
        if allowed(r.request.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()  # as behind a firewall: nothing from outside may be needed

    context.route("**/*", route)
    return context


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_renders_offline_in_jupyterlab(path, lab, browser, request):
    outside: list[str] = []
    context = offline_context(browser, outside)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    broken: list[str] = []  # local resources that failed (a stylesheet path the Jupyter server does not serve)
    page.on("response", lambda r: r.status >= 400 and broken.append(f"{r.status} {r.url}"))
    cells = None
    try:
        # A workspace of its own, reset: JupyterLab would otherwise restore the previous test's notebook, and
        # Run All could land on that one while this one's outputs stay empty (seen once in CI)
        workspace = re.sub(r"\W+", "-", path.stem)
        page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{path.name}?reset", timeout=KERNEL_READY_MS)
        page.wait_for_function(
            """name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                       return w && w.context && w.context.path === name && w.content && w.content.widgets
                              && w.content.widgets.length > 0 && w.sessionContext
                              && w.sessionContext.session && w.sessionContext.session.kernel
                              && w.sessionContext.session.kernel.status === 'idle'; }""",
            arg=path.name, timeout=KERNEL_READY_MS)
        # Run All; the command's promise settles (true: every cell ran without error) when the last cell is done
        page.evaluate("""() => { window.__runAll = undefined;
          window.jupyterapp.commands.execute('notebook:run-all-cells')
            .then(ok => { window.__runAll = ok; }, e => { window.__runAll = String(e); }); }""")
        page.wait_for_function("() => window.__runAll !== undefined", timeout=RUN_ALL_MS, polling=500)
        ran_ok = page.evaluate("() => window.__runAll")
        try:
            page.wait_for_function(ALL_DRAWN_JS, timeout=RENDER_MS, polling=250)
        except sync_api.TimeoutError:
            pass  # the assertions below say which cell stayed blank
        current = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path")
        assert current == path.name, f"JupyterLab shows {current!r}, not {path.name!r}"
        cells = page.evaluate(CELLS_JS)
        errors = [(c["index"], c["errors"]) for c in cells if c["errors"]]
        assert not errors, f"cells with errors: {errors}"
        assert ran_ok is True, f"Run All did not complete: {ran_ok!r}"
        assert any(c["plots"] for c in cells), "no cell showed a plot: the notebook's views are missing"
        blank = [(c["index"], c["source"], c["text"][:120]) for c in cells if c["drawn"] < c["plots"]]
        assert not blank, f"plot outputs without a drawn canvas (cell, source, output text): {blank}"
        widgets = [(c["index"], c["source"], c["text"][:120]) for c in cells if c["widgets"] and not c["widget_views"]]
        assert not widgets, f"widget outputs that did not render: {widgets}"
        assert not outside, f"requests that left 127.0.0.1: {sorted(set(outside))}"
        assert not broken, f"local requests that failed: {sorted(set(broken))}"
    except BaseException:
        _save_artifacts(page, lab, request.node.name, cells, outside + broken, page_errors)
        raise
    finally:
        context.close()
        lab.shutdown_kernels()


def _save_artifacts(page, server, name, cells, outside, page_errors) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", name)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, timeout=10_000)
    except Exception as e:  # a broken page must not hide the test's own failure
        print(f"screenshot of {name} failed: {e}", file=sys.stderr)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(
        {"cells": cells, "outside_requests": outside, "page_errors": page_errors}, indent=1))
    if server is not None:
        (ARTIFACTS / f"{name}-server.log").write_text(server.log_tail())


# ------------------------------------------------------------------ the served app and the report
DEEP_CANVASES_JS = """() => {
  const deep = (root, out = []) => {
    out.push(...root.querySelectorAll('canvas'));
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) deep(el.shadowRoot, out);
    return out;
  };
  return deep(document).filter(c => c.width > 0 && c.height > 0).length;
}"""


def test_served_app_makes_no_outside_request(browser, tmp_path, request):
    from test_ui import Server  # the UI tests' `lottery serve` subprocess (free port, own runs dir)
    expect = sync_api.expect

    server = Server(tmp_path)
    server.start()
    outside: list[str] = []
    context = offline_context(browser, outside)
    page = context.new_page()
    try:
        page.goto(server.url, timeout=60_000)
        expect(page.locator(".live-plot canvas").first).to_be_visible(timeout=60_000)
        expect(page.get_by_role("button", name="Launch")).to_be_enabled(timeout=90_000)  # engine tabs can build
        tabs = page.locator(".bk-tab")
        titles = [t.strip() for t in tabs.all_inner_texts()]
        assert "Runs" in titles and len(titles) >= 5, titles
        # Each visit builds the tab on the server before the next click is handled; coming back to Live and
        # seeing its plot means every tab's content has reached the page (and asked for its resources)
        for title in [*titles[1:], titles[0]]:
            tabs.filter(has_text=title).first.click()
            expect(page.locator(".bk-tab.bk-active")).to_have_text(title)
        expect(page.locator(".live-plot canvas").first).to_be_visible(timeout=RENDER_MS)
        assert not outside, f"the served app asked outside 127.0.0.1 for: {sorted(set(outside))}"
    except BaseException:
        _save_artifacts(page, server, request.node.name, None, outside, [])
        raise
    finally:
        context.close()
        server.stop()


def test_report_opens_from_disk_with_the_network_off(browser, tmp_path, request):
    import engine
    from explorer.report import write_report

    cfg = engine.RunConfig().replace(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": ("reinit",),
                                        "device": "cpu"})
    summary = engine.run(cfg, runs_dir=tmp_path / "runs")
    html = write_report(tmp_path / "runs", summary["run_id"], tmp_path / "report.html")
    outside: list[str] = []
    context = offline_context(browser, outside, allowed=lambda url: url.startswith(("file:", "data:", "blob:")))
    page = context.new_page()
    try:
        page.goto(html.as_uri())
        # four plots: accuracy and early stopping vs density, per-layer density, the mask heatmap
        page.wait_for_function(f"() => ({DEEP_CANVASES_JS})() >= 4", timeout=RENDER_MS)
        assert not outside, f"the report asked for: {sorted(set(outside))}"
    except BaseException:
        _save_artifacts(page, None, request.node.name, None, outside, [])
        raise
    finally:
        context.close()
