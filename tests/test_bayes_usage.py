"""Bayesian runs used as a user would (the CLI, analyses, other methods with --bayesian): what went wrong once."""
import pytest
import torch

import engine
from engine.analysis import analyze
from engine.methods import bayes_imp
from engine.store import RunStore

from conftest import assert_progress_reaches_total, tiny


def _bayes_cfg(**changes):
    base = {"model.bayesian": True, "model.mc_samples": 2, "prune.method": "bayes-imp", "prune.levels": 1,
            "train.epochs": 1, "train.batch_size": 128, "prune.controls": ()}
    return tiny(**{**base, **changes})


def test_reanalysing_a_bayes_imp_run_keeps_its_deterministic_comparison(runs_dir):
    # `lottery analyze RUN_ID uncertainty` on a bayes-imp run used to overwrite the stored analysis without the
    # deterministic ticket's column (and the criterion): `lottery show` and the Bayesian tab lost it
    cfg = _bayes_cfg(**{"prune.bayes_criterion": "snr"})
    engine.run(cfg, runs_dir=runs_dir)
    stored = RunStore(runs_dir, cfg.run_id).analyses()["uncertainty"]
    again = analyze("uncertainty", runs_dir, cfg.run_id)
    assert again["criterion"] == "snr" and again["deterministic_run"] == stored["deterministic_run"]
    # one record, written as the run goes or by the analysis (bayes_imp._record)
    assert {k: v for k, v in again.items() if k != "levels"} == {k: v for k, v in stored.items() if k != "levels"}
    for before, after in zip(stored["levels"], again["levels"], strict=True):
        for key in ("accuracy", "nll", "ece"):
            assert after["deterministic"][key] == pytest.approx(before["deterministic"][key])
            assert after["variants"]["ticket"][key] == pytest.approx(before["variants"]["ticket"][key])
    assert "deterministic ticket" in bayes_imp.format_uncertainty("uncertainty", again)
    # a run made without the comparison does not gain one from a deterministic run stored beside it
    alone = _bayes_cfg(**{"prune.bayes_criterion": "snr", "prune.bayes_deterministic": False})
    engine.run(alone, runs_dir=runs_dir)
    again = analyze("uncertainty", runs_dir, alone.run_id)
    assert again["deterministic_run"] is None and not any("deterministic" in e for e in again["levels"])


def test_grasp_on_a_bayesian_net_trains_or_says_why_not(runs_dir):
    # `lottery run --bayesian --method grasp` printed "error: unexpected RuntimeError: A view was created in no_grad
    # mode ..." and left a failed run: either GraSP scores the means or the combination is a ConfigError up front
    cfg = tiny(**{"model.bayesian": True, "model.mc_samples": 2, "prune.method": "grasp", "prune.density": 0.2,
                  "train.epochs": 1, "train.batch_size": 128, "prune.controls": ()})
    try:
        summary = engine.run(cfg, runs_dir=runs_dir)
    except engine.ConfigError as e:
        assert "bayesian" in str(e) and not (runs_dir / cfg.run_id).exists()
    else:
        assert summary["status"] == "completed"


@pytest.mark.parametrize("change", [{"prune.bayes_criterion": "sigma"}, {"prune.bayes_deterministic": False}])
def test_transplant_refuses_settings_it_would_ignore(change):
    # --bayes-transplant with --bayes-criterion sigma (or --no-bayes-deterministic) trained exactly the transplant
    # run under another run id: the setting was silently ignored
    with pytest.raises(engine.ConfigError, match="bayes_transplant"):
        _bayes_cfg(**{"prune.bayes_transplant": True, **change})


def test_progress_counts_the_deterministic_comparison(runs_dir):
    # the deterministic IMP run bayes-imp trains first was silent: `lottery run` sat at 0% (the app too) for as
    # long as it trained; now its trainings show as variant "deterministic" and count in the total
    def check(cfg):
        events = []
        engine.run(cfg, runs_dir=runs_dir, on_event=events.append)
        assert_progress_reaches_total(events)
        return {e.variant for e in events if type(e).__name__ in ("TrainingStarted", "LevelDone")}

    assert "deterministic" in check(_bayes_cfg())
    assert "deterministic" in check(_bayes_cfg(**{"prune.bayes_criterion": "snr"}))  # reused: counted as done


def _level_one_mask(runs_dir, cfg):
    return RunStore(runs_dir, cfg.run_id).load_level("ticket", 1, "cpu")[0]


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_pruning_at_init_scores_a_bayesian_nets_means(tmp_path, method):
    # `lottery run --bayesian --method snip` stored a different mask at every run of one command (its scoring pass
    # drew weight noise from torch's global generator); synflow's |theta| net took |rho| too, a sigma of ~7 per
    # weight, and kept noise: tickets at 20% accuracy where deterministic synflow reached 60%. Both score the
    # means: the mask of the deterministic net of the same seed, whatever torch's global generator holds.
    changes = {"prune.method": method, "prune.density": 0.1, "train.epochs": 1, "train.batch_size": 256,
               "prune.controls": (), **({"prune.synflow_rounds": 5} if method == "synflow" else {})}
    deterministic = tiny(**changes)
    bayesian = tiny(**changes, **{"model.bayesian": True, "model.mc_samples": 2})
    engine.run(deterministic, runs_dir=tmp_path / "d")
    masks = []
    for i in range(2):
        torch.manual_seed(i)  # (what a fresh process's global generator, or an earlier run in this one, leaves)
        engine.run(bayesian, runs_dir=tmp_path / f"b{i}")
        masks.append(_level_one_mask(tmp_path / f"b{i}", bayesian))
    expected = _level_one_mask(tmp_path / "d", deterministic)
    for mask in masks:
        assert mask.keys() == expected.keys()
        assert all(torch.equal(mask[n], expected[n]) for n in expected)
