"""Interpolation, error barriers (BatchNorm-aware) and the instability analysis of a stored run."""
import json
import threading

import pytest
import torch

import engine
from engine import data as D
from engine import masks as M
from engine import models, trainer
from engine.analysis import (StoredRun, error_barrier, instability, interpolate, loss_barrier,
                             recompute_bn_stats, rewind_weights)
from engine.store import load_tensors

from conftest import tiny


@pytest.fixture(scope="module")
def digits():
    return D.load(tiny().data)


@pytest.fixture(scope="module")
def two_nets(digits):
    """Two lenet300 nets trained from different initialisations and data orders."""
    cfg = tiny()
    nets = []
    for seed in (0, 1):
        model = models.build(cfg.model, digits.input_shape, digits.num_classes, seed)
        trainer.train(model, digits, cfg.train, None, seed=seed)
        nets.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model, nets


def _net(model, weights):
    model.load_state_dict(weights)
    return model


def test_identical_endpoints_have_zero_barrier(two_nets, digits):
    model, (a, _) = two_nets
    curve = interpolate(model, a, a, digits.test, points=7)
    assert [p["alpha"] for p in curve] == pytest.approx([i / 6 for i in range(7)])
    assert curve[0]["alpha"] == 0.0 and curve[-1]["alpha"] == 1.0
    assert error_barrier(curve) == 0.0
    assert loss_barrier(curve) == pytest.approx(0.0, abs=1e-6)
    assert all(p["error"] == pytest.approx(1 - p["accuracy"]) for p in curve)


def test_endpoints_reproduce_the_endpoint_nets_exactly(two_nets, digits):
    model, (a, b) = two_nets
    curve = interpolate(model, a, b, digits.test, points=5)
    assert (curve[0]["loss"], curve[0]["accuracy"]) == trainer.evaluate(_net(model, a), digits.test)
    assert (curve[-1]["loss"], curve[-1]["accuracy"]) == trainer.evaluate(_net(model, b), digits.test)


def test_masks_hold_pruned_weights_at_zero_along_the_line(two_nets, digits):
    model, (a, b) = two_nets
    g = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(a[n].shape, generator=g) < 0.5 for n in M.prunable(model)}
    curve = interpolate(model, a, b, digits.test, points=3, mask=mask)
    masked_a = {k: v * mask[k] if k in mask else v for k, v in a.items()}
    assert (curve[0]["loss"], curve[0]["accuracy"]) == trainer.evaluate(_net(model, masked_a), digits.test)
    # at the midpoint the unmasked interpolation differs: the mask really was applied there too
    assert curve[1]["loss"] != interpolate(model, a, b, digits.test, points=3)[1]["loss"]


def test_independently_trained_nets_have_a_positive_barrier(two_nets, digits):
    model, (a, b) = two_nets
    curve = interpolate(model, a, b, digits.test)
    assert len(curve) == 31
    # Two inits, no alignment of hidden units: the midpoint is far worse than either end.
    assert error_barrier(curve) > 0.05
    assert max(p["error"] for p in curve) > max(curve[0]["error"], curve[-1]["error"]) + 0.05


def test_barrier_is_the_gap_to_the_line_between_endpoint_errors():
    curve = [{"alpha": 0.0, "error": 0.1, "loss": 1.0}, {"alpha": 0.5, "error": 0.3, "loss": 1.0},
             {"alpha": 1.0, "error": 0.2, "loss": 3.0}]
    assert error_barrier(curve) == pytest.approx(0.3 - 0.15)
    assert loss_barrier(curve) == 0.0  # the midpoint loss lies below the line from 1 to 3


# ---------------------------------------------------------------- BatchNorm
@pytest.fixture(scope="module")
def resnet(digits):
    cfg = tiny(**{"model.model": "resnet20", "model.width": 0.25})
    return [models.build(cfg.model, digits.input_shape, digits.num_classes, seed) for seed in (0, 1)]


def test_bn_statistics_are_recomputed_on_the_given_data(resnet, digits):
    model = resnet[0]
    recompute_bn_stats(model, digits.train, batch=len(digits.train))  # one batch: exact statistics
    with torch.no_grad():
        h = model.conv(digits.train.x)
    assert torch.allclose(model.bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert model.bn.momentum == 0.1 and model.training  # settings restored


def test_bn_models_interpolate_with_recomputed_statistics(resnet, digits):
    a, b = (m.state_dict() for m in resnet)
    a = {k: v.clone() for k, v in a.items()}
    with pytest.raises(ValueError, match="bn_data"):
        interpolate(resnet[0], a, b, digits.test, points=3)
    curve = interpolate(resnet[0], a, b, digits.test, points=3, bn_data=digits.train)
    assert all(torch.equal(v, resnet[0].state_dict()[k]) for k, v in a.items())  # the model is not modified
    # the endpoint is the endpoint net, evaluated with statistics recomputed the same way
    ref = models.build(tiny(**{"model.model": "resnet20", "model.width": 0.25}).model, digits.input_shape,
                       digits.num_classes, 0)
    recompute_bn_stats(ref, digits.train)
    assert (curve[0]["loss"], curve[0]["accuracy"]) == trainer.evaluate(ref, digits.test)
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in curve)


# ---------------------------------------------------------------- instability of a stored run
@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    summary = engine.run(tiny(**{"prune.levels": 1, "prune.controls": (), "prune.rewind": "iter:10"}),
                         runs_dir=runs_dir)
    return runs_dir, summary["run_id"]


def test_rewind_weights_follow_the_runs_own_dense_training(stored):
    runs_dir, run_id = stored
    run = StoredRun(runs_dir, run_id)
    ws = rewind_weights(run, [0, 10])
    saved = load_tensors(run.store.weights_path("rewind"))
    assert all(torch.equal(ws[10][k], saved[k]) for k in saved)
    assert all(torch.equal(ws[0][k], v) for k, v in run.init_weights().items())


def test_instability_stores_a_barrier_per_rewind_point(stored):
    runs_dir, run_id = stored
    seen = []
    result = instability(run_id, runs_dir, rewind_points=[10, 0], level=1, points=5, on_event=seen.append)
    assert result["rewind_points"] == [0, 10] and result["level"] == 1
    assert len(result["barriers"]) == 2 and all(0 <= b <= 1 for b in result["barriers"])
    assert set(result["curves"]) == {"0", "10"} and all(len(c) == 5 for c in result["curves"].values())
    assert result["stable_threshold"] == 0.02
    for (acc_a, acc_b), curve in zip(result["endpoint_test_accuracy"], result["curves"].values()):
        assert (curve[0]["accuracy"], curve[-1]["accuracy"]) == (acc_a, acc_b)  # no BN: exactly the trained nets
    path = StoredRun(runs_dir, run_id).store.dir / "analyses" / "instability-L1.json"
    assert json.loads(path.read_text()) == result
    assert [e.kind for e in seen] == ["AnalysisProgress", "AnalysisProgress", "AnalysisReady"]


def test_instability_rejects_bad_rewind_points_and_honours_cancel(stored):
    runs_dir, run_id = stored
    for bad in ([], [0, 0], [42], [-1], [1.5]):
        with pytest.raises(engine.ConfigError, match="rewind_points"):
            instability(run_id, runs_dir, rewind_points=bad)
    with pytest.raises(engine.LotteryError, match="level 7"):
        instability(run_id, runs_dir, rewind_points=[0], level=7)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(engine.RunCancelled):
        instability(run_id, runs_dir, rewind_points=[0, 5], cancel=cancel)
