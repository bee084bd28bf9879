"""The newer tabs in Chromium, as a new user sees them (one server, a store with one tiny zoo). Browser-only
bugs: what the in-process tests in test_app_newuser.py cannot see (layout, what the page shows)."""
from __future__ import annotations

import re

import pytest

from browser_support import PAGE_READY_MS, app_page, browser, playwright_or_skip, serve  # noqa: F401  (browser: a fixture)

pytestmark = pytest.mark.ui

sync_api = playwright_or_skip()
expect = sync_api.expect

from conftest import wait_until  # noqa: E402

WIDTH = 1400


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from engine import zoo as Z

    root = tmp_path_factory.mktemp("newuser")
    runs_dir = root / "runs"
    options = Z.ZooOptions(members=4)
    values = {"model.model": "mlp", "model.hidden": (8,), "train.epochs": 1, "device": "cpu"}
    Z.train_zoo(options, Z.zoo_config(options, values, runs_dir=runs_dir), runs_dir=runs_dir)
    s = serve(runs_dir, root / "serve.log")
    yield s
    s.stop()


def test_weight_space_fits_the_page_and_a_bad_value_reads_as_one_line(browser, server):
    """At 1400 px the tab titles and the Weight space tab ran past the page's right edge (its zoo/generation row had ~1150 px of
    fixed widths): the map plot and the forms' last column were cut off, with no scroll bar."""
    with app_page(browser, server.url, WIDTH) as (page, errors):
        # the thirteen tabs' titles: the last ones were past the page's right edge (Bokeh scrolls them sideways,
        # no scroll bar shown); they wrap onto a second row
        tabs = page.locator(".bk-tab")
        expect(tabs.filter(has_text=re.compile("^Runs$"))).to_be_visible()
        edges = [box["x"] + box["width"] for box in (tabs.nth(i).bounding_box() for i in range(tabs.count()))]
        assert len(edges) >= 13 and max(edges) <= WIDTH, edges
        page.locator(".bk-tab", has_text=re.compile("^Weight space$")).click()
        generate = page.get_by_role("button", name="Generate", exact=True)
        expect(generate).to_be_visible(timeout=PAGE_READY_MS)
        expect(page.locator(".weight-space-map canvas").first).to_be_visible()

        def right_edges():  # the layout settles after the plots draw: polled, bounded
            boxes = [page.locator(f".{css}").first.bounding_box() for css in ("weight-space-map", "weight-space-status")]
            return boxes if all(b and b["x"] + b["width"] <= WIDTH for b in boxes) else None

        wait_until(right_edges, 15, interval=0.25, what="the Weight space tab within the page's width")
        steps = page.get_by_label("steps", exact=True)
        expect(steps).to_have_value("3000")  # lottery generate's default (GenerateOptions)
        steps.fill("-5")
        steps.press("Enter")
        generate.click()
        status = page.locator(".weight-space-status")
        expect(status).to_contain_text("steps: -5 is not valid")
        text = status.text_content()
        assert "Traceback" not in text and text.strip().count("\n") == 0, text
        assert not errors, errors
