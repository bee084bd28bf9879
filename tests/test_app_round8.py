"""Round 8 of the app's UX fixes, without a browser: each test is a problem seen in Chromium at 1000 and 1400 px
(a store of imp, bayes-imp, zoo, ks-lottery, partial-lora and lota runs); its docstring says what was seen. The
few that need a browser are in test_app_round8_browser.py."""
from __future__ import annotations

from types import SimpleNamespace

import panel as pn
import pytest

import engine
from explorer.app import ExplorerApp

from conftest import tiny, wait_until


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


# ---------------------------------------------------------------- one unit for accuracy: %
def _uncertainty_record(acc=0.9) -> dict:
    reliability = {"bins": 2, "accuracy": [0.5, acc], "confidence": [0.4, 0.8], "count": [3, 7]}
    measured = {"accuracy": acc, "nll": 0.3, "ece": 0.05, "reliability": reliability}
    return {"bayesian": True, "levels": [{"level": 1, "density": 0.8, "variants": {"ticket": measured},
                                          "deterministic": {**measured, "accuracy": acc - 0.01}}]}


def _values(element, dim: str) -> list[float]:
    """Every value of dimension `dim` in the elements of `element` that have it."""
    import holoviews as hv

    out = []
    for e in element.traverse(lambda e: e, [hv.Element]):
        if dim in [d.name for d in e.dimensions()]:
            out += [float(v) for v in e.dimension_values(dim)]
    return out


def test_every_accuracy_the_app_shows_is_in_percent():
    """Accuracy was a fraction (0.95) in the Live, Weight space, Bayesian and Embedding tickets tabs and the Runs
    table, a percentage (95%) in Accuracy, Leaderboard and Stability (and `lottery list`). Now % everywhere, the
    axes saying so."""
    from bokeh.models import ColumnDataSource, NumeralTickFormatter

    from explorer import bayes, foundation, foundation_ii, views, weight_space
    from explorer.tables import runs_table

    live = views.accuracy_figure(ColumnDataSource({c: [] for c in views.CURVE_COLUMNS}))
    assert "%" in live.yaxis.axis_label and isinstance(live.yaxis.formatter, NumeralTickFormatter)
    assert live.yaxis.formatter.format == "0%"  # the run's fractions, read as %

    report = {"accuracies": {"zoo": [0.9, 0.92], "generated": [0.91, 0.93], "gaussian": [0.5]},
              "accuracy": {"zoo_mean": 0.91}, "canonicalise": "rebasin", "options": {"pca": 2},
              "map": {"zoo": [[0, 1], [1, 0]], "generated": [[0.5, 0.5], [0.2, 0.1]]}}
    plot = weight_space.accuracy_plot(report)
    assert plot.opts.get().kwargs["ylabel"] == "test accuracy (%)"
    assert min(_values(plot, "accuracy")) == 50 and max(_values(plot, "accuracy")) == 93
    assert max(_values(weight_space.map_plot(report), "accuracy")) == 93

    results = {"bayes-run": _uncertainty_record(0.9)}
    metric = bayes.metric_plot(results, "accuracy")
    assert "%" in metric.opts.get().kwargs["ylabel"] and sorted(set(_values(metric, "accuracy"))) == [89, 90]
    reliability = bayes.reliability_plot(results["bayes-run"]["levels"][0])
    assert reliability.opts.get().kwargs["ylabel"] == "accuracy (%)" \
        and sorted(set(_values(reliability, "accuracy"))) == [0, 50, 90, 100]  # bins, and the diagonal's ends

    result = {"sequential": {k: {"forgetting": 0.2} for k in ("dense", "lota")},
              "merge": {k: {"a": 0.5, "b": 0.4} for k in ("dense", "lota")}}
    assert sorted({r["value"] for r in foundation.lota_rows([result])}) == [20, 40, 50]

    lora = foundation_ii.lora_accuracy([{"trainable": 100, "test_accuracy": 0.083, "rule": "uniform", "rank": 4}])
    assert _values(lora, "test accuracy (%)") == [8.3]
    assert foundation_ii.ks_summary({"embedding_test_accuracy": 0.9, "head_only_test_accuracy": 0.6, "top": [],
                                     "levels": []}).startswith("Embedding fine-tune 90.0%, head alone 60.0%")

    row = runs_table([{"run_id": "r", "levels": [{"density": 0.6434, "test_accuracy": 0.9139}],
                       "dense": {"test_accuracy": 0.9028}}]).iloc[0]
    assert (row["last density (%)"], row["last test acc (%)"], row["dense test acc (%)"]) == (64.34, 91.39, 90.28)


