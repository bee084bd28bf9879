"""`lottery analyze` and `lottery show` with stored analyses; the `earlybird` method."""
import json

import pytest

import engine
from engine.cli import main

from conftest import tiny


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    runs = tmp_path_factory.mktemp("analyze") / "runs"
    s = engine.run(tiny(**{"train.epochs": 3}), runs_dir=runs)
    return str(runs), s["run_id"]


@pytest.mark.parametrize("analysis,extra,key", [
    ("barrier", [], "error_barrier"),
    ("instability", ["--rewind-points", "0,5", "--points", "5"], "barriers"),
    ("persistence", [], "levels"),
    ("earlybird-replay", ["--density", "0.3"], "distance_matrix"),
    ("sanity", ["--level", "2"], "rows"),
])
def test_each_analysis_runs_stores_and_shows(stored, capsys, analysis, extra, key):
    runs, run_id = stored
    assert main(["analyze", run_id, analysis, "--runs-dir", runs, "--json", *extra]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"] == analysis and key in result
    assert main(["show", run_id, "--runs-dir", runs, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["analyses"]
    assert any(v["analysis"] == analysis for v in shown.values())
    assert main(["show", run_id, "--runs-dir", runs]) == 0
    assert analysis in capsys.readouterr().out


def test_bad_analysis_arguments_are_one_line_errors(stored, capsys):
    runs, run_id = stored
    assert main(["analyze", run_id, "instability", "--rewind-points", "0,99999", "--runs-dir", runs]) == 2
    assert capsys.readouterr().err.startswith("error: --rewind-points:")  # the flag typed
    assert main(["analyze", run_id, "barrier", "--level", "7", "--runs-dir", runs]) == 2
    assert "completed ticket levels" in capsys.readouterr().err
    assert main(["analyze", "nope", "persistence", "--runs-dir", runs]) == 2


def test_earlybird_method_draws_the_ticket_at_detection(tmp_path):
    runs = tmp_path / "runs"
    s = engine.run(tiny(**{"prune.method": "earlybird", "prune.density": 0.2, "train.epochs": 8}), runs_dir=runs)
    assert len(s["levels"]) == 1 and s["controls"]["reinit"]
    layers = s["levels"][0]["layers"]
    assert layers["hidden.0.weight"] == pytest.approx(0.2, abs=1e-4)
    search = json.loads((runs / s["run_id"] / "analyses" / "earlybird.json").read_text())
    assert search["detected"] and search["detected_epoch"] >= 4  # a full window of 5 masks first
    assert search["epochs"][-1] == search["detected_epoch"]  # the search stopped at detection
