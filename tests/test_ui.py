"""Browser tests of the served app: Playwright driving Debian's Chromium against `lottery serve`.

One server (a subprocess on a free localhost port, its own temporary runs directory) serves the whole
module; every test opens its own browser context, i.e. its own Panel session. Waits are Playwright waits
on what the page shows, each with a bound; there are no fixed sleeps. A failing test leaves screenshots
of its pages and the server's log in test-artifacts/.

    python -m pytest -q tests/test_ui.py          # needs /usr/bin/chromium (apt-get install -y chromium)
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_support import CHROMIUM, ServerProcess, browser, free_port, playwright_or_skip  # noqa: F401  (browser: a fixture)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.ui

sync_api = playwright_or_skip()
expect = sync_api.expect

import engine  # noqa: E402  (after the skips: a machine without chromium skips before importing torch)
from conftest import wait_until  # noqa: E402

SERVER_START_S = 90     # import torch + panel, first request answered
PAGE_READY_MS = 60_000  # first page: bokeh loaded, widgets and the live plot rendered
TINY_RUN_MS = 120_000   # a tiny run launched from the page reaches "completed"
WAIT_MS = 30_000        # anything else the page should show soon
CANCEL_MS = 90_000      # Cancel clicked during training -> "cancelled" (clicks queue behind plot updates)

# A tiny run, typed into the "epochs" and "levels" inputs: 2 epochs, 2 levels and the default controls
# (reinit, random) -> 7 short trainings on digits.
TINY = {"train.epochs": 2, "prune.levels": 2}


def run_id_for(**settings) -> str:
    """The run id the app must produce for these settings: proves the typed values reached the server."""
    return engine.RunConfig().replace(**settings).run_id


# ---------------------------------------------------------------- failure artifacts
class _CallOutcome:
    """A pytest plugin, registered while this module runs: keeps each test's call-phase report on the item,
    so the page fixture knows at teardown whether to keep screenshots (no conftest hook needed)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when == "call":
            item._ui_call_report = report
        return report


@pytest.fixture(scope="module", autouse=True)
def _record_outcomes(request):
    plugin = _CallOutcome()
    request.config.pluginmanager.register(plugin, "test_ui-call-outcome")
    yield
    request.config.pluginmanager.unregister(plugin)


def _failed(request) -> bool:
    report = getattr(request.node, "_ui_call_report", None)
    return report is None or report.failed  # no call report: setup or the test itself broke


# ---------------------------------------------------------------- the server
def _answers(url: str) -> bool:
    """True once the server answers HTTP at all (a static file, so no Panel session is created)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


class Server(ServerProcess):
    def __init__(self, root: Path):
        super().__init__(root / "serve.log")
        self.runs_dir = root / "runs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        # One intra-op thread: on a small CPU box shared with Chromium (and, in (d), two runs at once) torch's
        # default of one OpenMP thread per core oversubscribes the cores and small-model training slows by
        # 10-100x. These tests check behaviour, not speed; bench/serve_latency.py measures the defaults.
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self.launch([sys.executable, "-m", "explorer.cli", "serve", "--runs-dir", str(self.runs_dir),
                     "--port", str(self.port)], env=env)
        probe = self.url + "static/js/bokeh.min.js"

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lottery serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            return _answers(probe)

        try:  # polling interval of the bounded start-up wait, not a wait for the UI
            wait_until(answers, SERVER_START_S, interval=0.2, what="lottery serve answers")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"lottery serve did not answer within {SERVER_START_S} s:\n{self.log_tail()}") from None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ui"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def open_page(browser, server, request):
    """open_page() -> a fresh page (own context = own Panel session) with the app loaded and rendered.
    On failure every page the test opened is saved to test-artifacts/, with the server's log."""
    contexts = []

    def _open():
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(server.url, timeout=PAGE_READY_MS)
        expect(page.locator(".live-plot canvas").first).to_be_visible(timeout=PAGE_READY_MS)
        expect(page.get_by_role("button", name="Launch")).to_be_enabled(timeout=PAGE_READY_MS)
        return page

    yield _open
    if _failed(request):
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for i, ctx in enumerate(contexts):
            for j, page in enumerate(ctx.pages):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{i}{j}.png"), full_page=True, timeout=10_000)
                    # the sidebar scrolls on its own: a second shot with the status and error in view
                    page.locator(".run-status").scroll_into_view_if_needed(timeout=5_000)
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{i}{j}-status.png"), timeout=10_000)
                except Exception as e:  # a broken page must not hide the test's own failure
                    print(f"screenshot of {name} page {i}{j} failed: {e}", file=sys.stderr)
        (ARTIFACTS / f"{name}-server.log").write_text(server.log_tail())
    for ctx in contexts:
        ctx.close()