# ---------------------------------------------------------------- Bayesian: the sigma map
def test_the_sigma_map_spreads_its_colours_over_the_kept_weights_and_says_how_much_sigma_varies():
    """A bayes-imp run's sigma map (one epoch) looked like noise: log10 sigma coloured over its whole range, every
    tick of the colour bar read -2.9088, as sigma had moved a fraction of a percent from its start. Now: sigma
    against the layer's median (%), the colours spanning its 2nd-98th percentiles, a labelled colour bar, and the
    x axis saying how much sigma varies."""
    import numpy as np

    from explorer.bayes import sigma_plot

    rng = np.random.default_rng(0)
    sigma = 0.0012 * (1 + 1e-4 * rng.standard_normal((30, 20)))  # within ~0.03% of each other
    sigma[0, 0] = 0.0024  # one far-off weight: it must not set the colour range
    sigma[:, 5] = 0  # a pruned input
    plot = sigma_plot(sigma, "hidden.0.weight", 2)
    kw = plot.opts.get().kwargs
    low, high = kw["clim"]
    assert low == -high and 0.005 < high < 0.05  # the bulk's spread (%), not the outlier's +100%
    assert "median" in kw["clabel"] and "%" in kw["clabel"] and kw["colorbar"]
    assert "±" in kw["xlabel"] and "nearly uniform" in kw["xlabel"]  # (not "near its start": it may have moved)
    assert "median 0.0012" in kw["title"]
    values = plot.dimension_values(2, flat=False)
    assert np.isnan(values).sum() == 30  # pruned weights: blank
    assert len(kw["title"]) <= 70  # fits a plot ~600 px wide (one per row at 1000 px)


# ---------------------------------------------------------------- Runs: what a run is for
@pytest.fixture(scope="module")
def bayes_store(tmp_path_factory):
    """A store of a bayes-imp run (with the deterministic IMP run it trains) and an unrelated IMP run:
    (runs dir, the bayes-imp run's config, the other run's id)."""
    runs = tmp_path_factory.mktemp("round8-bayes") / "runs"
    cfg = tiny(**{"model.bayesian": True, "model.mc_samples": 2, "prune.method": "bayes-imp", "prune.levels": 1,
                  "train.epochs": 1, "prune.controls": ()})
    engine.run(cfg, runs_dir=runs)
    other = engine.run(tiny(**{"prune.levels": 1, "seed": 5}), runs_dir=runs)["run_id"]
    return runs, cfg, other


def test_the_deterministic_run_a_bayes_imp_run_trained_is_explained_in_the_runs_table(bayes_store):
    """A bayes-imp run trains the deterministic IMP ticket it compares against as its own run: the Runs table
    listed 'imp-lenet300-digits-…' beside it with no word of why. Its row now says, as the bayes-imp run's
    uncertainty record gives it (`deterministic_run`)."""
    from explorer.browser import RunBrowser

    runs, cfg, other = bayes_store
    det = engine.RunStore(runs, cfg.run_id).analyses()["uncertainty"]["deterministic_run"]
    table = RunBrowser(str(runs)).table.value.set_index("run_id")
    assert set(table.index) == {cfg.run_id, det, other}
    assert table.loc[det, "note"] == f"deterministic comparison for {cfg.run_id}"
    assert table.loc[cfg.run_id, "note"] == table.loc[other, "note"] == ""


