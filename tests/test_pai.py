"""Pruning at initialisation: ERK densities, SynFlow's conservation and no collapse, exact densities."""
import pytest
import torch
from torch import nn

import engine
from engine import masks as M
from engine import scores as S
from engine.methods.pai import score_batch, target_counts
from engine.models import MLP

from conftest import tiny


def lenet_mask():
    return {"fc1.weight": torch.ones(300, 784, dtype=torch.bool), "fc2.weight": torch.ones(100, 300, dtype=torch.bool),
            "fc3.weight": torch.ones(10, 100, dtype=torch.bool)}


@pytest.mark.parametrize("sparsity,expected,kept", [
    (0.9, [0.07957, 0.23019, 1.0], 26620),
    (0.98, [0.01539, 0.04453, 0.3674], 5324),
])
def test_erk_densities_match_rigl(sparsity, expected, kept):
    d = M.erk_densities(lenet_mask(), 1 - sparsity)
    assert [round(v, 5 if v < 0.3 else 4) for v in d.values()] == expected
    assert sum(d[n] * m.numel() for n, m in lenet_mask().items()) == pytest.approx(kept)


def bias_free_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30, bias=False), nn.ReLU(), nn.Linear(30, 15, bias=False), nn.ReLU(),
                          nn.Linear(15, 5, bias=False))
    return model


def test_synflow_scores_of_every_layer_sum_to_the_same_flow():
    model = bias_free_mlp()
    scores = S.synflow(model, M.ones(model), (20,))
    sums = [float(s.sum()) for s in scores.values()]
    assert sums == pytest.approx([sums[0]] * 3, rel=1e-6)
    with torch.no_grad():  # ... and that flow is R, the summed output of the linearised net on ones
        lin = [l.weight.abs().double() for l in model if isinstance(l, nn.Linear)]
        r = torch.ones(1, 20, dtype=torch.float64)
        for w in lin:
            r = r @ w.T
    assert sums[0] == pytest.approx(float(r.sum()), rel=1e-6)
    for p, q in zip(model.parameters(), bias_free_mlp().parameters()):  # signs restored: the model is untouched
        assert torch.equal(p, q)


def test_synflow_keeps_every_layer_alive_at_density_1e_3():
    torch.manual_seed(0)
    model = MLP(784, [300, 100], 10)
    dense = M.ones(model)
    mask = S.synflow_mask(model, dense, (784,), round(1e-3 * M.total(dense)), rounds=100)
    assert M.kept(mask) == round(1e-3 * M.total(dense))
    assert all(int(m.sum()) > 0 for m in mask.values()), M.layer_densities(mask)
    collapsed = M.keep_global(S.magnitude(model, dense), dense, round(1e-3 * M.total(dense)))
    assert min(int(m.sum()) for m in collapsed.values()) == 0  # magnitude at init collapses a layer here


def test_grasp_scores_are_signed_and_snip_batch_is_ten_per_class():
    data = engine.data.load(engine.DataConfig())
    batch = score_batch(data, seed=0)
    assert torch.bincount(batch[1]).tolist() == [10] * 10
    model = engine.models.build(engine.ModelConfig(), data.input_shape, 10, 0)
    g = S.grasp(model, M.ones(model), batch)
    flat = torch.cat([v.flatten() for v in g.values()])
    assert (flat < 0).any() and (flat > 0).any()
    s = S.snip(model, M.ones(model), batch)
    assert all((v >= 0).all() for v in s.values())


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude", "random"])
@pytest.mark.parametrize("scope", ["global", "layerwise", "erk"])
def test_every_pai_method_hits_its_target_density_exactly(tmp_path, method, scope):
    cfg = tiny(**{"prune.method": method, "prune.scope": scope, "prune.density": 0.05, "prune.synflow_rounds": 10,
                  "train.epochs": 1, "prune.controls": ("reinit",)})
    s = engine.run(cfg, runs_dir=tmp_path)
    store = engine.RunStore(tmp_path, s["run_id"])
    mask, weights = store.load_level("ticket", 1)
    want = target_counts(M.ones(engine.models.build(cfg.model, (1, 8, 8), 10, 0)), 0.05, scope)
    if isinstance(want, int):
        assert M.kept(mask) == want
    else:
        assert {n: int(m.sum()) for n, m in mask.items()} == want
    assert s["controls"]["reinit"][0]["layers"] == s["levels"][0]["layers"]
    for n, keep in mask.items():
        assert (weights[n][~keep] == 0).all()


def test_erk_scope_is_refused_for_imp():
    with pytest.raises(engine.ConfigError, match="prune.scope: 'erk'.*imp allows"):
        tiny(**{"prune.scope": "erk"})
