"""A new user's and a researcher's pass over the app (a store of a dozen runs of several families, pages 1000
and 1400 px wide), without a browser: each test is a problem seen in Chromium; its docstring says what was
seen. The few that need a browser are in test_app_qa_round_browser.py."""
from types import SimpleNamespace

import holoviews as hv
import pytest
from bokeh.models import Legend

from conftest import tiny


def _render(obj):
    return hv.renderer("bokeh").get_plot(obj).state


def _level(level: int, density: float, acc: float, layers: dict) -> dict:
    return {"level": level, "density": density, "test_accuracy": acc, "val_accuracy": acc,
            "early_stop_iteration": 40, "early_stop_test_accuracy": acc, "train_seconds": 0.1, "layers": layers}


def _summary(run_id: str, config: dict, method="imp", model="lenet300", dataset="digits", seed=0, levels=3,
             layers=("hidden.0.weight", "hidden.1.weight", "out.weight")) -> dict:
    """A run's summary as engine.list_runs gives it (no training: the plots read only these fields)."""
    def at(level):
        d = 0.8 ** level
        return _level(level, d, 0.9 - 0.01 * level, {name: d for name in layers})
    return {"run_id": run_id, "method": method, "model": model, "dataset": dataset, "seed": seed, "config": config,
            "status": "completed", "dense": at(0), "levels": [at(v) for v in range(1, levels + 1)],
            "controls": {"reinit": [{**at(v), "test_accuracy": 0.8} for v in range(1, levels + 1)]}}


def _store_of_many_runs() -> list[dict]:
    """Seven runs as a researcher's store holds them: three of one preset differing only in their rewind point,
    two others of the same model with other budgets, a transformer, a Bayesian run."""
    story = {"model": {"width": 0.5}, "train": {"batch_size": 128, "epochs": 1, "lr": 0.1, "optimizer": "sgd"},
             "prune": {"controls": ["reinit"], "levels": 2}}
    runs = [_summary(f"imp-story-{r}", {**story, "prune": {**story["prune"], **({"rewind": r} if r != "init" else {})}})
            for r in ("init", "iter:1", "lr")]
    runs += [_summary("imp-a", {"train": {"epochs": 2}, "prune": {"levels": 2}}),
             _summary("imp-b", {"train": {"epochs": 1}, "prune": {"levels": 5}, "seed": 7}, seed=7),
             _summary("bert", {"data": {"dataset": "pydoc-topics"}, "model": {"model": "bert-tiny"},
                               "prune": {"method": "bert-imp"}}, method="bert-imp", model="bert-tiny",
                      dataset="pydoc-topics"),
             _summary("bayes", {"model": {"bayesian": True, "mc_samples": 2}, "prune": {"method": "bayes-imp"}},
                      method="bayes-imp")]
    return runs


# ---------------------------------------------------------------- Accuracy / Early stopping
def test_the_accuracy_plot_of_many_runs_has_its_legend_below_with_short_names():
    """With every run of a store shown (nothing selected in Runs), the legend sat inside the plot: 20 entries of
    ~100 characters each ('reinit · imp lenet300 digits (width=0.5, controls=reinit, levels=2, rewind=lr,
    batch_size=128, epochs=1, lr=0.1, optimizer=sgd)') covered the curves, and the entries past the plot's
    height were cut off. HoloViews also took 5-8 s to draw it (its per-element work grew with the number and the
    length of the labels): the Accuracy tab took ~9 s to open on a dozen runs."""
    from explorer import plots

    summaries = _store_of_many_runs()
    element = plots.accuracy_vs_density(summaries)
    fig = _render(element)
    [legend] = [r for r in fig.below if isinstance(r, Legend)]  # below the plot, not over the curves
    labels = [item.label["value"] for item in legend.items]
    # one entry per run and variant (dense, ticket, reinit), none cut off, the plot taller by the legend's rows
    assert len(labels) == 3 * len(summaries)
    assert fig.height >= plots.COMMON["height"] + plots.LEGEND_ROW_PX * len(labels)
    # names: method, model and data set, and only the settings in which runs of that model differ
    assert "ticket · imp lenet300 digits (rewind=lr)" in labels  # the preset's three runs: their rewind point
    assert "ticket · imp lenet300 digits" in labels  # (its rewind=init is the common value)
    other = next(label for label in labels if label.startswith("ticket") and "levels=5" in label)
    assert other.startswith("ticket · imp lenet300 digits (levels=5, ")  # its rarest difference first
    assert "ticket · bert-imp bert-tiny pydoc-topics" in labels  # the only run of its kind: no settings
    assert max(map(len, labels)) <= plots.LEGEND_CHARS + 2
    assert fig.x_scale.__class__.__name__ == "LogScale" and fig.x_range.start > fig.x_range.end  # dense on the left


