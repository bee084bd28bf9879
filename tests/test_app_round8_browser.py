"""Round 8 of the app's UX fixes in Chromium (one server, a store of one imp and one bayes-imp run): what only a
browser shows, widths as laid out. The in-process tests of the same round are in test_app_round8.py."""
from __future__ import annotations

import re

import pytest

from browser_support import PAGE_READY_MS, app_page, browser, playwright_or_skip, serve  # noqa: F401  (browser: a fixture)

pytestmark = pytest.mark.ui

sync_api = playwright_or_skip()
expect = sync_api.expect

from conftest import tiny, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import engine

    root = tmp_path_factory.mktemp("round8")
    runs_dir = root / "runs"
    engine.run(tiny(), runs_dir=runs_dir)
    engine.run(tiny(**{"model.bayesian": True, "model.mc_samples": 2, "prune.method": "bayes-imp", "prune.levels": 1,
                       "train.epochs": 1}), runs_dir=runs_dir)
    s = serve(runs_dir, root / "serve.log")
    yield s
    s.stop()


def _tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=re.compile(f"^{re.escape(title)}$")).click()


def _box(page, css: str) -> dict:
    """The laid-out box of the element with class `css`, once it has one wider than a few pixels."""
    element = page.locator(f".{css}").first
    expect(element).to_be_visible(timeout=PAGE_READY_MS)
    return wait_until(lambda: (b := element.bounding_box()) and b["width"] > 50 and b, 15, interval=0.25,
                      what=f".{css} laid out")


@pytest.mark.parametrize("width", [1000, 1400])
def test_plots_go_one_per_row_on_a_narrow_page_and_keep_their_toolbars(browser, server, width):
    """At 1000 px, the plots laid out two to a row were ~280 px wide: their titles were cut ('Dense instability:
    error barrier vs rev…'). A wrapping FlexBox tried before lost the titles and toolbars in Chromium. Now one
    per row below 1300 px, as wide as the tab, each with its toolbar; two to a row at 1400 px."""
    with app_page(browser, server.url, width) as (page, errors):
        for tab, left, right in (("Stability", "stability-barriers", "stability-paths"),
                                 ("Bayesian", "bayes-mask", "bayes-sigma")):
            _tab(page, tab)
            a, b = _box(page, left), _box(page, right)
            toolbars = page.locator(f".{left} .bk-Toolbar, .{right} .bk-Toolbar")
            wait_until(lambda: toolbars.count() == 2 and all(toolbars.nth(i).is_visible() for i in range(2)), 15,
                       interval=0.25, what=f"{tab}: both plots' toolbars shown")
            if width == 1000:
                assert a["width"] >= 500 and b["width"] >= 500, (tab, a, b)
                assert b["y"] >= a["y"] + a["height"] - 1, (tab, a, b)  # one under the other
            else:
                assert abs(a["y"] - b["y"]) < 2 and b["x"] >= a["x"] + a["width"] - 1, (tab, a, b)  # side by side
                assert a["width"] >= 400, (tab, a, b)
        assert not errors, errors


def test_at_1000_px_the_hardware_tab_stays_within_the_page(browser, server):
    """At 1000 px the Hardware tab's two rows of settings (fixed widths, ~1100 px in a Row) widened the whole tab
    past the page's right edge: the plot's right half, the Probe button and the last tab titles were out of
    sight. Its settings now wrap; the tab, the plot and the button stay on the page."""
    with app_page(browser, server.url, 1000) as (page, errors):
        _tab(page, "Hardware")
        plot = _box(page, "hardware-waiting")  # (the plot in its place before a probe)
        probe = page.get_by_role("button", name="Probe")
        expect(probe).to_be_visible(timeout=PAGE_READY_MS)
        button = probe.bounding_box()
        tabs = page.locator(".bk-tab", has_text=re.compile("^Runs$")).bounding_box()
        assert plot["x"] + plot["width"] <= 1000 and button["x"] + button["width"] <= 1000, (plot, button)
        assert tabs["x"] + tabs["width"] <= 1000, tabs
        assert not errors, errors


def test_the_runs_table_is_as_tall_as_its_rows(browser, server):
    """The Runs table was a 320 px box whatever the store held: 10 of 24 runs shown, scrolled inside it, with half a
    1000 px window blank below; three runs sat atop 200 px of empty table. It is now as tall as its rows, up to 600 px
    (then it scrolls inside)."""
    with app_page(browser, server.url, 1400) as (page, errors):
        _tab(page, "Runs")
        table = _box(page, "run-table")
        rows = page.locator(".run-table .tabulator-row")
        wait_until(lambda: rows.count() == 3, 15, interval=0.25, what="the three runs listed")  # (bayes-imp's companion)
        last = max((rows.nth(i).bounding_box() for i in range(3)), key=lambda b: b["y"])
        assert table["y"] + table["height"] - (last["y"] + last["height"]) < 20, (table, last)
        assert not errors, errors
