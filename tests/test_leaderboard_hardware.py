"""The Leaderboard and Hardware tabs without a browser: work on a background job, results into the plots."""
import holoviews as hv
import pytest

from explorer.hardware import HardwarePanel, speedup_plot
from explorer.leaderboard import LeaderboardPanel, accuracy_bands, cost_vs_accuracy

from conftest import tiny, wait_until


def wait(panel, timeout=120):
    wait_until(lambda: panel.poll() or panel.job is None, timeout, what=f"{type(panel).__name__}'s job ends")


def test_leaderboard_compares_on_a_worker_and_plots_bands_and_costs(runs_dir):
    panel = LeaderboardPanel(runs_dir, base_config=lambda: tiny(**{"train.epochs": 1, "prune.search_epochs": 1}))
    panel.methods.value = ["imp", "snip", "edgepopup"]
    panel.densities.value = "0.5,0.2"
    panel.seeds.value = 1  # the default (CompareOptions: 3) would train three times as much
    panel.start()
    wait(panel)
    assert panel.status.object.startswith("done")
    rows = panel.result["rows"]
    assert {(r["method"], r["target_density"]) for r in rows} == {(m, d) for m in ("imp", "snip", "edgepopup")
                                                                  for d in (0.5, 0.2)}
    plot = panel.accuracy.object
    assert isinstance(plot, hv.Overlay)
    spreads = [e for e in plot if isinstance(e, hv.Spread)]
    assert sorted(s.label for s in spreads) == ["edgepopup", "imp", "snip"]
    costs = {e.label: e.dframe() for e in panel.cost.object if isinstance(e, hv.Scatter)}
    assert (costs["snip"]["search steps"] == 0).all() and (costs["imp"]["search steps"] > 0).all()
    assert "leaderboard:" in panel.table.object


@pytest.mark.parametrize("densities,allowed", [("0.5,abc", "comma-separated"), ("1.5", "(0, 1)")])
def test_leaderboard_bad_densities_say_what_is_allowed(runs_dir, densities, allowed):
    panel = LeaderboardPanel(runs_dir, base_config=lambda: tiny())
    panel.densities.value = densities
    panel.start()
    assert panel.job is None  # refused before any work
    assert "densities" in panel.status.object and allowed in panel.status.object


def test_plots_of_an_empty_leaderboard_say_how_to_fill_it():
    assert isinstance(accuracy_bands(None), hv.Overlay)
    assert isinstance(cost_vs_accuracy({"rows": []}), hv.Overlay)


def test_hardware_probe_streams_rows_and_names_unavailable_patterns(runs_dir):
    panel = HardwarePanel(runs_dir)
    panel.layer.value, panel.batches.value, panel.sparsities.value = "64x64", "1,8", "0.5"
    panel.start()
    seen = set()
    wait_until(lambda: seen.add(len(panel.rows)) or panel.poll() or panel.job is None, interval=0.01)
    assert len(seen) > 2  # rows streamed in as they were measured, not all at the end
    assert panel.status.object.startswith("done") and "cpu" in panel.status.object
    assert len(panel.rows) == 2 * 5  # dense, masked, csr, channel, 2:4 per batch
    assert "2:4" in panel.unavailable.object  # no CUDA here: said, not measured
    assert all(r["speedup"] for r in panel.rows if r["available"])
    plot = speedup_plot({"rows": panel.rows, "device": "cpu test"})
    assert "cpu test" in plot.opts.get().kwargs["title"]
    scatters = {e.label: len(e) for e in plot if isinstance(e, hv.Scatter)}
    assert scatters["masked"] == scatters["csr"] == scatters["channel"] == 2 and scatters["2:4"] == 0
    panel.patterns.value = ["channel"]  # the pattern filter redraws from the rows already measured
    shown = {e.label: len(e) for e in speedup_plot(panel.pipe.data) if isinstance(e, hv.Scatter)}
    assert shown["channel"] == 2 and shown["csr"] == shown["masked"] == 0


def test_hardware_probe_of_a_stored_run_and_bad_input(runs_dir):
    import engine
    engine.run(tiny(**{"prune.method": "oneshot", "prune.pattern": "channel", "prune.density": 0.5}), runs_dir=runs_dir)
    panel = HardwarePanel(runs_dir)
    assert len(panel.run.options) == 1
    panel.source.value, panel.run.value, panel.batches.value = "run", panel.run.options[0], "4"
    panel.start()
    wait(panel)
    assert "level 1" in panel.status.object
    channel = next(r for r in panel.rows if r["pattern"] == "channel")
    assert channel["available"] and channel["theoretical_speedup"] > 1
    panel.source.value, panel.layer.value = "layer", "64by64"
    panel.start()
    assert "INxOUT" in panel.status.object and panel.job is None


def test_leaderboard_shows_progress_and_cancel_stops_it(runs_dir):
    panel = LeaderboardPanel(runs_dir, base_config=lambda: tiny(**{"train.epochs": 30}))
    panel.methods.value, panel.densities.value, panel.seeds.value = ["imp"], "0.3", 1
    panel.start()
    wait_until(lambda: panel.poll() or "trainings done" in panel.status.object, 60)
    panel.stop_button.clicks += 1  # the Cancel button
    wait(panel)
    assert "cancelled" in panel.status.object


def test_leaderboard_refuses_an_empty_seed_count(runs_dir):
    panel = LeaderboardPanel(runs_dir, base_config=lambda: tiny())
    panel.seeds.value = None
    panel.start()
    assert panel.job is None and "seeds" in panel.status.object


def test_the_speedup_plots_axes_follow_the_rows_streamed_in():
    """The plot's ranges stayed those of its first frame (up to 2.4x): the rows of a 90% sparsity (10x theoretical)
    arrived later in the same probe and were drawn off the plot. Its legend, inside at the top left, then hid the
    masked rows (1x theoretical): it is beside the plot."""
    from bokeh.models import Legend

    pipe = hv.streams.Pipe(data={"rows": [], "device": "cpu"})
    plot = hv.renderer("bokeh").get_plot(hv.DynamicMap(speedup_plot, streams=[pipe]))

    def row(theoretical, measured):
        return {"pattern": "csr", "available": True, "theoretical_speedup": theoretical, "speedup": measured,
                "sparsity": 1 - 1 / theoretical, "batch": 1, "dtype": "float32", "median_ms": 1.0}

    pipe.send({"rows": [row(2.0, 0.5)], "device": "cpu"})
    pipe.send({"rows": [row(2.0, 0.5), row(10.0, 0.4)], "device": "cpu"})
    assert plot.handles["x_range"].end > 10 and plot.handles["y_range"].end > 10
    assert any(isinstance(m, Legend) for m in plot.state.right) and not any(isinstance(m, Legend)
                                                                            for m in plot.state.center)