def test_short_names_keep_apart_runs_that_differ_in_one_setting():
    from explorer.tables import experiment_of, short_names

    runs = _store_of_many_runs()[:3]
    names = short_names(runs)
    assert sorted(names[experiment_of(s)] for s in runs) == [
        "imp lenet300 digits (rewind=init)", "imp lenet300 digits (rewind=iter:1)", "imp lenet300 digits (rewind=lr)"]
    bare = _summary("bare", {"prune": {"controls": []}})  # --controls none read 'controls=' (a value left out?)
    assert short_names([bare, _summary("imp-a", {})])[experiment_of(bare)] == "imp lenet300 digits (controls=none)"


def test_the_accuracy_plot_of_one_run_names_it_in_the_title_and_keeps_its_legend_inside():
    from explorer import plots

    run = _store_of_many_runs()[3]
    fig = _render(plots.accuracy_vs_density([run]))
    assert fig.title.text == "Test accuracy vs density: imp lenet300 digits"
    [legend] = [r for r in fig.center if isinstance(r, Legend)]
    assert [item.label["value"] for item in legend.items] == ["dense", "ticket", "reinit"]
    assert not [r for r in fig.below if isinstance(r, Legend)] and fig.height == plots.COMMON["height"]
    early = _render(plots.early_stop_vs_density([run]))
    assert early.yaxis[0].axis_label == "early-stop iteration"


def test_the_accuracy_plot_draws_every_run_in_a_few_elements():
    """The drawing cost was HoloViews' per element (Curve, Scatter and Spread per run and variant: 74 elements
    for 13 runs): the curves are now Bokeh glyphs of one element, so the plot's cost hardly grows with runs."""
    from explorer import plots

    summaries = _store_of_many_runs()
    element = plots.accuracy_vs_density(summaries)
    assert len(element) == 1  # an overlay of one empty element: the axes
    fig = _render(element)
    lines = [r for r in fig.renderers if type(r.glyph).__name__ == "Line"]
    assert len(lines) == 2 * len(summaries)  # ticket and reinit of each run (dense: a marker and a span)
    hover = [t for t in fig.tools if type(t).__name__ == "HoverTool"]
    assert hover and len(hover[0].renderers) == 3 * len(summaries)


# ---------------------------------------------------------------- Masks
def test_the_density_of_a_deep_net_is_a_heat_map_of_level_and_layer():
    """A bert-tiny run's per-layer densities as bars: twelve names of ~40 characters under the bars, turned 90°,
    took the plot's whole height; the bars were a 30 px strip under a cut-off title."""
    from explorer import plots

    layers = [f"bert.encoder.layer.{i // 6}.attention.self.{n}.weight" for i, n in
              enumerate(["query", "key", "value", "q2", "k2", "v2"] * 2)]
    run = _summary("bert", {}, method="bert-imp", model="bert-tiny", dataset="pydoc-topics", levels=11,
                   layers=layers)
    element = plots.density_bars(run)
    assert isinstance(element, hv.HeatMap)
    fig = _render(element)
    assert fig.height >= 18 * len(layers)  # a row per layer
    assert fig.yaxis[0].axis_label == "bert.encoder.layer."  # their shared prefix, said once
    assert "0.attention.self.query.weight" in set(element.dimension_values("layer"))
    assert [label for _, label in element.opts.get().kwargs["xticks"]] == [str(v) for v in range(12)]  # in order
    small = plots.density_bars(_summary("lenet", {}))  # a small net keeps its grouped bars
    assert isinstance(small, hv.Bars)