def test_the_bayesian_metric_plot_keeps_its_own_accuracy_axis(bayes_store):
    """At 1400 px the Bayesian tab's 'Test accuracy vs density' was a flat line at the top of a 0-100 axis (at
    1000 px, of 0-1): Panel linked its 'accuracy' axis to the reliability diagram's below it, which spans 0-100."""
    from bokeh.models import Plot

    from explorer.bayes import BayesPanel

    runs, cfg, _ = bayes_store
    panel = BayesPanel(str(runs))
    root = pn.panel(panel).get_root()
    [metric] = [f for f in root.select({"type": Plot}) if f.title.text.startswith("Test accuracy vs density")]
    accuracies = [100 * v["accuracy"] for e in panel.results[cfg.run_id]["levels"] for v in e["variants"].values()]
    assert metric.y_range.start > min(accuracies) - 10 and metric.y_range.end < max(accuracies) + 10


# ---------------------------------------------------------------- Embedding & adapter tickets
def test_precision_of_a_task_without_a_known_set_is_a_message_not_empty_axes():
    """A ks-lottery run on pydoc-topics (no known set of tokens) drew 'No known set for this task' over empty
    axes, a legend and no line. Now the plot says why there is nothing to draw."""
    import holoviews as hv

    from explorer.foundation_ii import ks_precision

    levels = [{"k": k, "ticket": {"recovered": None}, "random-tokens": {"recovered": None}} for k in (8, 16)]
    for record in ({"known": None, "levels": levels}, {"known": [], "levels": levels}):
        plot = ks_precision(record)
        [text] = plot.traverse(lambda e: e, [hv.Text])
        assert "no known set" in text.text and not plot.traverse(lambda e: e, [hv.Curve])
    known = [{**row, "ticket": {"precision": 0.5, "recovered": None}} for row in levels]
    assert ks_precision({"known": [1, 2], "levels": known}).traverse(lambda e: e, [hv.Curve])


# ---------------------------------------------------------------- Foundation models
def test_the_transformer_run_select_shows_a_whole_run_id_and_titles_leave_it_out(tmp_path):
    """At 1000 px the Foundation models tab's run select sat in a Row beside the level slider, ~170 px wide:
    'lota-bert-tiny-pydoctopics-c5106a…'; the block-density title repeated the id and ran past the plot, as
    did the transfer map's title (its rows and columns explained in it)."""
    from explorer.foundation import FoundationPanel, transfer_heatmap
    from explorer.views import RUN_ID_PX

    panel = FoundationPanel(str(tmp_path / "runs"))
    [box] = [o for o in panel.__panel__().select(pn.FlexBox) if panel.run in o.objects]
    assert panel.run.styles["flex"] == f"1 1 {RUN_ID_PX}px"
    panel._summaries = {"lota-bert-tiny-pydoctopics-c5106a3dc1": {"dense": {"level": 0, "density": 1.0,
                                                                            "layers": {}}, "levels": []}}
    panel.run.options = list(panel._summaries)
    panel.run.value = "lota-bert-tiny-pydoctopics-c5106a3dc1"
    assert "c5106a3dc1" not in panel.block_pane.object.opts.get().kwargs["title"]
    assert len(transfer_heatmap(None).opts.get().kwargs["title"]) <= 60


def test_no_plot_is_blank_without_a_message():
    """The Analyses tab's 'Barrier vs rewind point' and the Leaderboard's 'Search cost vs accuracy' were empty
    frames with no word (their neighbour's message explained both when two shared a row; one per row at 1000 px,
    each read as broken)."""
    import holoviews as hv

    from explorer import analysis_plots, leaderboard

    for plot in (analysis_plots.instability_barriers(None), leaderboard.cost_vs_accuracy(None)):
        [text] = plot.traverse(lambda e: e, [hv.Text])
        assert len(text.text) > 20, plot


