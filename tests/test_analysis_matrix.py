"""Every analysis on every kind of stored run: each works or refuses in one line (exit 2) naming the run, the
analysis and why, and a refusal leaves nothing half-written in the run's folder."""
import re

import pytest
import torch

from engine import masks as M
from engine import models
from engine.analysis.earlybird_tracker import magnitude_rule
from engine.config import ModelConfig


def test_magnitude_rule_at_erk_scope_keeps_erk_layer_densities():
    # the earlybird-replay rule of a --scope erk run: the hidden layers at ERK densities (not one global pool),
    # the output layer at its own density
    model = models.build(ModelConfig(), (64,), 10, seed=0)
    mask = magnitude_rule(0.2, 0.5, "erk")(model)
    hidden = {n: m for n, m in M.ones(model).items() if n != "out.weight"}
    erk = M.erk_densities(hidden, 0.2)
    assert len(set(round(d, 3) for d in erk.values())) > 1  # ERK differs from uniform here: the test can fail
    for n, m in hidden.items():
        assert int(mask[n].sum()) == round(erk[n] * m.numel()), n
    assert int(mask["out.weight"].sum()) == round(0.5 * mask["out.weight"].numel())


def test_prune_to_density_refuses_an_unknown_scope():
    model = models.build(ModelConfig(), (64,), 10, seed=0)
    dense = M.ones(model)
    with pytest.raises(ValueError, match="scope"):
        M.prune_to_density(M.magnitude_scores(model, dense), dense, 0.2, 0.5, "erdos", "out.weight")


# ---------------------------------------------------------------- stored runs of several families, built once
SMALL = {"model.model": "mlp", "model.hidden": (32, 16), "train.epochs": 1, "prune.controls": ()}
FAMILIES = {
    "snip-erk": {"prune.method": "snip", "prune.scope": "erk", "prune.density": 0.3},
    "edgepopup": {"prune.method": "edgepopup", "prune.density": 0.5, "model.init": "signed_constant"},
    "imp-no-controls": {"prune.method": "imp", "prune.levels": 1},
    "snip-bayes": {"prune.method": "snip", "prune.density": 0.3, "model.bayesian": True, "model.mc_samples": 2,
                   "prune.controls": ("reinit",)},
}
# every analysis with options small enough for a one-epoch run (instability's default rewind points pass its end)
ANALYSES = {"uncertainty": [], "lota-tasks": [], "earlybird-replay": ["--density", "0.3"], "barrier": ["--points", "3"],
            "instability": ["--rewind-points", "0,5", "--points", "3"], "persistence": [], "sanity": []}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    import engine
    from conftest import tiny
    from engine.cli import main

    runs = tmp_path_factory.mktemp("matrix") / "runs"
    ids = {}
    for name, changes in FAMILIES.items():
        cfg = tiny(**{**SMALL, **changes})
        engine.run(cfg, runs_dir=runs)
        ids[name] = cfg.run_id
    assert main(["zoo", "--model", "mlp", "--hidden", "8", "--members", "2", "--epochs", "1", "--runs-dir",
                 str(runs), "--quiet"]) == 0
    [ids["zoo"]] = [p.name for p in runs.iterdir() if p.name.startswith("zoo-")]
    return runs, ids


def _files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_earlybird_replay_of_an_erk_run_tracks_erk_layer_densities(stored, capsys):
    import json

    from engine.cli import main

    runs, ids = stored
    assert main(["analyze", ids["snip-erk"], "earlybird-replay", "--density", "0.3", "--runs-dir", str(runs),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scope"] == "erk" and result["method"] == "snip"
    layers = result["layers"]
    hidden = {n: torch.ones(s, dtype=torch.bool) for n, s in [("hidden.0.weight", (32, 64)), ("hidden.1.weight", (16, 32))]}
    erk = M.erk_densities(hidden, 0.3)
    for n in hidden:
        assert layers[n] == pytest.approx(erk[n], abs=1e-3), n
    assert abs(layers["hidden.0.weight"] - layers["hidden.1.weight"]) > 0.05  # not one global pool's near-equal split


@pytest.mark.parametrize("family", list(FAMILIES) + ["zoo"])
@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_every_analysis_works_or_refuses_in_one_line_leaving_the_run_as_it_was(stored, capsys, family, analysis):
    import json

    from engine.cli import main

    runs, ids = stored
    run_id = ids[family]
    before = _files(runs / run_id)
    rc = main(["analyze", run_id, analysis, *ANALYSES[analysis], "--runs-dir", str(runs), "--json"])
    out, err = capsys.readouterr()
    if rc == 0:
        assert json.loads(out)["analysis"] == analysis
        return
    assert rc == 2, err  # a refusal of this run, not a bug's exit 1
    assert err.startswith("error: ") and err.count("\n") == 1 and run_id in err, err
    assert re.search(rf"\b{analysis}\b", err), err  # names the analysis ("zoo_barriers" does not name barrier)
    assert _files(runs / run_id) == before  # nothing half-written


def test_barrier_of_a_strong_ticket_says_it_is_never_trained_not_to_run_sanity(stored, capsys):
    from engine.cli import main

    runs, ids = stored
    assert main(["analyze", ids["edgepopup"], "barrier", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "never trained" in err and "sanity" not in err and err.count("\n") == 1, err


def test_instability_of_a_level_the_method_never_trains_as_a_mask_is_refused(stored, capsys):
    """`lottery analyze EDGEPOPUP_RUN instability --level 1` trained the supermask's frozen random weights from W_k
    and stored that as the ticket's instability."""
    from engine.cli import main

    runs, ids = stored
    before = _files(runs / ids["edgepopup"])
    assert main(["analyze", ids["edgepopup"], "instability", "--level", "1", "--rewind-points", "0,5", "--runs-dir",
                 str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --level: 1") and "instability" in err and err.count("\n") == 1, err
    assert _files(runs / ids["edgepopup"]) == before


def test_barrier_rebasin_of_a_bayesian_run_is_one_line_exit_2(stored, capsys):
    """Re-basin cannot permute a Bayesian layer's rho: exit 1 with a message naming neither the run nor the flag."""
    from engine.cli import main

    runs, ids = stored
    before = _files(runs / ids["snip-bayes"])
    assert main(["analyze", ids["snip-bayes"], "barrier", "--rebasin", "--points", "3", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --rebasin") and ids["snip-bayes"] in err and err.count("\n") == 1, err
    assert _files(runs / ids["snip-bayes"]) == before