# ---------------------------------------------------------------- Live
class _FakeApp:
    def __init__(self, session):
        self.launcher = SimpleNamespace(session=session)


def test_the_live_view_shows_a_training_evaluated_once_and_says_which_it_is():
    """After a run with one epoch, the Live tab's axes reached iteration 21 and the loss axis 1.4, with nothing
    drawn: the last training (a control) was evaluated once, and a line of one point draws nothing. Nor did the
    tab say which training the curves were of (after a run: its last control, not the ticket)."""
    from explorer.views import LiveView

    point = {"iteration": 21, "train_loss": 1.3, "val_loss": 1.2, "val_accuracy": 0.6, "test_accuracy": 0.55}
    session = SimpleNamespace(run_id="imp-x", level=1, variant="random", curve=[point], status="completed")
    view = LiveView(_FakeApp(session))
    view.poll()
    for fig in (view.live.object, view.loss.object):
        glyphs = {type(r.glyph).__name__ for r in fig.renderers if r.data_source is view.source}
        assert "Scatter" in glyphs, glyphs  # a marker per evaluation: one point shows
        assert fig.title.text.endswith("(level 1 random)")
    assert view.source.data["iteration"] == [21]


# ---------------------------------------------------------------- empty plots
def test_an_empty_plots_message_fits_a_plot_beside_another():
    """At 1400 px, the Stability and Analyses tabs' empty half-width plots (~380 px) cut their messages at both
    sides: wrapped at 60 characters of 11pt. Now 50 of 10pt (~6.5 px each: ~325 px)."""
    from explorer import plots

    [text] = [e for e in plots._empty("t", "no ticket instability measured yet (learning-rate rewinding has "
                                           "none: no W_k)").traverse(lambda x: x) if isinstance(e, hv.Text)]
    lines = text.text.splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= plots.EMPTY_CHARS <= 50
    assert text.opts.get().kwargs["text_font_size"] == "10pt"


# ---------------------------------------------------------------- Leaderboard
def test_the_leaderboard_cancel_is_off_until_a_comparison_runs_and_the_methods_box_keeps_its_width(tmp_path):
    """The Leaderboard's Cancel was enabled with nothing to cancel (a click did nothing); at 1000 px the methods
    box was squeezed to ~30 px by the fixed widths beside it in a Row; and nothing said which model and data
    set a comparison trains (the launch panel's)."""
    import panel as pn

    from conftest import wait_until
    from explorer.leaderboard import LeaderboardPanel

    panel = LeaderboardPanel(tmp_path, base_config=lambda: tiny())
    assert panel.stop_button.disabled
    layout = panel.__panel__()
    assert "320px" in panel.methods.styles.get("flex", "")
    assert "launch panel" in " ".join(str(o.object) for o in layout.select(pn.pane.HTML))
    panel.methods.value = ["magnitude"]
    panel.densities.value = "0.5"
    panel.seeds.value = 1
    panel.start()
    assert not panel.stop_button.disabled and "lenet300 / digits, 2 epochs" in panel.status.object
    panel.stop()
    wait_until(lambda: panel.poll() or panel.job is None, timeout=120, what="the comparison ends")
    assert panel.stop_button.disabled


