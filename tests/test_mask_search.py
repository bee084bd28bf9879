"""Mask searches: Continuous Sparsification, Concrete Ticket Search and the strong tickets (Edge-Popup,
biprop): exact binary tickets at the target density, frozen weights that never change, search costs."""
import json

import pytest
import torch

import engine
from engine import masks as M
from engine import trainer
from engine.compare import compare
from engine.methods.pai import target_counts
from engine.methods.strong import SupermaskSearch, initial_scores

from conftest import tiny


def stored(tmp_path, summary, variant="ticket", level=1):
    return engine.RunStore(tmp_path, summary["run_id"]).load_level(variant, level)


def search_record(tmp_path, summary) -> dict:
    return json.loads((engine.RunStore(tmp_path, summary["run_id"]).dir / "analyses" / "search.json").read_text())


def want_counts(cfg):
    return target_counts(M.ones(engine.models.build(cfg.model, (1, 8, 8), 10, 0)), cfg.prune.density, cfg.prune.scope)


def assert_exact(mask, want):
    if isinstance(want, int):
        assert M.kept(mask) == want
    else:
        assert {n: int(m.sum()) for n, m in mask.items()} == want


@pytest.mark.parametrize("method", ["cs", "cts"])
@pytest.mark.parametrize("scope", ["global", "layerwise", "erk"])
def test_cs_and_cts_give_binary_tickets_at_the_target_density(tmp_path, method, scope):
    cfg = tiny(**{"prune.method": method, "prune.scope": scope, "prune.density": 0.05, "prune.search_epochs": 2,
                  "prune.cs_rounds": 2, "train.epochs": 2})
    s = engine.run(cfg, runs_dir=tmp_path)
    mask, weights = stored(tmp_path, s)
    assert all(m.dtype == torch.bool for m in mask.values())
    assert_exact(mask, want_counts(cfg))
    for n, keep in mask.items():
        assert (weights[n][~keep] == 0).all()
    assert s["controls"]["reinit"][0]["layers"] == s["levels"][0]["layers"]
    record = search_record(tmp_path, s)
    per_epoch = trainer.steps_per_epoch(len(engine.data.load(cfg.data, torch.device("cpu")).train), cfg.train)
    epochs = cfg.prune.cs_rounds * cfg.train.epochs if method == "cs" else cfg.prune.search_epochs
    assert record["steps"] == epochs * per_epoch
    assert len(record["curve"]) == epochs


def test_cs_anneals_beta_to_200_each_round_and_records_its_own_density(tmp_path):
    cfg = tiny(**{"prune.method": "cs", "train.epochs": 3, "prune.cs_rounds": 2, "prune.cs_penalty": 1e-4})
    record = search_record(tmp_path, engine.run(cfg, runs_dir=tmp_path))
    betas = [round(p["beta"], 6) for p in record["curve"]]
    assert betas == [1.0, round(200 ** 0.5, 6), 200.0] * 2
    densities = [p["natural_density"] for p in record["curve"]]
    assert 0 < record["natural_density"] < 1
    assert densities[-1] < densities[0]  # the penalty and the rounds prune


def test_cts_balances_the_expected_density_towards_its_target(tmp_path):
    cfg = tiny(**{"prune.method": "cts", "prune.scope": "global", "prune.density": 0.1, "prune.search_epochs": 4})
    record = search_record(tmp_path, engine.run(cfg, runs_dir=tmp_path))
    assert record["balance"] is not None and record["balance"] > 0  # the sparsity term acted
    assert 0.05 < record["expected_density"] < 0.2


@pytest.mark.parametrize("method", ["edgepopup", "biprop"])
def test_strong_tickets_leave_the_weights_bit_identical(tmp_path, method):
    cfg = tiny(**{"prune.method": method, "prune.density": 0.3, "train.epochs": 2})
    s = engine.run(cfg, runs_dir=tmp_path)
    mask, weights = stored(tmp_path, s)
    init = engine.store.load_tensors(engine.RunStore(tmp_path, s["run_id"]).weights_path("init"))
    assert_exact(mask, want_counts(cfg))
    start = initial_scores(init, mask, cfg.seed)
    moved = sum(int((M.keep_top(start[n].abs(), torch.ones_like(m), int(m.sum())) != m).sum()) for n, m in mask.items())
    assert moved > 0  # the scores trained: the supermask is not the initial one
    for n, w in init.items():
        if n not in mask:
            assert torch.equal(weights[n], w)  # biases: frozen
        elif method == "edgepopup":
            assert torch.equal(weights[n], w * mask[n])
        else:
            alpha = (w.abs() * mask[n]).sum() / mask[n].sum()
            assert torch.allclose(weights[n], alpha * torch.sign(w) * mask[n], rtol=0, atol=1e-7)
            assert len(torch.unique(weights[n][mask[n]].abs())) <= 2  # binary: +-alpha (one float rounding)
    assert s["controls"] == {}


