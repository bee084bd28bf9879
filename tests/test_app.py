"""The explorer without a browser: launch -> drain events -> state and plot data."""
import subprocess
import sys

import holoviews as hv
import panel as pn
import pytest

import engine
import explorer.app
from explorer import engine_import, plots
from explorer.app import ExplorerApp
from explorer.cli import plain_serve_args
from explorer.tables import level_rows, seed_bands

from conftest import tiny, wait_until


def _until_done(app, timeout=120):
    s = app.launcher.session
    wait_until(lambda: app.tick() or (s.status in ("completed", "failed", "cancelled") and not s.alive), timeout,
               what=f"the run ends (still {s.status})")
    app.tick()
    return s


def _render(obj):
    return hv.renderer("bokeh").get_plot(obj).state


@pytest.fixture
def app(tmp_path):
    return ExplorerApp(runs_dir=str(tmp_path / "runs"))


def test_opens_on_the_offline_default_with_stored_runs(tmp_path):
    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    app = ExplorerApp(runs_dir=str(runs))
    assert app.launcher.widgets["data.dataset"].value == "digits"
    assert app.launcher.widgets["model.model"].value == "lenet300"
    assert list(app.browser.table.value["run_id"]) == [tiny().run_id]
    assert app.choice.run.value == tiny().run_id
    assert set(app.views) == {"Live"}  # tabs are built on their first visit...
    assert isinstance(app.open("Masks").heatmap.object, hv.Image)  # ...like this one
    assert set(app.views) == {"Live", "Masks"}