def test_the_layer_select_offers_the_chosen_levels_layers():
    """A partial-lora run's dense net has its base weights, its tickets only their LoRA adapters: the Masks
    tab offered the dense net's layers at every level, and at level 1 said 'select a run, a level and a layer'
    with all three selected (the ticket's mask has no such layer)."""
    from explorer.views import RunChoice

    base, adapters = ["enc.query.weight", "enc.key.weight"], ["enc.query.lora_A.weight", "enc.query.lora_B.weight"]
    run = _summary("pl", {}, method="partial-lora", levels=1, layers=adapters)
    run["dense"]["layers"] = {name: 1.0 for name in base}
    changes = []
    choice = RunChoice(SimpleNamespace(summaries=[run], selected=[]), on_change=lambda: changes.append(1))
    choice.update()
    assert choice.value == ("pl", 1, "enc.query.lora_A.weight") and choice.layer.options == adapters
    changes.clear()
    choice.level.value = 0
    assert choice.value == ("pl", 0, "enc.query.weight") and choice.layer.options == base
    assert len(changes) == 1  # one redraw for the level and its layers
    choice.layer.value = "enc.key.weight"
    choice.level.value = 1
    choice.level.value = 0
    assert choice.layer.value == "enc.query.weight"  # (the key layer is not at level 1: the first one of level 0)


# ---------------------------------------------------------------- the store changed outside the page
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny runs (seeds 0 and 1), stored once: the store-check tests change a copy."""
    import engine

    runs = tmp_path_factory.mktemp("two") / "runs"
    return runs, [engine.run(tiny(seed=seed), runs_dir=runs)["run_id"] for seed in (0, 1)]


def _app_on_a_copy(two_runs, tmp_path, monkeypatch):
    """An app on a copy of `two_runs`, its Masks tab showing the second run, the store checked at every tick:
    (app, runs dir, the two ids)."""
    import shutil

    from explorer import app as app_module
    from explorer.app import ExplorerApp

    runs = shutil.copytree(two_runs[0], tmp_path / "runs")
    app = ExplorerApp(runs_dir=str(runs))
    app.open("Masks")
    app.choice.run.value = two_runs[1][1]
    monkeypatch.setattr(app_module, "STORE_CHECK_S", 0.0)
    return app, runs, two_runs[1]


def test_runs_deleted_or_added_outside_the_page_show_within_a_tick(two_runs, tmp_path, monkeypatch):
    """A run deleted with the CLI (rm -r of its folder) while the app was open stayed listed in Runs, plotted in
    Accuracy and offered in Masks until Refresh was clicked; a run stored by `lottery run` in a shell never
    appeared. The app's tick now looks at the store every STORE_CHECK_S."""
    import shutil

    import engine

    app, runs, (first, second) = _app_on_a_copy(two_runs, tmp_path, monkeypatch)
    app.tick()  # nothing changed: nothing re-read
    assert [s["run_id"] for s in app.browser.summaries] == [second, first]
    shutil.rmtree(runs / second)
    app.tick()
    assert [s["run_id"] for s in app.browser.summaries] == [first]
    assert app.choice.run.options == [first] and app.choice.value[0] == first
    third = engine.run(tiny(seed=2), runs_dir=runs)["run_id"]  # as `lottery run` in a shell would
    app.tick()
    assert third in app.choice.run.options and list(app.browser.table.value["run_id"]) == [third, first]


def test_run_selects_keep_a_whole_run_id_on_a_narrow_page(tmp_path):
    """At 1000 px the Masks/Analyses run select (in a Row beside the level and layer selects) showed
    'imp-lenet300-digits-6165' (run ids differ only in their last characters), the Stability story select
    'lenet300 x0.5 on digits, sgd lr'. They sit in FlexBoxes now, the run select at least RUN_ID_PX wide."""
    import panel as pn

    from explorer.bayes import BayesPanel
    from explorer.stability import StabilityPanel
    from explorer.views import RUN_ID_PX, RunChoice

    choice = RunChoice(SimpleNamespace(summaries=[], selected=[]), on_change=lambda: None)
    row = choice.row()
    assert isinstance(row, pn.FlexBox) and list(row) == [choice.run, choice.level, choice.layer]
    assert choice.run.styles["flex"] == f"1 1 {RUN_ID_PX}px" and RUN_ID_PX >= 8 * 45
    bayes = BayesPanel(tmp_path)
    assert any(bayes.run in box for box in bayes.__panel__().select(pn.FlexBox))
    story = StabilityPanel(tmp_path)
    assert any(story.story in box for box in story.__panel__().select(pn.FlexBox))
    assert story.story.styles["flex"] == "1 1 360px"


