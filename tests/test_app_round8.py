"""Round 8 of the app's UX fixes, without a browser: each test is a problem seen in Chromium at 1000 and 1400 px
(a store of imp, bayes-imp, zoo, ks-lottery, partial-lora and lota runs); its docstring says what was seen. The
few that need a browser are in test_app_round8_browser.py."""
from __future__ import annotations

import panel as pn

import engine
from explorer.app import ExplorerApp

from conftest import tiny


# ---------------------------------------------------------------- first visits
class DrawnView(pn.viewable.Viewer):
    """A tab that records, at each refresh, whether it was already on the page."""

    def __init__(self, app):
        super().__init__()
        self.app, self.pane, self.on_page_at_refresh = app, pn.pane.Markdown("toy"), []

    def refresh(self):
        self.on_page_at_refresh.append(self.pane in self.app.tab_column("Drawn").objects)

    def __panel__(self):
        return self.pane


def test_a_tab_is_drawn_once_before_it_goes_on_the_page(tmp_path, monkeypatch):
    """A tab's first visit put its Viewer on the page, then refreshed it: every plot it had drawn was rendered
    and sent, then drawn, rendered and sent again (the Stability tab's four plots twice)."""
    from explorer import tabs

    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    monkeypatch.setattr(tabs, "TABS", [*tabs.TABS, tabs.Tab("Drawn", "test_app_round8:DrawnView")])
    app = ExplorerApp(runs_dir=str(runs))
    view = app.open("Drawn")
    assert view.on_page_at_refresh == [False]
    assert view.pane in app.tab_column("Drawn").objects


def test_the_engine_import_also_imports_what_the_plot_tabs_draw_with():
    """The first visit of a plot tab (Stability ~8 s, Weight space ~5 s on the busy machine) began with importing
    HoloViews' Bokeh backend and pandas on the event loop: about a second of it on an idle one. The engine's
    import, after the first page, now imports them too."""
    import subprocess
    import sys

    code = ("import sys; from explorer import engine_import; e = engine_import.EngineImport(); e._work(); "
            "assert e.ready(); print(sorted({'holoviews.plotting.bokeh', 'pandas'} - set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- layout
def test_every_tab_puts_its_paired_plots_in_one_layout_that_stacks_them_on_a_narrow_page(tmp_path):
    """Plots two to a row were ~280 px wide on a 1000 px page, their titles cut (Chromium: the browser test of
    this round). Every tab that pairs plots uses plots.side_by_side, whose Row stacks them below TWO_PER_ROW_PX."""
    from explorer import plots
    from explorer.analyses import AnalysisPanel
    from explorer.bayes import BayesPanel
    from explorer.foundation_ii import EmbeddingTicketsPanel
    from explorer.leaderboard import LeaderboardPanel
    from explorer.stability import StabilityPanel
    from explorer.weight_space import WeightSpacePanel

    runs = str(tmp_path / "runs")
    panels = [AnalysisPanel(runs), BayesPanel(runs), EmbeddingTicketsPanel(runs), LeaderboardPanel(runs),
              StabilityPanel(runs), WeightSpacePanel(runs)]
    for panel in panels:
        layout = panel.__panel__()
        rows = [o for o in layout.select(pn.Row) if sum(isinstance(c, pn.pane.HoloViews) for c in o) == 2]
        assert rows, type(panel).__name__
        for row in rows:
            assert plots.ONE_PER_ROW in row.stylesheets, type(panel).__name__
    assert f"max-width: {plots.TWO_PER_ROW_PX - 1}px" in plots.ONE_PER_ROW
