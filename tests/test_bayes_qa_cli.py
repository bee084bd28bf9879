"""New-user QA of Bayesian runs on the command line (lottery list, show, run's bad input)."""
from __future__ import annotations

import pytest

from engine.cli import main


def _stored(runs, run_id, **summary):
    from engine.store import write_json

    write_json(runs / run_id / "config.json", {})
    write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp", "seed": 0,
                                                "config": {}, "dense": None, "levels": [], "controls": {}, **summary})


def test_list_tells_a_bayesian_run_from_a_deterministic_one(tmp_path, capsys):
    """`lottery compare --methods bayes-imp,imp --bayesian` stores imp on the Bayesian net beside the deterministic
    imp runs bayes-imp compares against: same method, seed and levels, listed alike but for the id hash."""
    runs = tmp_path / "runs"
    _stored(runs, "imp-lenet300-digits-000000000a", config={"model": {"bayesian": True}})
    _stored(runs, "imp-lenet300-digits-000000000b")
    assert main(["list", "--runs-dir", str(runs)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert " bayesian " in lines["imp-lenet300-digits-000000000a"], lines
    assert " deterministic " in lines["imp-lenet300-digits-000000000b"], lines
    assert len({line.index("no level yet") for line in lines.values()}) == 1, lines  # the columns line up
    alike = tmp_path / "alike"
    for run_id in ("imp-lenet300-digits-000000000a", "imp-lenet300-digits-000000000b"):
        _stored(alike, run_id)
    assert main(["list", "--runs-dir", str(alike)]) == 0
    out = capsys.readouterr().out
    assert "deterministic" not in out and "bayesian" not in out, out  # nothing to tell apart: the table stays narrow


@pytest.mark.parametrize("flags", [["--prior-sigma", "0"], ["--sigma-init", "nan"], ["--rho-lr", "-1"],
                                   ["--kl-warmup", "1.5"], ["--mc-samples", "0"], ["--bayes-criterion", "MU"],
                                   ["--bayes-transplant", "--bayes-criterion", "snr"],
                                   ["--bayes-transplant", "--no-bayes-deterministic"]])
def test_bad_bayesian_values_are_one_line_errors_naming_the_setting_and_store_nothing(tmp_path, capsys, flags):
    runs = tmp_path / "runs"
    code = main(["run", "--method", "bayes-imp", "--bayesian", "--epochs", "1", "--levels", "1", "--quiet",
                 "--runs-dir", str(runs), *flags])
    err = capsys.readouterr().err.strip()
    setting = flags[0].lstrip("-").replace("-", "_")
    assert code == 2 and len(err.splitlines()) == 1 and setting in err and "not valid" in err, err
    assert not runs.exists() or not any(runs.iterdir())
