"""The app in Chromium on a 1000 px wide page, as the QA round saw it (one server, a store of one tiny run).
What only a browser shows: widths as laid out. The in-process tests of the same round are in test_app_qa_round.py."""
from __future__ import annotations

import re

import pytest

from browser_support import PAGE_READY_MS, app_page, browser, playwright_or_skip, serve  # noqa: F401  (browser: a fixture)

pytestmark = pytest.mark.ui

sync_api = playwright_or_skip()
expect = sync_api.expect

from conftest import tiny, wait_until  # noqa: E402

WIDTH = 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import engine

    root = tmp_path_factory.mktemp("qa-round")
    runs_dir = root / "runs"
    engine.run(tiny(), runs_dir=runs_dir)
    s = serve(runs_dir, root / "serve.log")
    yield s
    s.stop()


def _tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=re.compile(f"^{re.escape(title)}$")).click()


def test_at_1000_px_the_leaderboard_methods_and_the_run_select_keep_their_width(browser, server):
    """On a 1000 px page: the Leaderboard's methods box was ~30 px wide (a Row of fixed widths squeezed it) and
    its Cancel enabled with nothing to cancel; the Masks run select showed a cut run id."""
    with app_page(browser, server.url, WIDTH) as (page, errors):
        _tab(page, "Leaderboard")
        expect(page.get_by_role("button", name="Compare")).to_be_visible(timeout=PAGE_READY_MS)
        expect(page.get_by_role("button", name="Cancel").last).to_be_disabled()  # nothing to cancel yet
        methods = page.locator(".choices", has_text="edgepopup").first  # the methods MultiChoice (not the sidebar's)
        wait_until(lambda: (methods.bounding_box() or {}).get("width", 0) >= 300, 15, interval=0.25,
                   what="the methods box at least 300 px wide")
        _tab(page, "Masks")
        run = page.locator("select").filter(has=page.locator("option", has_text="imp-lenet300-digits")).first
        expect(run).to_be_visible(timeout=PAGE_READY_MS)
        wait_until(lambda: (run.bounding_box() or {}).get("width", 0) >= 340, 15, interval=0.25,
                   what="the run select wide enough for a whole run id")
        assert not errors, errors
