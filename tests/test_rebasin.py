"""Git Re-Basin weight matching: permutations keep the function, masks move with their weights."""
import pytest
import torch

from engine import batched as B
from engine import masks as M
from engine import models
from engine import rebasin as R
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load
from engine.errors import Unsupported

ARCHS = [("mlp", dict(hidden=(24, 12)), (1, 8, 8)), ("lenet300", dict(width=0.1), (1, 8, 8)),
         ("conv2", dict(width=0.125), (1, 8, 8)), ("conv4", dict(width=0.125), (3, 8, 8)),
         ("conv6", dict(width=0.0625), (1, 16, 16)), ("resnet20", dict(width=0.5), (3, 8, 8))]


def _net(name, kw, shape, seed):
    return models.build(ModelConfig(model=name, **kw), shape, 10, seed)


@pytest.mark.parametrize("name,kw,shape", ARCHS, ids=[a[0] for a in ARCHS])
def test_permuted_and_matched_nets_compute_the_same_function(name, kw, shape):
    a, b = _net(name, kw, shape, 0), _net(name, kw, shape, 1)
    with torch.no_grad():  # BatchNorm (resnet20) with statistics and affine parameters of its own
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(), m.running_var.uniform_(0.5, 2), m.weight.normal_(), m.bias.normal_()
    b.eval()
    spec = R.permutation_spec(a)
    perm = R.random_permutation(spec, torch.Generator().manual_seed(3))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perm.values())
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(4))
    copy = _net(name, kw, shape, 9).eval()
    for weights in (R.permute(spec, perm, b.state_dict()), R.rebasin(a, a.state_dict(), b.state_dict())[0]):
        assert any(not torch.equal(weights[k], v) for k, v in b.state_dict().items())
        copy.load_state_dict(weights)
        torch.testing.assert_close(copy(x), b(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kw,shape", ARCHS[:3] + ARCHS[-1:], ids=[a[0] for a in ARCHS[:3] + ARCHS[-1:]])
def test_weight_matching_undoes_a_permutation_exactly(name, kw, shape):
    a = _net(name, kw, shape, 0)
    spec = R.permutation_spec(a)
    shuffled = R.permute(spec, R.random_permutation(spec, torch.Generator().manual_seed(1)), a.state_dict())
    back, _, _ = R.rebasin(a, a.state_dict(), shuffled)
    for k, v in a.state_dict().items():
        assert torch.equal(back[k], v), k


def test_matching_brings_b_closer_to_a():
    a, b = _net("mlp", dict(hidden=(32, 32)), (1, 8, 8), 0), _net("mlp", dict(hidden=(32, 32)), (1, 8, 8), 1)
    matched, _, _ = R.rebasin(a, a.state_dict(), b.state_dict())

    def dist(w):
        return sum(float((a.state_dict()[k] - w[k]).pow(2).sum()) for k in w)

    assert dist(matched) < dist(b.state_dict())


def test_masks_are_permuted_with_their_weights():
    a, b = _net("conv2", dict(width=0.125), (1, 8, 8), 0), _net("conv2", dict(width=0.125), (1, 8, 8), 1)
    ones = M.ones(b)
    mask = M.prune_step(M.magnitude_scores(b, ones), ones, 0.6, 0.2, "layerwise", M.output_layer(b))
    M.apply(b, mask)
    weights, moved_mask, perm = R.rebasin(a, a.state_dict(), b.state_dict(), mask)
    spec = R.permutation_spec(a)
    for n, keep in moved_mask.items():
        assert keep.dtype == torch.bool and int(keep.sum()) == int(mask[n].sum())
        assert (weights[n][~keep] == 0).all(), n               # pruned entries moved with the mask
        assert (weights[n][keep] != 0).all(), n
    assert not all(torch.equal(moved_mask[n], mask[n]) for n in mask)
    assert all(torch.equal(R.permute(spec, perm, {n: mask[n].float()})[n].bool(), moved_mask[n]) for n in mask)


def test_models_outside_the_chain_are_refused_in_one_line():
    with pytest.raises(Unsupported, match="Sequential is not one"):
        R.permutation_spec(torch.nn.Sequential(torch.nn.Linear(4, 4)))

    class WithNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.n, self.b = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)

        def as_sequential(self):
            return torch.nn.Sequential(self.a, self.n, self.b)

    with pytest.raises(Unsupported, match="through LayerNorm"):
        R.permutation_spec(WithNorm())


def test_align_to_mean_keeps_every_function_and_pulls_the_zoo_together():
    """MergeMany after matching to a reference: the same functions, the zoo no more spread than before
    (it only accepts improvements), and nets that were shuffled copies of one net end up identical."""
    shape, kw = (1, 8, 8), dict(hidden=(16, 8))
    nets = [_net("mlp", kw, shape, s).eval() for s in range(5)]
    states = [n.state_dict() for n in nets]
    spec = R.permutation_spec(nets[0])

    def spread(ss):  # sum of squared distances to the zoo's mean
        flat = torch.stack([torch.cat([s[k].flatten() for k in spec.axes]) for s in ss])
        return float((flat - flat.mean(0)).pow(2).sum())

    ref_aligned = [states[0], *R.align(nets[0], states[0], states[1:])]
    merged, moved = R.align_to_mean(nets[0], ref_aligned, rounds=50)
    assert moved and moved[0] > 0 and moved[-1] == 0  # it moved nets, then converged
    assert spread(merged) < spread(ref_aligned) - 1e-6
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    copy = _net("mlp", kw, shape, 9).eval()
    for net, w in zip(nets, merged):
        copy.load_state_dict(w)
        torch.testing.assert_close(copy(x), net(x), atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(2)
    shuffled = [R.permute(spec, R.random_permutation(spec, g), states[0]) for _ in range(4)]
    same, _ = R.align_to_mean(nets[0], shuffled)
    assert all(torch.equal(same[i][k], same[0][k]) for i in range(4) for k in spec.axes)


def test_align_and_merge_many_report_each_member_and_stop_on_cancel():
    """Canonicalising a wide zoo takes minutes: both steps say which member they are at and stop when asked."""
    import threading

    from engine.errors import RunCancelled

    shape, kw = (1, 8, 8), dict(hidden=(16, 8))
    nets = [_net("mlp", kw, shape, s).eval() for s in range(4)]
    states = [n.state_dict() for n in nets]
    seen = []
    aligned = R.align(nets[0], states[0], states[1:], on_progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    rounds = []
    _, moved = R.align_to_mean(nets[0], [states[0], *aligned], rounds=3,
                               on_progress=lambda r, i, n, count: rounds.append((r, i, n)))
    assert [(r, i) for r, i, n in rounds if i == 4] == [(r + 1, 4) for r in range(len(moved))]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelled):
        R.align(nets[0], states[0], states[1:], cancel=cancel)


def test_barrier_of_a_net_and_its_shuffled_copy_vanishes_once_matched():
    data = load(DataConfig())
    mc = ModelConfig(model="mlp", hidden=(32,))
    net = models.build(mc, data.input_shape, data.num_classes, 0)
    trained = B.train_batched(net, data, TrainConfig(epochs=2), [B.Member(net.state_dict(), seed=1)]).member(0)
    spec = R.permutation_spec(net)
    shuffled = R.permute(spec, R.random_permutation(spec, torch.Generator().manual_seed(0)), trained)
    result = R.barriers(net, trained, shuffled, data.test, points=5)
    assert result["matched_error_barrier"] == 0 and result["matched_loss_barrier"] == 0
    assert result["naive_loss_barrier"] > 0.1  # the midpoint of a net and its shuffled copy is much worse
    assert result["naive_curve"][0] == result["matched_curve"][0]


def test_analyze_barrier_rebasin_stores_naive_and_matched(runs_dir, capsys):
    import engine
    from engine.cli import main

    from conftest import tiny

    cfg = tiny(**{"model.model": "mlp", "model.hidden": (32,), "prune.levels": 1, "train.epochs": 2})
    run_id = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    assert main(["analyze", run_id, "barrier", "--rebasin", "--points", "5", "--runs-dir", str(runs_dir)]) == 0
    assert "after re-basin: error barrier" in capsys.readouterr().out
    stored = engine.RunStore(runs_dir, run_id).analyses()["barrier-L1-reinit"]
    assert stored["rebasin"] and len(stored["matched_curve"]) == 5
    # both curves start at the ticket itself; the matched one ends at the same function as the control
    assert stored["matched_curve"][0] == stored["curve"][0]
    assert stored["matched_curve"][-1]["accuracy"] == stored["curve"][-1]["accuracy"]
    assert stored["matched_curve"][-1]["loss"] == pytest.approx(stored["curve"][-1]["loss"], rel=1e-5)


def test_analyze_barrier_rebasin_on_a_resnet(runs_dir, capsys):
    import engine
    from engine.cli import main

    from conftest import tiny

    cfg = tiny(**{"model.model": "resnet20", "model.width": 0.25, "prune.levels": 1, "train.epochs": 1,
                  "train.batch_size": 256})
    run_id = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    assert main(["analyze", run_id, "barrier", "--rebasin", "--points", "3", "--runs-dir", str(runs_dir)]) == 0
    stored = engine.RunStore(runs_dir, run_id).analyses()["barrier-L1-reinit"]
    assert len(stored["matched_curve"]) == 3
    assert stored["matched_curve"][-1]["accuracy"] == stored["curve"][-1]["accuracy"]  # same function at B