def test_tables_shown_as_code_blocks_make_the_markdown_pane_guess_no_language(monkeypatch):
    """The Weight space tab's first visit (~3 s in Chromium) spent ~0.4 s in the Markdown pane of its report
    table: a code block with no language made the highlighter guess one, importing and trying every Pygments
    lexer (IPython's included). The CLI tables the tabs show (report, leaderboard, probe, run summary) say 'text'."""
    from markdown.extensions import codehilite

    from explorer import weight_space
    from explorer.plots import code_block

    guessed = []  # (Panel's Markdown pane highlights with codehilite, and shows the text as it is if that fails)
    monkeypatch.setattr(codehilite, "guess_lexer", lambda *args, **kwargs: guessed.append(args) or 1 / 0)
    monkeypatch.setattr("engine.generate.format_report", lambda report: "zoo  median\n a   0.9")
    table = weight_space.report_table({"any": "report"})
    assert "zoo  median" in pn.pane.Markdown(table).get_root().text
    assert not guessed
    assert table == code_block("zoo  median\n a   0.9")


def test_masks_and_analyses_offer_no_zoo(tmp_path):
    """The run select of Masks and Analyses offered the store's zoos: chosen, Masks drew 'no level finished yet'
    with empty level and layer selects, and Analyze → sanity failed with "kind: 'zoo' is not valid; unknown
    field". A zoo has no levels or masks (the Weight space tab shows it)."""
    from engine.cli import main

    runs = tmp_path / "runs"
    assert main(["zoo", "--members", "2", "--model", "mlp", "--hidden", "8", "--epochs", "1", "--quiet",
                 "--runs-dir", str(runs)]) == 0
    run_id = engine.run(tiny(**{"prune.levels": 1}), runs_dir=runs)["run_id"]
    app = ExplorerApp(runs_dir=str(runs))
    assert any(s.get("kind") == "zoo" for s in app.browser.summaries)
    assert app.choice.run.options == [run_id]
    zoo = next(s["run_id"] for s in app.browser.summaries if s.get("kind") == "zoo")
    app.browser.selected = [zoo]  # chosen in the Runs table (for the Accuracy plot): still not offered
    assert app.choice.run.options == [run_id] and app.choice.run.value == run_id


def test_the_hardware_plot_is_not_left_unexplained_before_a_probe(tmp_path):
    """Before a probe the Hardware tab's plot held two reference lines and a legend of patterns with no points,
    and nothing said what to do. The status line above it says, and the plot itself says to run a probe (it
    still drew the empty legend); the first row measured brings the speedup plot."""
    import holoviews as hv

    from explorer.hardware import HardwarePanel

    panel = HardwarePanel(str(tmp_path / "runs"))
    assert "Probe" in panel.status.object and "plot" in panel.status.object

    def drawn():  # the plot shown (the speedup plot streams from a Pipe: its DynamicMap's current frame)
        [pane] = getattr(panel, "shown", [panel.plot])
        return pane.object[()] if isinstance(pane.object, hv.DynamicMap) else pane.object

    assert [e.text for e in drawn() if isinstance(e, hv.Text)] and not any(isinstance(e, hv.Scatter) for e in drawn())
    assert "run a probe" in drawn().get(0).text
    panel.layer.value, panel.batches.value, panel.sparsities.value = "32x32", "1", "0.5"
    panel.start()
    assert "run a probe" in drawn().get(0).text  # (probing, no row yet)
    wait_until(lambda: panel.poll() or panel.job is None, interval=0.01)
    assert panel.status.object.startswith("done")
    assert {e.label for e in drawn() if isinstance(e, hv.Scatter) and len(e)} == {"masked", "csr", "channel"}


def test_the_live_curves_last_point_is_not_on_the_plots_edge(tmp_path):
    """A run of one epoch on digits is evaluated once per training, at iteration 21: the Live plots' iteration
    axis ended at 21, the markers cut in half by the plot's right edge (beside the toolbar)."""
    from explorer.views import LiveView

    view = LiveView(SimpleNamespace(launcher=None))
    view.source.data = {"iteration": [21], "train_loss": [0.5], "val_accuracy": [0.9], "test_accuracy": [0.88]}
    view._fit_ranges()
    for fig in (view.live.object, view.loss.object):
        assert fig.x_range.end > 21