# ---------------------------------------------------------------- page helpers
def set_value(page, label: str, value) -> None:
    """Type into the launch panel's input labelled `label` and commit it (Enter fires the change)."""
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def status(page):
    return page.locator(".run-status")


STATUS_JS = """e => Array.from((e.shadowRoot || e).children)
  .filter(c => c.tagName !== 'STYLE' && c.tagName !== 'LINK').map(c => c.innerText).join(' ').trim()"""


def status_text(page) -> str:
    """The status Markdown's text (it renders in a shadow root, which textContent does not reach)."""
    return status(page).evaluate(STATUS_JS)


def open_tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=re.compile(f"^{re.escape(title)}$")).click()
    expect(page.locator(".bk-tab.bk-active")).to_have_text(title)


FIGURES_JS = """() => {
  const out = [];
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      if (m.type !== 'Figure') continue;
      const labels = (axes) => axes.map(a => a.axis_label).filter(l => l);
      out.push({css: m.css_classes, title: m.title ? m.title.text : null,
                x: labels(m.below.concat(m.above)), y: labels(m.left.concat(m.right)),
                tools: m.toolbar.tools.map(t => t.type)});
    }
  }
  return out;
}"""


def figure(page, css: str) -> dict:
    """The Bokeh model behind a plot pane: its title and axis labels are drawn on canvas, so read them here."""
    found = [f for f in page.evaluate(FIGURES_JS) if css in f["css"]]
    assert len(found) == 1, f"expected one Bokeh figure with class {css}, got {found}"
    return found[0]


def assert_drawn(page, css: str) -> None:
    """A visible canvas of real size inside the plot, with more than a blank background painted on it."""
    from PIL import Image

    canvas = page.locator(f".{css} canvas").first
    expect(canvas).to_be_visible(timeout=WAIT_MS)  # a plot of many runs takes seconds on a busy machine
    box = canvas.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 150, box
    img = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, f"{css} canvas looks blank: {len(colours)} colours"
    background = max(colours)[0] if colours else 0
    assert background < 0.97 * img.width * img.height, f"{css} canvas is almost all one colour"


# ---------------------------------------------------------------- tests
def test_tiny_run_completes_and_plots(open_page, server):
    page = open_page()
    set_value(page, "epochs", 2)
    set_value(page, "levels", 2)
    set_value(page, "seed", 1)
    run_id = run_id_for(**TINY, seed=1)
    page.get_by_role("button", name="Launch").click()
    expect(status(page)).to_contain_text("completed", timeout=TINY_RUN_MS)
    expect(status(page)).to_contain_text(run_id)  # the typed epochs/levels/seed are the ones that ran
    expect(page.locator("progress")).to_have_attribute("value", "100")
    expect(page.get_by_role("button", name="Launch")).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    assert json.loads((server.runs_dir / run_id / "summary.json").read_text())["status"] == "completed"

    # compare just this run (other tests' runs share the store): tick its row in the run browser
    open_tab(page, "Runs")
    row = page.locator(".run-table .tabulator-row").filter(has_text=run_id)
    row.get_by_label("Select Row").check()
    expect(row.get_by_label("Select Row")).to_be_checked()

    open_tab(page, "Accuracy")
    assert_drawn(page, "accuracy-plot")
    legend = page.locator(".accuracy-plot .bk-Legend .bk-label")  # the legend is DOM, unlike the axes
    expect(legend).to_have_count(4)  # one entry per variant of the one experiment, whose name is in the title
    for variant in ("dense", "ticket", "reinit", "random"):
        expect(legend.filter(has_text=re.compile(f"^{variant}$"))).to_have_count(1)
    expect(page.locator(".accuracy-plot .bk-Toolbar")).to_have_count(1)
    fig = figure(page, "accuracy-plot")
    assert fig["title"].startswith("Test accuracy vs density: imp "), fig
    assert any("density" in x for x in fig["x"]) and any("accuracy" in y for y in fig["y"]), fig
    assert {"PanTool", "WheelZoomTool", "SaveTool", "ResetTool"} <= set(fig["tools"]), fig

    open_tab(page, "Masks")
    assert_drawn(page, "density-plot")
    fig = figure(page, "density-plot")
    assert fig["title"] == "Per-layer density by level" and any("density" in y for y in fig["y"]), fig
    assert "HoverTool" in fig["tools"], fig
    assert_drawn(page, "mask-plot")
    assert figure(page, "mask-plot")["title"].startswith("Mask of ")