def test_a_supermask_search_refuses_weights_that_moved():
    model = engine.models.build(engine.ModelConfig(), (1, 8, 8), 10, 0)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    dense = M.ones(model)
    search = SupermaskSearch(initial_scores(weights, dense, 0), {n: 10 for n in dense}, binary=False)
    search.prepare(model)
    with torch.no_grad():
        model.hidden[0].parametrizations.weight.original[0, 0] += 1
    with pytest.raises(RuntimeError, match="hidden.0.weight changed"):
        search.finish(model)


def test_frozen_parameters_stay_out_of_the_optimizer_and_mask_logits_out_of_weight_decay():
    a, b, c = (torch.nn.Parameter(torch.ones(2)) for _ in range(3))
    b.requires_grad_(False)
    c.no_weight_decay = True
    opt = trainer.make_optimizer([a, b, c], engine.TrainConfig(weight_decay=0.1))
    groups = [(g["params"], g["weight_decay"]) for g in opt.param_groups]
    assert len(groups) == 2 and groups[0][0][0] is a and groups[0][1] == 0.1
    assert groups[1][0][0] is c and groups[1][1] == 0.0


def test_leaderboard_reads_search_costs(tmp_path):
    base = tiny(**{"train.epochs": 1, "prune.search_epochs": 2})
    result = compare(base, ["cts", "edgepopup"], [0.2], 1, runs_dir=tmp_path)
    rows = {r["method"]: r for r in result["rows"]}
    per_epoch = trainer.steps_per_epoch(len(engine.data.load(base.data, torch.device("cpu")).train), base.train)
    assert rows["cts"]["search_steps"] == 2 * per_epoch
    assert rows["edgepopup"]["search_steps"] == per_epoch  # the score training is the whole search
    assert rows["edgepopup"]["control_deltas"] == {}


@pytest.mark.parametrize("changes,field", [
    ({"prune.cs_rounds": 0}, "prune.cs_rounds"), ({"prune.search_lr": -1.0}, "prune.search_lr"),
    ({"prune.method": "edgepopup", "prune.scope": "global"}, "prune.scope"),
])
def test_bad_search_settings_name_the_field(changes, field):
    with pytest.raises(engine.ConfigError, match=field):
        tiny(**changes)


def test_cs_with_one_epoch_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(engine.ConfigError, match="train.epochs.*at least 2"):
        engine.run(tiny(**{"prune.method": "cs", "train.epochs": 1}), runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("method", ["biprop", "cts", "edgepopup"])
def test_a_layer_left_empty_by_rounding_stays_exactly_zero(tmp_path, method):
    cfg = tiny(**{"prune.method": method, "prune.density": 0.0004, "prune.search_epochs": 1, "train.epochs": 1})
    s = engine.run(cfg, runs_dir=tmp_path)  # layerwise: round(0.0004 x 1000) = 0 weights of the output layer
    mask, weights = stored(tmp_path, s)
    assert int(mask["out.weight"].sum()) == 0 and (weights["out.weight"] == 0).all()
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("method", ["cs", "cts"])
def test_a_run_resumed_after_its_search_does_not_search_again(tmp_path, monkeypatch, method):
    import threading
    from engine import events as ev
    from engine.methods import cs, cts

    cfg = tiny(**{"prune.method": method, "prune.search_epochs": 1, "prune.cs_rounds": 1})
    cancel = threading.Event()

    def stop_in_ticket_training(e):  # cancel once the ticket itself trains, after the search
        if isinstance(e, ev.TrainingStarted) and e.level == 1 and e.variant == "ticket":
            cancel.set()

    first = engine.run(cfg, on_event=stop_in_ticket_training, cancel=cancel, runs_dir=tmp_path)
    assert first["status"] == "cancelled" and first["levels"] == []
    module = cs if method == "cs" else cts
    monkeypatch.setattr(module, "search", lambda *a, **k: pytest.fail("searched again"))
    resumed = engine.run(cfg, runs_dir=tmp_path)
    assert resumed["status"] == "completed" and len(resumed["levels"]) == 1