def test_a_served_page_shows_stored_runs_while_the_engine_loads(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    loading = engine_import.EngineImport()  # as `lottery serve` sets it up, not started yet
    monkeypatch.setattr(engine_import, "current", loading)
    app = ExplorerApp(runs_dir=str(runs))
    assert app.launcher is None
    assert "Loading engine" in app._sidebar[0].object
    assert list(app.browser.table.value["run_id"]) == [tiny().run_id]  # stored runs at once
    assert isinstance(app.open("Accuracy").plot.object, hv.Overlay)
    assert app.open("Analyses") is None  # built once the engine is in
    assert "Loading engine" in app.tab_column("Analyses")[0].object
    app.tick()
    assert app.launcher is None
    loading.start()
    loading.future.result(timeout=120)
    app.tick()
    assert app.launcher.widgets["model.model"].value == "lenet300"
    analyses = app.views["Analyses"]
    assert analyses.run_id == tiny().run_id
    assert app.launcher.launch_button in app._sidebar.select(pn.widgets.Button)  # in place of the note
    assert analyses.button in app.tab_column("Analyses").select(pn.widgets.Button)
    app.launcher.set_values(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": ()})
    app.launcher.launch()
    assert _until_done(app).status == "completed"


def test_the_engine_watch_attaches_the_launch_panel_once_and_stops(tmp_path, monkeypatch):
    """start_polling: the tick every POLL_MS and, while the engine imports, a watch every ENGINE_POLL_MS that
    attaches the launch panel as soon as the import is done, then stops (a later call attaches nothing)."""
    started = []

    class Callback:
        def __init__(self, callback, period):
            self.callback, self.period, self.stopped = callback, period, False
            started.append(self)

        def stop(self):
            self.stopped = True
    monkeypatch.setattr(explorer.app, "_every", Callback)
    loading = engine_import.EngineImport()
    monkeypatch.setattr(engine_import, "current", loading)
    app = ExplorerApp(runs_dir=str(tmp_path / "runs"))
    app.start_polling()
    app.start_polling()  # (once is enough: no second set)
    tick, watch = started
    assert (tick.period, watch.period) == (explorer.app.POLL_MS, explorer.app.ENGINE_POLL_MS)
    watch.callback()
    assert app.launcher is None and not watch.stopped  # still importing
    loading.start()
    loading.future.result(timeout=120)
    watch.callback()
    launcher = app.launcher
    assert launcher is not None and watch.stopped and not tick.stopped
    watch.callback()
    tick.callback()
    assert app.launcher is launcher  # attached once
    app.stop()
    assert tick.stopped


def test_an_engine_that_failed_to_import_is_reported_on_the_page(tmp_path, monkeypatch):
    failed = engine_import.EngineImport()
    failed.future.set_exception(ImportError("No module named 'torch'"))
    monkeypatch.setattr(engine_import, "current", failed)
    app = ExplorerApp(runs_dir=str(tmp_path / "runs"))
    app.tick()
    assert app.launcher is None
    assert "The engine failed to load" in app._sidebar[0].object and "torch" in app._sidebar[0].object
    assert app.open("Hardware") is None and "torch" in app.tab_column("Hardware")[0].object
    app.stop()


def test_serve_is_parsed_without_the_engine_parser():
    args = plain_serve_args(["serve", "--port", "5100", "--runs-dir", "r"])
    assert (args.port, args.runs_dir, args.address) == (5100, "r", "127.0.0.1")
    assert plain_serve_args(["serve"]).runs_dir == engine.DEFAULT_RUNS_DIR
    for argv in (["serve", "--help"], ["serve", "--debug"], ["serve", "--port", "x"], ["--debug", "serve"],
                 ["run"], []):
        assert plain_serve_args(argv) is None, argv  # the full parser handles (and explains) these


def test_serving_the_first_page_needs_no_torch(tmp_path):
    """`lottery serve` parses its own flags (building the engine's parser imports torch), and the first page
    shows stored runs (JSON) while the launch panel waits for the engine (explorer.engine_import); the
    engine tabs' modules are imported on their first visit, not for the first page."""
    code = ("import sys, explorer.cli, explorer.app; from explorer import engine_import; "
            "assert explorer.cli.plain_serve_args(['serve']) is not None; "
            "engine_import.current = engine_import.EngineImport(); "
            f"app = explorer.app.ExplorerApp(runs_dir={str(tmp_path)!r}); app.template(); "
            "assert app.launcher is None and app.browser.summaries == []; "
            "from explorer.tabs import TABS; "
            "heavy = ['engine.cli', 'explorer.launch', 'torch', 'safetensors'] + "
            "[t.factory.partition(':')[0] for t in TABS if t.engine]; "  # tab modules load on first visit
            "print(sorted(m for m in heavy if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_launch_streams_progress_and_updates_views(app):
    app.launcher.set_values(**{"train.epochs": 2, "prune.levels": 2, "prune.controls": ("reinit",)})
    session = app.launcher.launch()
    assert session is not None and app.launcher.cancel_button.disabled is False
    s = _until_done(app)
    assert s.status == "completed" and s.progress == 100
    assert s.curve and s.curve[-1]["iteration"] > 0
    live = app.views["Live"].source.data  # the live plots were streamed the last training's points
    assert [dict(zip(live, row)) for row in zip(*live.values())] == [
        {k: p[k] for k in live} for p in s.curve]
    assert "completed" in app.launcher.status.object
    assert app.launcher.launch_button.disabled is False
    # the views read the new run
    assert list(app.browser.table.value["run_id"]) == [s.run_id]
    levels = level_rows(app.browser.chosen())
    assert sorted(levels["variant"].unique()) == ["dense", "reinit", "ticket"]
    live, accuracy, early_stop, masks = (app.open(t) for t in ("Live", "Accuracy", "Early stopping", "Masks"))
    for pane in (accuracy.plot, early_stop.plot, masks.density, masks.heatmap):
        _render(pane.object)
    assert app.choice.level.options == [0, 1, 2]
    assert masks.heatmap.object.data.mean() == pytest.approx(0.64, abs=1e-3)  # hidden.0 at level 2: 0.8^2


def test_invalid_settings_show_the_config_error(app):
    app.launcher.set_values(**{"prune.prune_fraction": 1.5})
    assert app.launcher.launch() is None
    assert app.launcher.alert.visible
    assert app.launcher.alert.object.startswith("prune.prune_fraction: 1.5")
    app.launcher.set_values(**{"prune.rewind": "later"})
    app.launcher.set_values(**{"prune.prune_fraction": 0.2})
    assert app.launcher.launch() is None and "prune.rewind" in app.launcher.alert.object


def test_a_failing_run_shows_its_error_and_the_app_keeps_working(app, tmp_path):
    app.launcher.set_values(**{"data.dataset": "cifar10", "data.data_dir": str(tmp_path / "nodata")})
    _until_done(app) if app.launcher.launch() else None
    assert app.launcher.session.status == "failed"
    assert "CIFAR-10" in app.launcher.alert.object and "--download" in app.launcher.alert.object
    app.launcher.set_values(**{"data.dataset": "digits", "train.epochs": 1, "prune.levels": 1})
    app.launcher.launch()
    assert _until_done(app).status == "completed"


def test_cancel_stops_cleanly_and_keeps_completed_levels(app):
    app.launcher.set_values(**{"train.epochs": 3, "prune.levels": 20, "prune.controls": ()})
    s = app.launcher.launch()
    wait_until(lambda: app.tick() or s.levels_done >= 2, interval=0.02, what="two levels stored")
    app.launcher.cancel()
    assert _until_done(app).status == "cancelled"
    summary = engine.RunStore(app.runs_dir, s.run_id).summary()
    assert summary["status"] == "cancelled" and 1 <= len(summary["levels"]) < 20
    assert "kept" in app.launcher.status.object


def test_delete_asks_for_confirmation(tmp_path):
    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    app = ExplorerApp(runs_dir=str(runs))
    app.browser.select([tiny().run_id])
    assert app.browser.selected == [tiny().run_id]
    app.browser.ask_delete()
    assert app.browser.confirm.visible and engine.RunStore(runs, tiny().run_id).exists()
    app.browser.delete_selected()
    assert not engine.RunStore(runs, tiny().run_id).exists()
    assert app.browser.table.value.empty


def test_seed_bands_average_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    summaries = [engine.run(tiny(seed=s), runs_dir=runs) for s in (0, 1)]
    bands = seed_bands(level_rows(summaries), "test_accuracy")
    assert bands["experiment"].nunique() == 1  # seeds are one experiment
    row = bands[(bands["variant"] == "ticket") & (bands["level"] == 2)].iloc[0]
    accs = [s["levels"][1]["test_accuracy"] for s in summaries]
    assert row["seeds"] == 2 and row["mean"] == pytest.approx(sum(accs) / 2)
    plot = _render(plots.accuracy_vs_density(summaries))
    assert plot.x_scale.__class__.__name__ == "LogScale"


def test_report_writes_standalone_html(tmp_path):
    from explorer.cli import main
    runs = tmp_path / "runs"
    s = engine.run(tiny(), runs_dir=runs)
    out = tmp_path / "report.html"
    assert main(["report", s["run_id"], "--runs-dir", str(runs), "--html", str(out)]) == 0
    html = out.read_text()
    assert s["run_id"] in html and "Bokeh" in html and "cdn.bokeh.org" not in html


def test_ipywidgets_launcher(tmp_path):
    from explorer.widgets import launcher
    w = launcher(runs_dir=str(tmp_path / "runs"))
    w.fields["train.epochs"].value = 1
    w.fields["prune.levels"].value = 1
    w.fields["prune.controls"].value = ()
    session = w.launch()
    w.wait(120)
    wait_until(lambda: not w.launch_button.disabled, timeout=10, what="the launcher follows the run to its end")
    assert session.status == "completed" and w.progress.value == 100
    w.fields["prune.levels"].value = 0
    assert w.launch() is None and "prune.levels" in w.status.value


def test_analyses_tab_runs_an_analysis_on_a_worker_and_shows_it(tmp_path):
    runs = tmp_path / "runs"
    s = engine.run(tiny(), runs_dir=runs)
    app = ExplorerApp(runs_dir=str(runs))
    analyses = app.open("Analyses")
    assert analyses.run_id == s["run_id"]
    analyses.form("instability")["rewind_points"].value = "0,5"  # widgets generated from its options
    for name in ("persistence", "sanity", "earlybird-replay", "instability"):
        analyses.choice.value = name
        analyses.start()
        wait_until(lambda: app.tick() or analyses.job is None, what=f"{name} ends")
        assert "done" in analyses.status.object, analyses.status.object
    panes = analyses.panes
    assert isinstance(panes["np_levels"].object, hv.Overlay)
    assert isinstance(panes["diagram"].object, hv.Layout)  # one diagram per layer
    assert len(panes["diagram"].object) == 3
    assert isinstance(panes["sanity"].object, hv.Bars)
    for pane in panes.values():
        _render(pane.object)
    # a damaged file: the tab still draws the others and says which one to compute again
    [sanity] = (runs / s["run_id"] / "analyses").glob("sanity*.json")
    sanity.write_text("{")
    analyses.show(s["run_id"], analyses.level, analyses.layer, force=True)
    assert f"unreadable, compute again: {sanity.stem}" in analyses.status.object
    assert not isinstance(panes["sanity"].object, hv.Bars) and isinstance(panes["np_levels"].object, hv.Overlay)


class ToyView(pn.viewable.Viewer):
    """A tab registered from the test (one Tab line): records what the app asks of it."""
    built = []

    def __init__(self, app):
        super().__init__()
        self.app, self.calls = app, []
        ToyView.built.append(self)
        self.pane = pn.pane.Markdown("toy")

    def refresh(self):
        self.calls.append(("refresh", self.app.choice.run.value))

    def poll(self):
        self.calls.append("poll")
        return False

    def stop(self):
        self.calls.append("stop")

    def __panel__(self):
        return self.pane


def test_a_new_tab_is_one_line_and_is_built_on_its_first_visit(tmp_path, monkeypatch):
    from explorer import tabs
    runs = tmp_path / "runs"
    engine.run(tiny(), runs_dir=runs)
    monkeypatch.setattr(tabs, "TABS", [*tabs.TABS, tabs.Tab("Toy", "test_app:ToyView")])
    ToyView.built.clear()
    app = ExplorerApp(runs_dir=str(runs))
    assert app.tab_column("Toy").objects == [] and not ToyView.built  # not built before its first visit
    app.tick()
    view = app.open("Toy")
    assert ToyView.built == [view] and view.pane in app.tab_column("Toy").objects
    assert view.calls == [("refresh", tiny().run_id)]
    app.tick()
    assert view.calls[-1] == "poll"
    app.open("Live")
    app.refresh_views()  # the store changed while the tab is hidden: redrawn when shown again, not before
    assert view.calls.count(("refresh", tiny().run_id)) == 1
    app.open("Toy")
    assert view.calls.count(("refresh", tiny().run_id)) == 2 and ToyView.built == [view]
    app.stop()
    assert view.calls[-1] == "stop"


def test_a_tab_that_fails_to_open_says_so_and_the_app_keeps_working(tmp_path, monkeypatch, capsys):
    from explorer import tabs
    monkeypatch.setattr(tabs, "TABS", [*tabs.TABS, tabs.Tab("Broken", "explorer.no_such_module:View")])
    app = ExplorerApp(runs_dir=str(tmp_path / "runs"))
    assert app.open("Broken") is None
    assert "Broken tab failed to open" in app.tab_column("Broken")[0].object and "no_such_module" in \
        app.tab_column("Broken")[0].object
    assert "Traceback" in capsys.readouterr().err  # the server's log says where
    assert app.open("Accuracy") is not None


def test_another_methods_option_on_the_form_is_hidden_and_does_not_change_the_run(app):
    """Like `lottery run`, which refuses `--method imp --synflow-rounds 5`: the form shows a method's own
    options only while that method is chosen, and a run of another method has the same config (and id) however
    they are set."""
    launcher = app.launcher
    default_id = launcher.config().run_id
    launcher.set_values(**{"prune.synflow_rounds": 5})
    assert launcher.widgets["prune.method"].value == "imp" and launcher.config().run_id == default_id
    launcher.more.collapsed = False  # "More settings" opened: only imp's own options among the methods'
    assert not launcher.widgets["prune.synflow_rounds"].visible
    launcher.set_values(**{"prune.method": "synflow"})
    assert launcher.widgets["prune.synflow_rounds"].visible
    assert launcher.config().prune.method == "synflow" and launcher.config().run_id != default_id
    assert launcher.config().prune.synflow_rounds == 5


def test_the_ipywidgets_launcher_shows_and_sends_only_the_chosen_methods_options(tmp_path):
    from explorer.widgets import launcher
    w = launcher(runs_dir=str(tmp_path / "runs"))
    w.fields["prune.synflow_rounds"].value = 5  # an option of synflow (and the other pruning-at-init methods)
    assert w.fields["prune.method"].value == "imp" and w.fields["prune.synflow_rounds"].layout.display == "none"
    assert w._applies("train.epochs") and not w._applies("prune.synflow_rounds")
    w.fields["prune.method"].value = "synflow"
    assert w.fields["prune.synflow_rounds"].layout.display is None and w._applies("prune.synflow_rounds")


def test_setup_notebook_loads_once_per_cell(monkeypatch):
    """Importing explorer.plots in a kernel loads the JS (setup_notebook), and the notebook's first cell then
    calls setup_notebook() itself: the ~3 MB went into that cell's output twice. Once per cell run now."""
    from explorer import offline

    loads, cell = [], [7]
    monkeypatch.setattr(offline, "_notebook_ready", None)
    monkeypatch.setattr(offline, "_execution_count", lambda: cell[0])
    monkeypatch.setattr(offline.pn, "extension", lambda *ext, **kw: loads.append(ext))
    monkeypatch.setattr(hv, "extension", lambda *a, **kw: None)
    monkeypatch.setattr(hv.Store, "set_display_hook", lambda *a, **kw: None)
    offline.setup_notebook()
    offline.setup_notebook()  # the same cell: nothing sent again
    offline.setup_notebook("tabulator")  # an extension not loaded yet: loaded
    offline.setup_notebook("tabulator")
    assert loads == [(), ("tabulator",)]
    cell[0] = 8  # the cell run again (the page may have been reloaded without its output): loaded again
    offline.setup_notebook()
    assert loads == [(), ("tabulator",), ()]
    cell[0] = 9  # a view imported in a later cell: nothing more (load_bokeh, when explorer.plots is imported)
    monkeypatch.setattr(offline, "_in_notebook", lambda: True)
    offline.load_bokeh()
    assert loads == [(), ("tabulator",), ()]


def test_a_setting_the_chosen_model_or_data_never_reads_is_hidden_on_the_launch_panel(app):
    """--hidden is the mlp's, --max-length a text data set's: shown only while the chosen model/data reads it
    (they were hidden from the config but still shown, so a user typed into boxes that did nothing)."""
    launcher = app.launcher
    launcher.more.collapsed = False
    assert launcher.widgets["model.model"].value == "lenet300"
    assert not launcher.widgets["model.hidden"].visible and not launcher.widgets["data.max_length"].visible
    launcher.set_values(**{"model.model": "mlp"})
    assert launcher.widgets["model.hidden"].visible and launcher.widgets["model.width"].visible
    launcher.set_values(**{"model.model": "bert-tiny", "data.dataset": "pydoc-topics"})
    assert not launcher.widgets["model.width"].visible and launcher.widgets["data.max_length"].visible