def test_cancel_keeps_completed_levels(open_page, server):
    page = open_page()
    # 25 trainings of 1080 iterations: minutes, so the run is still going when the cancel lands (while it
    # trains, the server can take many seconds to act on a click: see bench/serve_latency.py)
    set_value(page, "epochs", 40)
    set_value(page, "levels", 8)
    run_id = run_id_for(**{"train.epochs": 40, "prune.levels": 8})
    page.get_by_role("button", name="Launch").click()
    # (not "starting RUN_ID": with a fast trainer that status can be replaced before the page's next tick)
    # the dense network is trained and stored once a pruned level trains
    expect(status(page)).to_contain_text(re.compile(r"running\W+level [1-8]/8 \w+: iteration \d+"),
                                         timeout=TINY_RUN_MS)
    expect(page.locator("progress")).not_to_have_attribute("value", "0")
    page.get_by_role("button", name="Cancel").click()
    expect(status(page)).to_contain_text(f"{run_id} cancelled", timeout=CANCEL_MS)  # the typed settings ran
    kept = re.compile(r"([1-9]\d*) level\(s\) kept")
    expect(status(page)).to_contain_text(kept)
    expect(page.get_by_role("button", name="Launch")).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()

    n = int(kept.search(status_text(page)).group(1))
    store = server.runs_dir / run_id
    stored = sorted(p.parent.name for p in (store / "levels" / "ticket").glob("*/record.json"))
    assert stored == [f"{level:03d}" for level in range(n)], (n, stored)  # what the status says is on disk
    assert json.loads((store / "summary.json").read_text())["status"] == "cancelled"