# ---------------------------------------------------------------- Foundation models
def test_the_transfer_heat_maps_cell_text_reads_on_its_colour():
    """The Foundation models tab's one cell (ticket 0.083 vs dense 0.104) was dark red with Bokeh's default blue
    text on it: hard to read. Text is white on the map's dark ends, black on its pale middle."""
    from explorer.foundation import transfer_heatmap

    cell = {"source": "a", "n": 1, "density": 0.8}
    fig = _render(transfer_heatmap({"cells": [
        {**cell, "target": "a", "ticket_mean": 0.083, "dense_mean": 0.104, "matching": False},
        {**cell, "target": "b", "ticket_mean": 0.100, "dense_mean": 0.101, "matching": True}]}))
    [text] = [r for r in fig.renderers if type(r.glyph).__name__ == "Text"]
    assert list(text.data_source.data["text_color"]) == ["white", "black"]


def test_the_accuracy_plot_is_not_redrawn_for_a_change_that_is_not_its_own(tmp_path):
    """Picking a layer in Masks marks every tab stale: going back to Accuracy redrew its plot of every run, the
    same plot, which took seconds to reach the page with a dozen runs stored."""
    import engine
    from explorer.app import ExplorerApp

    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    app = ExplorerApp(runs_dir=str(runs))
    drawn = app.open("Accuracy").plot.object
    app.open("Masks")
    app.choice.layer.value = app.choice.layer.options[-1]  # a change of the app's choice: all tabs stale
    assert app.open("Accuracy").plot.object is drawn
    engine.run(tiny(seed=1), runs_dir=runs)  # a change of the runs it shows: redrawn
    app.browser.refresh()
    app.refresh_views()  # (as the app's tick does when the store changed)
    assert app.views["Accuracy"].plot.object is not drawn


def test_a_run_no_view_shows_growing_outside_updates_the_runs_table_only(two_runs, tmp_path, monkeypatch):
    """A `lottery compare` in a terminal stores a level every few seconds: each one redrew every view of the app
    (the Masks heat map of an unrelated run lost its zoom). Now only a change to a run a view shows, or runs
    coming or going, redraws; the Runs table follows every change."""
    import os

    import engine

    app, runs, (other, shown) = _app_on_a_copy(two_runs, tmp_path, monkeypatch)
    app.browser.selected = [shown]
    redraws = []
    monkeypatch.setattr(app, "refresh_views", lambda focus=None: redraws.append(focus))

    def grow(run_id):  # as a level stored by another process: summary.json replaced
        summary = runs / run_id / "summary.json"
        stat = summary.stat()
        os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    grow(other)
    app.tick()
    assert redraws == [] and not app.browser.changed_on_disk()  # re-read (the Runs table), nothing redrawn
    grow(shown)
    app.tick()
    assert len(redraws) == 1
    engine.run(tiny(seed=2), runs_dir=runs)  # a run coming: the views' run lists change
    app.tick()
    assert len(redraws) == 2


def test_the_store_check_expands_a_runs_dir_given_with_a_tilde(tmp_path, monkeypatch):
    """`RunBrowser('~/runs')`: list_runs expands ~, the 2 s check scanned the literal '~/runs' and never saw a
    change."""
    from explorer.browser import RunBrowser

    monkeypatch.setenv("HOME", str(tmp_path))
    browser = RunBrowser("~/runs")
    assert not browser.changed_on_disk()
    (tmp_path / "runs" / "some-run").mkdir(parents=True)
    assert browser.changed_on_disk() == {"some-run"}
