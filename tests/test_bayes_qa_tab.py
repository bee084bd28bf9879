"""New-user QA of the Bayesian tab (explorer/bayes.py): what a researcher comparing bayes-imp runs sees."""
from __future__ import annotations

import holoviews as hv
import pytest

import engine
from conftest import tiny

CRITERIA = ("mu", "sigma", "snr", "mu-then-sigma", "random", "transplant")


def _record(shift: float, det_run: str = "imp-det") -> dict:
    """An uncertainty record of three levels with reinit and random controls and the deterministic ticket."""
    def measured(acc):
        return {"accuracy": acc, "nll": 1 - acc, "ece": acc / 10,
                "reliability": {"bins": 2, "accuracy": [0.5, acc], "confidence": [0.4, 0.8], "count": [3, 7]}}

    levels = []
    for level, density in enumerate((1.0, 0.8, 0.64)):
        variants = {"ticket": measured(0.9 - shift - level / 100)}
        if level:
            variants.update(reinit=measured(0.8 - level / 100), random=measured(0.7 - level / 100))
        levels.append({"level": level, "density": density, "variants": variants,
                       "deterministic": {**measured(0.95 - level / 100), "run_id": det_run}})
    return {"bayesian": True, "mc_samples": 16, "levels": levels}


def _legend(plot: hv.Element) -> tuple[list[str], object]:
    """The legend's entries of `plot` as Bokeh draws it, and the figure."""
    fig = hv.render(plot, backend="bokeh")
    return [item.label["value"] for legend in fig.legend for item in legend.items], fig


def test_several_runs_get_a_legend_naming_each_run_and_one_deterministic_ticket():
    """Six bayes-imp runs (one per criterion, what README and notebook 08 suggest) drew 24 curves with no legend at
    all (HoloViews drops a legend past 25 glyphs), each run in colours of its own per variant: nothing said which
    curve was which criterion. The deterministic ticket they share was drawn six times. Now each run has one colour
    (its variants a dash each), the legend names the runs by what sets them apart, and the deterministic ticket is
    one curve."""
    from explorer.bayes import metric_plot

    results = {f"run-{c}": _record(i / 100) for i, c in enumerate(CRITERIA)}
    names = {f"run-{c}": f"bayes-imp lenet300 digits (bayes_criterion={c})" for c in CRITERIA}
    labels, fig = _legend(metric_plot(results, "nll", names))
    assert labels.count("deterministic ticket") == 1, labels
    for run, name in names.items():
        assert {f"ticket · {name}", f"reinit · {name}", f"random · {name}"} <= set(labels), (name, labels)
        assert not any(run in label for label in labels)
    assert len(labels) == 3 * len(CRITERIA) + 1
    # a run's ticket and controls in one colour, told apart by their dash
    lines = {r.name: r.glyph for r in fig.renderers if type(r.glyph).__name__ == "Line"}
    colors = {label: {g.line_color for item in legend.items if item.label["value"] == label
                      for r in item.renderers if type(r.glyph).__name__ == "Line" for g in [r.glyph]}
              for legend in fig.legend for label in labels}
    assert lines and colors[f"ticket · {names['run-snr']}"] == colors[f"reinit · {names['run-snr']}"]
    assert colors[f"ticket · {names['run-snr']}"] != colors[f"ticket · {names['run-mu']}"]


def test_deterministic_tickets_of_different_settings_are_each_drawn_and_named():
    from explorer.bayes import metric_plot

    results = {"a": _record(0, "imp-a"), "b": _record(0.01, "imp-b")}
    labels, _ = _legend(metric_plot(results, "accuracy", {"a": "epochs=2", "b": "epochs=3"}))
    assert {"deterministic ticket · epochs=2", "deterministic ticket · epochs=3"} <= set(labels), labels


def test_one_run_keeps_its_variant_names():
    from explorer.bayes import metric_plot

    labels, _ = _legend(metric_plot({"bayes-imp-lenet300-digits-0123456789": _record(0)}, "ece"))
    assert sorted(labels) == ["deterministic ticket", "random", "reinit", "ticket"]


@pytest.fixture(scope="module")
def two_criteria(tmp_path_factory):
    """A store of two tiny bayes-imp runs, by |mu| and by SNR (they share one deterministic run)."""
    runs = tmp_path_factory.mktemp("bayes_qa_tab") / "runs"
    ids = {}
    for criterion in ("mu", "snr"):
        cfg = tiny(**{"model.bayesian": True, "model.mc_samples": 2, "prune.method": "bayes-imp",
                      "prune.levels": 1, "train.epochs": 1, "prune.controls": (), "prune.bayes_criterion": criterion})
        engine.run(cfg, runs_dir=runs)
        ids[criterion] = cfg.run_id
    return runs, ids


def test_the_tab_names_runs_by_their_criterion_not_their_id(two_criteria):
    from explorer.bayes import BayesPanel

    runs, ids = two_criteria
    panel = BayesPanel(str(runs))
    labels, _ = _legend(panel.panes["metric"].object)
    assert any("bayes_criterion=snr" in label for label in labels), labels
    assert not any(run_id in label for run_id in ids.values() for label in labels), labels
    assert labels.count("deterministic ticket") == 1, labels


def test_the_run_select_names_each_run_as_the_legend_does(two_criteria):
    """The run select (which run's reliability diagram and sigma maps to draw) listed bare ids: with one run per
    criterion nothing said which id was the SNR run the legend named. Its entries now carry the legend's names."""
    from explorer.bayes import BayesPanel

    runs, ids = two_criteria
    panel = BayesPanel(str(runs))
    options = panel.run.options
    assert isinstance(options, dict) and sorted(options.values()) == sorted(ids.values()), options
    [snr] = [label for label, run_id in options.items() if run_id == ids["snr"]]
    assert snr.startswith(panel.names[ids["snr"]]) and "bayes_criterion=snr" in snr and ids["snr"] in snr, snr
    panel.run.value = ids["snr"]
    assert panel.level.options == [0, 1]


def test_the_shared_deterministic_ticket_is_one_curve_when_a_run_has_fewer_levels():
    """A run stopped at level 1 listed first (newest) beside a finished run of another criterion: the deterministic
    ticket they share was drawn as two pieces, levels 0-1 under one run and level 2 under the other, with no line
    between them."""
    from explorer.bayes import DETERMINISTIC, metric_plot

    stopped = _record(0.01)
    stopped["levels"] = stopped["levels"][:2]
    plot = metric_plot({"run-snr": stopped, "run-mu": _record(0)}, "accuracy", {"run-snr": "snr", "run-mu": "mu"})
    curves = [e for e in plot if isinstance(e, hv.Curve) and e.label == DETERMINISTIC]
    assert len(curves) == 1 and len(curves[0]) == 3, [(c.label, len(c)) for c in curves]


def test_hovering_a_point_of_several_runs_says_which_run_it_is():
    """The hover of a point said density, the metric and the level: with several runs' curves crossing, not whose
    point it was. It now says the legend's entry too."""
    from explorer.bayes import metric_plot

    plot = metric_plot({"run-a": _record(0), "run-b": _record(0.01)}, "ece", {"run-a": "snr", "run-b": "mu"})
    for e in plot:
        assert set(e.dimension_values("curve")) == {e.label}, (e.label, e.dimensions())
