"""The Analyses tab draws the barrier analysis it offers: `barrier` was in its list of analyses and Analyze stored
it ('barrier done and stored with the run'), but no plot read `barrier-L*.json`, so nothing changed on the page
and `lottery show`'s error barrier could be seen nowhere in the app."""
import holoviews as hv
import pytest

from engine import analysis

from conftest import stored_by_cli


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """An IMP run with late rewinding, 2 levels, and its barriers: level 2 against both controls (one re-basined),
    level 1 against reinit."""
    runs, run_id = stored_by_cli(tmp_path_factory.mktemp("barrier_tab"), "run", "--method", "imp", "--rewind",
                                 "iter:5", "--epochs", "1", "--levels", "2", "--quiet")
    results = {(r["level"], r["b"]): r for r in (
        analysis.analyze("barrier", runs, run_id, level=2, against="reinit", points=5, rebasin=True),
        analysis.analyze("barrier", runs, run_id, level=2, against="random", points=5),
        analysis.analyze("barrier", runs, run_id, level=1, against="reinit", points=5))}
    return runs, run_id, results


def _curves(element) -> dict[str, list]:
    """{label: [test error (%) at each alpha]} of the curves in a plot."""
    return {c.label: list(c.dimension_values(1)) for c in element.traverse(lambda e: e, [hv.Curve])}


def test_the_analyses_tab_draws_the_barriers_of_the_chosen_level(stored):
    from explorer.analyses import AnalysisPanel

    runs, run_id, results = stored
    panel = AnalysisPanel(runs)
    panel.show(run_id, 2)
    curves = _curves(panel.panes["barrier"].object)
    for against in ("reinit", "random"):  # the stored numbers, in percent, one curve per partner
        assert curves[f"ticket vs {against}"] == pytest.approx([100 * p["error"] for p in results[2, against]["curve"]])
    assert curves["ticket vs reinit, re-basined"] == pytest.approx(
        [100 * p["error"] for p in results[2, "reinit"]["matched_curve"]])
    title = panel.panes["barrier"].object.opts.get().kwargs["title"]
    assert "level 2" in title and f"vs random {100 * results[2, 'random']['error_barrier']:.2f}%" in title, title
    assert f"(re-basined {100 * results[2, 'reinit']['matched_error_barrier']:.2f}%)" in title, title

    panel.show(run_id, 1)  # another level: its own barrier only
    assert set(_curves(panel.panes["barrier"].object)) == {"ticket vs reinit"}


def test_a_run_without_a_barrier_says_how_to_make_one():
    from explorer import analysis_plots as ap

    texts = [t.text for t in ap.barrier([]).traverse(lambda e: e, [hv.Text])]
    assert texts and "Analyze → barrier" in texts[0].replace("\n", " "), texts