def test_bad_value_shows_field_error(open_page, server):
    page = open_page()
    before = set(os.listdir(server.runs_dir)) if server.runs_dir.exists() else set()
    set_value(page, "prune fraction", 1.5)
    page.get_by_role("button", name="Launch").click()
    alert = page.locator(".run-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("prune.prune_fraction")
    expect(alert).to_contain_text("1.5")
    expect(page.get_by_role("button", name="Launch")).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    expect(status(page)).not_to_contain_text("running")
    after = set(os.listdir(server.runs_dir)) if server.runs_dir.exists() else set()
    assert after == before, "a rejected config must not write a run"

    set_value(page, "prune fraction", 0.2)  # fixing the value and launching clears the error
    set_value(page, "epochs", 1)
    set_value(page, "levels", 1)
    page.get_by_role("button", name="Launch").click()
    expect(alert).to_be_hidden()
    expect(status(page)).to_contain_text("completed", timeout=TINY_RUN_MS)


def test_two_pages_run_at_once(open_page, server):
    pages, ids = [], []
    for seed in (21, 22):
        page = open_page()
        set_value(page, "epochs", 2)
        set_value(page, "levels", 2)
        set_value(page, "seed", seed)
        pages.append(page)
        ids.append(run_id_for(**TINY, seed=seed))
    assert ids[0] != ids[1]
    for page in pages:  # launch both before waiting on either
        page.get_by_role("button", name="Launch").click()
    for page, own, other in ((pages[0], ids[0], ids[1]), (pages[1], ids[1], ids[0])):
        expect(status(page)).to_contain_text("completed", timeout=TINY_RUN_MS)
        expect(status(page)).to_contain_text(own)
        expect(status(page)).not_to_contain_text(other)
        expect(page.locator(".run-error")).to_be_hidden()
    for run_id in ids:
        assert json.loads((server.runs_dir / run_id / "summary.json").read_text())["status"] == "completed"

    open_tab(pages[0], "Runs")  # the run browser lists both runs
    pages[0].get_by_role("button", name="Refresh").click()
    table = pages[0].locator(".run-table")
    for run_id in ids:
        expect(table).to_contain_text(run_id)


def test_accuracy_legend_with_several_experiments(open_page, server):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server and Chromium share the cores (see Server.start)
    try:
        for changes in ({"train.epochs": 1, "prune.levels": 1}, {"train.epochs": 1, "prune.levels": 2},
                        {"train.epochs": 2, "prune.levels": 1}, {"train.epochs": 3, "prune.levels": 1}):
            # four experiments (4 x 8 renderers), stored straight by the engine
            engine.run(engine.RunConfig().replace(**changes), runs_dir=server.runs_dir)
    finally:
        torch.set_num_threads(threads)
    page = open_page()
    open_tab(page, "Accuracy")
    assert_drawn(page, "accuracy-plot")
    expect(page.locator(".accuracy-plot .bk-Legend .bk-label").first).to_be_visible(timeout=2_000)  # drawn above


def test_hardware_tab_probes_a_layer_and_says_2_4_is_unavailable(open_page):
    page = open_page()
    open_tab(page, "Hardware")
    box = page.get_by_label("layer (in x out)", exact=True)
    box.fill("128x128")
    box.press("Enter")
    batches = page.get_by_label("batch sizes", exact=True)
    batches.fill("1,16")
    batches.press("Enter")
    page.get_by_role("button", name="Probe").click()
    expect(page.locator(".probe-status")).to_contain_text("done", timeout=TINY_RUN_MS)
    expect(page.locator(".probe-unavailable")).to_contain_text("2:4")
    assert_drawn(page, "hardware-plot")
    fig = figure(page, "hardware-plot")
    assert fig["title"].startswith("Measured vs theoretical speedup on cpu"), fig
    legend = page.locator(".hardware-plot .bk-Legend .bk-label")
    for pattern in ("masked", "csr", "channel"):
        expect(legend.filter(has_text=re.compile(f"^{pattern}$"))).to_have_count(1)


def test_leaderboard_tab_compares_methods(open_page):
    page = open_page()
    set_value(page, "epochs", 1)
    set_value(page, "levels", 1)
    open_tab(page, "Leaderboard")
    box = page.get_by_label("densities", exact=True)
    box.fill("0.5")
    box.press("Enter")
    seeds = page.get_by_label("seeds", exact=True)
    seeds.fill("1")
    seeds.press("Enter")
    # keep the comparison tiny: remove every preselected method but imp and snip
    for method in ("oneshot", "grasp", "synflow", "rigl", "set", "cs", "cts", "edgepopup"):
        page.locator(".choices__item", has_text=re.compile(f"^{method}")).locator("button").click()
    page.get_by_role("button", name="Compare").click()
    # "done (…" once finished: the progress line before it reads "comparing... N trainings done"
    expect(page.locator(".leaderboard-status")).to_contain_text("done (runs are stored", timeout=TINY_RUN_MS)
    assert_drawn(page, "leaderboard-plot")
    legend = page.locator(".leaderboard-plot .bk-Legend .bk-label")
    expect(legend.filter(has_text=re.compile("^imp$"))).to_have_count(1)
    expect(legend.filter(has_text=re.compile("^snip$"))).to_have_count(1)
    assert_drawn(page, "cost-plot")
