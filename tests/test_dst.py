"""Dynamic sparse training (RigL, SET): fixed per-layer counts, the drop schedule, clean grown weights."""
import math

import pytest
import torch

import engine
from engine import bayes
from engine import masks as M
from engine.methods import dst

from conftest import tiny


@pytest.fixture
def spy(monkeypatch):
    """Record every update of the DynamicSparsity a run creates, checking invariants as it goes."""
    seen = []

    class Checked(dst.DynamicSparsity):
        def on_step(self, step, model):
            before = {n: v.bool().clone() for n, v in self.values.items()}
            updates = len(self.history)
            super().on_step(step, model)
            if len(self.history) == updates:
                return
            params = dict(model.named_parameters())
            for n, v in self.values.items():
                now = v.bool()
                assert int(now.sum()) == int(before[n].sum()), "per-layer active count changed"
                grown, dropped = now & ~before[n], before[n] & ~now
                assert int(grown.sum()) == int(dropped.sum()) == self.history[-1]["moved"].get(n, 0)
                assert (params[n][~now] == 0).all() and (params[n][grown] == 0).all()
                rho = params.get(n.rpartition(".")[0] + ".rho")  # a Bayesian weight's, grown at the initial sigma
                if rho is not None:
                    sigma = torch.nn.functional.softplus(rho[grown])
                    assert torch.allclose(sigma, torch.full_like(sigma, model.bayes_options.sigma_init))
                if rho is not None and not self.optimizer.state.get(rho):
                    # a ticket under half dense: the optimizer steps rho's kept entries as one flat parameter
                    # (engine.bayes._KeptRho), so no rho has state in rho's shape, pruned ones none at all
                    assert bayes.posteriors(model)[0]._kept is not None
                for p in (params[n], rho) if rho is not None else (params[n],):
                    for key, state in self.optimizer.state.get(p, {}).items():
                        if torch.is_tensor(state) and state.shape == now.shape:
                            assert (state[grown] == 0).all() and (state[dropped] == 0).all(), key
            seen.append(self)

    monkeypatch.setattr(dst, "DynamicSparsity", Checked)
    return seen


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_counts_stay_fixed_and_the_drop_fraction_follows_the_cosine(tmp_path, spy, method):
    cfg = tiny(**{"prune.method": method, "prune.scope": "erk", "prune.density": 0.1, "train.epochs": 6,
                  "prune.dst_interval": 10, "prune.controls": ()})
    s = engine.run(cfg, runs_dir=tmp_path)
    d = spy[-1]
    steps = [h["step"] for h in d.history]
    assert steps == [t for t in range(10, d.end, 10)]  # every Delta T until T_end
    for h in d.history:
        frac = 0.3 / 2 * (1 + math.cos(math.pi * h["step"] / d.end))
        assert h["fraction"] == pytest.approx(frac)
        for n, moved in h["moved"].items():
            k = int(d.values[n].sum())
            assert moved == min(int(frac * k), d.values[n].numel() - k)
    store = engine.RunStore(tmp_path, s["run_id"])
    mask, weights = store.load_level("ticket", 1)
    for n, keep in mask.items():
        assert (weights[n][~keep] == 0).all()
    assert s["levels"][0]["layers"]["out.weight"] < 1 and s["levels"][0]["density"] == pytest.approx(0.1, abs=1e-4)


@pytest.mark.parametrize("density", [0.2, 0.6])
def test_a_bayesian_nets_pruned_rho_keeps_no_optimizer_state(tmp_path, spy, density):
    """RigL on a mean-field Gaussian net: a dropped weight's rho loses its Adam state with its mu (the spy
    checks both), so with mu 0 and no gradient it stays where it was while pruned. At 0.6 the optimizer steps
    rho whole and RigL zeroes its state; at 0.2 it steps rho's kept entries only, which follow the mask."""
    cfg = tiny(**{"prune.method": "rigl", "prune.density": density, "prune.dst_interval": 10, "train.epochs": 2,
                  "prune.controls": (), "model.bayesian": True, "model.mc_samples": 2})
    engine.run(cfg, runs_dir=tmp_path)
    assert spy and spy[-1].history


def test_rigl_and_set_grow_differently(tmp_path):
    masks = {}
    for method in ("rigl", "set"):
        s = engine.run(tiny(**{"prune.method": method, "prune.density": 0.2, "prune.dst_interval": 10,
                               "train.epochs": 4, "prune.controls": ()}), runs_dir=tmp_path)
        masks[method] = engine.RunStore(tmp_path, s["run_id"]).load_level("ticket", 1)[0]
    assert not torch.equal(masks["rigl"]["hidden.0.weight"], masks["set"]["hidden.0.weight"])
    assert M.layer_densities(masks["rigl"]) == M.layer_densities(masks["set"])