def test_the_stability_panel_says_the_levels_its_runs_train_and_its_title_the_dense_lines_colours(tmp_path):
    """It said '14 levels each' whatever the overrides (notebook 09 trains 2), and 'grey: dense' of a black line."""
    from explorer.stability import StabilityPanel, accuracy_plot
    text = StabilityPanel(tmp_path, overrides={"prune.levels": 2}).__panel__()[0].object
    assert "2 levels each" in text and "14 levels" not in text
    assert "14 levels each" in StabilityPanel(tmp_path).__panel__()[0].object
    rows = [{"rewind": "init", "rewind_kind": "init", "variant": v, "level": lv, "density": d, "test_accuracy": a,
             "seed": 0} for v, lv, d, a in [("dense", 0, 1.0, 0.95), ("ticket", 1, 0.8, 0.94)]]
    title = accuracy_plot(rows).opts.get().kwargs["title"]
    assert "black: dense" in title and "grey: dense" not in title


def test_the_early_bird_line_has_single_spaces():
    from engine.analysis.earlybird_tracker import format_earlybird
    line = format_earlybird("earlybird", {"detected_epoch": 2, "epochs_total": 4, "eps": 0.1, "method": "snip",
                                          "imp_ticket": {"level": 2, "density": 0.64, "test_accuracy": 0.93}})
    assert "test 93.00%" in line and "  " not in line


def test_launching_a_stored_run_again_shows_its_last_tickets_training_on_live(tmp_path):
    """It said 'completed' at once and Live stayed empty: nothing trained, so no evaluations came."""
    from conftest import tiny

    from explorer.session import RunSession
    cfg = tiny(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": ()})
    first = RunSession(cfg, tmp_path)
    first.start()
    first.join(300)
    first.drain()
    assert first.status == "completed" and first.curve
    again = RunSession(cfg, tmp_path)
    again.start()
    again.join(300)
    again.drain()
    assert again.status == "completed" and "stored already" in again.message
    assert [p["iteration"] for p in again.curve] == [p["iteration"] for p in first.curve]
    assert again.curve[-1]["test_accuracy"] == pytest.approx(first.curve[-1]["test_accuracy"])


def test_the_runs_tables_notes_wait_for_the_engine_on_a_served_page_and_an_empty_note_column_is_hidden(tmp_path):
    """The notes come from the methods' specs, which import torch: on a served page whose engine is still
    importing, the Runs table is built without them (1-1.5 s of torch on the event loop otherwise)."""
    import subprocess
    import sys
    code = ("from explorer import engine_import\n"
            "engine_import.current = engine_import.EngineImport()\n"
            "from explorer.browser import RunBrowser\n"
            f"b = RunBrowser({str(tmp_path)!r}); b.table\n"
            "import sys; print('torch' in sys.modules, b.table.hidden_columns)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "['note']"]


def test_earlybird_replay_of_a_run_with_no_ticket_level_yet_is_bad_input(tmp_path):
    import shutil

    from conftest import tiny
    from engine.analysis.earlybird_tracker import run_earlybird
    from engine.errors import ConfigError
    cfg = tiny(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": ()})
    engine.run(cfg, runs_dir=tmp_path)
    shutil.rmtree(tmp_path / cfg.run_id / "levels" / "ticket" / "001")
    with pytest.raises(ConfigError, match="no ticket level yet"):
        run_earlybird(tmp_path, cfg.run_id)


@pytest.mark.parametrize("title, module, cls", [("Stability", "explorer.stability", "StabilityPanel"),
                                                ("Bayesian", "explorer.bayes", "BayesPanel"),
                                                ("Hardware", "explorer.hardware", "HardwarePanel")])
def test_a_tab_that_draws_when_made_is_drawn_once_on_its_first_visit(tmp_path, monkeypatch, title, module, cls):
    """Its __init__ drew it and the app refreshed it again: every store read of a first visit done twice."""
    import importlib

    from explorer.app import ExplorerApp
    panel = getattr(importlib.import_module(module), cls)
    calls = []
    refresh = panel.refresh
    monkeypatch.setattr(panel, "refresh", lambda self: (calls.append(1), refresh(self))[1])
    app = ExplorerApp(runs_dir=str(tmp_path))
    assert app.open(title) is not None and len(calls) == 1
