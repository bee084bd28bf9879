"""`lottery compare`: every method at the same densities, reusing stored runs."""
import json

import pytest

from engine import events as ev
from engine.cli import main
from engine.compare import compare

from conftest import tiny


def test_compare_tabulates_methods_and_reuses_runs(tmp_path):
    base = tiny(**{"prune.controls": ("reinit",)})
    result = compare(base, ["imp", "snip", "oneshot"], [0.5, 0.3], 2, runs_dir=tmp_path)
    rows = {(r["method"], r["target_density"]): r for r in result["rows"]}
    assert set(rows) == {(m, d) for m in ("imp", "snip", "oneshot") for d in (0.5, 0.3)}
    assert rows[("snip", 0.3)]["density"] == pytest.approx(0.3, abs=1e-4)  # pruning at init hits it exactly
    assert abs(rows[("imp", 0.3)]["density"] - 0.3) < 0.05  # IMP: the nearest level
    assert rows[("imp", 0.3)]["search_steps"] > rows[("imp", 0.5)]["search_steps"] > 0
    assert rows[("snip", 0.3)]["search_steps"] == 0
    for r in rows.values():
        assert r["seeds"] == 2 and r["test_accuracy_std"] >= 0 and "reinit" in r["control_deltas"]
    trained = []
    again = compare(base, ["imp", "snip", "oneshot"], [0.5, 0.3], 2, runs_dir=tmp_path,
                    on_event=lambda e: trained.append(e) if isinstance(e, ev.TrainingStarted) else None)
    assert not trained and again["rows"] == result["rows"]


def test_compare_cli_and_bad_input(tmp_path, capsys):
    args = ["compare", "--methods", "snip,random", "--densities", "0.2", "--seeds", "1", "--epochs", "1",
            "--controls", "none", "--runs-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in out["rows"]} == {"snip", "random"}
    assert main(["compare", "--methods", "magic", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--methods: 'magic' is not valid" in err
    assert main(["compare", "--densities", "0.2,1.5", "--runs-dir", str(tmp_path)]) == 2
    assert main(["compare", "--methods", "imp", "--scope", "bogus", "--runs-dir", str(tmp_path)]) == 2
    assert "prune.scope: 'bogus'" in capsys.readouterr().err


def test_erk_applies_to_the_methods_that_allow_it(tmp_path, capsys):
    args = ["compare", "--methods", "imp,snip", "--densities", "0.5", "--seeds", "1", "--epochs", "1",
            "--controls", "none", "--scope", "erk", "--runs-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"imp", "snip"}
