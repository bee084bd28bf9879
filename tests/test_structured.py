"""Structured tickets: N:M and channel selection, IMP-Refill/Regroup, physical shrink, and the config wiring."""
import copy
import json

import pytest
import torch
from torch import nn

import engine
from engine import masks as M
from engine import structured as S
from engine.cli import main
from engine.errors import Unsupported
from engine.models import MLP, ConvNet, ResNetCifar
from engine.shrink import AddConstant, shrink

from conftest import tiny


def groups_of(mask, m):
    """Kept counts of every full group of m along the input dimension, and of each row's short tail."""
    r = S.rows(mask)
    full = r.shape[1] // m * m
    return r[:, :full].reshape(r.shape[0], -1, m).sum(-1), r[:, full:].sum(1)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (1, 8), (4, 8), (4, 4)])
@pytest.mark.parametrize("shape", [(12, 64), (5, 30), (8, 3, 3, 3), (6, 4, 5, 5)])
def test_nm_keeps_exactly_n_in_every_group_of_m(n, m, shape):
    torch.manual_seed(0)
    scores = torch.randn(shape)
    mask = S.keep_nm(scores, torch.ones(shape, dtype=torch.bool), n, m)
    full, tail = groups_of(mask, m)
    assert (full == n).all()
    tail_size = S.rows(mask).shape[1] % m  # padded with pruned entries: keeps min(n, its size)
    assert (tail == min(n, tail_size)).all()
    assert S.is_nm(mask, n, m)
    # the kept ones are the group's top scores
    g = S.rows(scores)[:, :full.shape[1] * m].reshape(full.shape[0], -1, m)
    kept = S.rows(mask)[:, :full.shape[1] * m].reshape(g.shape)
    assert (g.masked_fill(~kept, float("inf")).amin(-1) >= g.masked_fill(kept, float("-inf")).amax(-1)).all()


def test_nm_never_revives_dead_entries_and_refuses_groups_that_cannot_fill():
    torch.manual_seed(0)
    scores = torch.randn(4, 16)
    three = S.keep_nm(scores, torch.ones(4, 16, dtype=torch.bool), 3, 4)
    two = S.keep_nm(-scores, three, 2, 4)  # prefers the dead entries' scores, must not take them
    assert not (two & ~three).any() and S.is_nm(two, 2, 4)
    with pytest.raises(ValueError):
        S.keep_nm(scores, two, 3, 4)


def test_channel_selection_keeps_whole_rows_by_l1():
    torch.manual_seed(0)
    w = torch.randn(10, 3, 3, 3)
    w[7] *= 10  # the largest l1 row
    dense = torch.ones_like(w, dtype=torch.bool)
    score = S.channel_scores({"w": w.abs()}, {"w": dense})["w"]
    assert torch.allclose(score, w.abs().flatten(1).sum(1))
    mask = S.keep_channels(score, dense, 4)
    r = S.rows(mask)
    assert int(r.any(1).sum()) == 4 and bool((r.all(1) == r.any(1)).all()) and bool(r[7].all())


def test_refill_keeps_the_nnz_budget_within_one_channel_and_dense_channels():
    torch.manual_seed(0)
    model = MLP(64, [300, 100], 10)
    mask = M.ones(model)
    for _ in range(3):
        mask = M.prune_step(M.magnitude_scores(model, mask), mask, 0.3, 0.1, "layerwise", "out.weight")
    scores = M.magnitude_scores(model, mask)
    hidden = ["hidden.0.weight", "hidden.1.weight"]
    refilled = S.refill(mask, S.channel_scores(scores, mask), hidden)
    for n in hidden:
        r = S.rows(refilled[n])
        assert bool((r.all(1) == r.any(1)).all())  # every channel fully dense or gone
        assert abs(int(r.sum()) - int(mask[n].sum())) < r.shape[1]
        # the kept channels are those with the largest l1 of surviving weights
        l1 = S.rows(scores[n] * mask[n]).sum(1)
        assert l1[r.any(1)].min() >= l1[~r.any(1)].max()
    assert torch.equal(refilled["out.weight"], mask["out.weight"])


def test_regroup_gives_rows_of_a_group_one_dense_block_within_budget():
    torch.manual_seed(0)
    # two families of rows with different column patterns, plus noise
    base = torch.zeros(40, 32, dtype=torch.bool)
    base[:20, :12] = True
    base[20:, 16:30] = True
    mask = {"w": base ^ (torch.rand(40, 32) < 0.05)}
    out = S.regroup(mask, {"w": torch.rand(40, 32)}, ["w"], groups=2)["w"]
    patterns = {tuple(row.tolist()) for row in out}
    assert len(patterns) == 2  # one block per group: its rows share their columns
    assert abs(int(out.sum()) - int(mask["w"].sum())) <= 40
    assert out[:20, :12].float().mean() > 0.9 and out[20:, 16:30].float().mean() > 0.9


def test_batchnorm_scales_are_found_after_their_layers():
    model = ResNetCifar(3, 1, 10, 0.25)
    norms = S.following_norms(model)
    assert norms["conv.weight"] == "bn.weight"
    assert norms["blocks.1.shortcut.0.weight"] == "blocks.1.shortcut.1.weight"
    assert "out.weight" not in norms
    assert S.following_norms(MLP(8, [4], 2)) == {}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["bn.weight"] = torch.tensor([0.1, -3.0, 0.2, 2.0])  # |gamma| ranks the channels, not the rows' l1
    mask = M.ones(model)
    score = S.channel_scores(M.magnitude_scores(model, mask), mask, weights, norms)
    assert S.rows(S.keep_channels(score["conv.weight"], mask["conv.weight"], 2)).any(1).tolist() == \
        [False, True, False, True]


# ---------------------------------------------------------------- physical shrink
def _randomise(model, positive_bias=True):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3)
            if positive_bias and name.endswith("bias"):
                p.abs_()  # pruned channels then emit relu(b) > 0: the contributions that must be kept
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return model.double().eval()


def _channel_mask(model, fraction=0.5):
    mask = M.ones(model)
    score = S.channel_scores(M.magnitude_scores(model, mask), mask)
    out = M.output_layer(model)
    return {n: m if n == out else S.keep_channels(score[n], m, max(1, round(fraction * m.shape[0])))
            for n, m in mask.items()}


def _masked_outputs(model, mask, x):
    ref = copy.deepcopy(model)
    M.apply(ref, mask)
    return ref(x)


@pytest.mark.parametrize("build,shape", [
    (lambda: engine.models.build(engine.ModelConfig(), (784,), 10, 0), (784,)),
    (lambda: engine.models.build(engine.ModelConfig(model="conv2", width=0.25), (1, 8, 8), 10, 0), (1, 8, 8)),
    (lambda: engine.models.build(engine.ModelConfig(model="conv4", width=0.25), (3, 8, 8), 10, 0), (3, 8, 8)),
])
def test_shrunk_model_matches_the_masked_one(build, shape):
    model = _randomise(build())
    mask = _channel_mask(model)
    x = torch.randn(6, *shape, dtype=torch.float64)
    small = shrink(model, mask, x)
    assert (small(x) - _masked_outputs(model, mask, x)).abs().max() < 1e-6
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    if isinstance(model, ConvNet):  # zero padding: a pruned channel's constant reaches the borders differently
        assert any(isinstance(m, AddConstant) for m in small)
    else:
        widths = [m.out_features for m in small if isinstance(m, nn.Linear)]
        assert widths == [150, 50, 10]


def test_shrink_is_exact_with_batchnorm_and_removes_unused_inputs():
    model = _randomise(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3),
                                     nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 9, 5)))
    mask = M.ones(model)
    mask["0.weight"][:3] = False        # pruned rows: constants through BatchNorm and ReLU
    mask["3.weight"][:, 3:5] = False    # nobody reads channels 3 and 4 of layer 0
    mask["8.weight"][:, :9] = False     # ... nor channel 0 of layer 3 (9 features after flatten)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    small = shrink(model, mask, x)
    assert (small(x) - _masked_outputs(model, mask, x)).abs().max() < 1e-6
    assert [m.out_channels for m in small if isinstance(m, nn.Conv2d)] == [3, 5]


def test_shrink_float32_and_refuses_resnets():
    model = _randomise(engine.models.build(engine.ModelConfig(), (64,), 10, 0)).float()
    mask = _channel_mask(model, 0.3)
    x = torch.randn(8, 64)
    assert torch.allclose(shrink(model, mask, x)(x), _masked_outputs(model, mask, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(Unsupported, match="ResNet"):
        shrink(ResNetCifar(3, 1, 10, 0.25), M.ones(ResNetCifar(3, 1, 10, 0.25)), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- wired into methods and the CLI
def test_imp_nm_from_the_cli_reaches_exact_2_4(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["run", "--method", "imp", "--pattern", "nm", "--epochs", "1", "--levels", "5", "--controls", "none",
                 "--device", "cpu", "--runs-dir", runs, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["level"] for r in summary["levels"]] == [1, 2]  # 4:4 -> 3:4 -> 2:4, then nothing left to do
    store = engine.RunStore(runs, summary["run_id"])
    for level, n in ((1, 3), (2, 2)):
        mask, weights = store.load_level("ticket", level)
        for name in ("hidden.0.weight", "hidden.1.weight"):
            assert S.is_nm(mask[name], n, 4)
            assert (weights[name][~mask[name]] == 0).all()


@pytest.mark.parametrize("changes,check", [
    ({"prune.pattern": "channel"}, "channels"),
    ({"prune.refill": "refill"}, "channels"),
    ({"prune.method": "oneshot", "prune.pattern": "channel", "prune.density": 0.25}, "channels"),
    ({"prune.method": "oneshot", "prune.pattern": "nm", "prune.nm": "1:8"}, "1:8"),
    ({"prune.method": "snip", "prune.pattern": "nm", "prune.scope": "layerwise"}, "2:4"),
    ({"prune.method": "synflow", "prune.pattern": "channel", "prune.scope": "erk", "prune.synflow_rounds": 5},
     "channels"),
])
def test_methods_produce_masks_in_the_configured_pattern(tmp_path, changes, check):
    cfg = tiny(**{"train.epochs": 1, "prune.levels": 2, "prune.controls": (), **changes})
    s = engine.run(cfg, runs_dir=tmp_path)
    mask, _ = engine.RunStore(tmp_path, s["run_id"]).load_level("ticket", s["levels"][-1]["level"])
    for name in ("hidden.0.weight", "hidden.1.weight"):
        r = S.rows(mask[name])
        if check == "channels":
            assert bool((r.all(1) == r.any(1)).all()) and 0 < int(r.any(1).sum()) < r.shape[0]
        else:
            n, m = S.parse_nm(check)
            assert S.is_nm(mask[name], n, m)
    if changes.get("prune.method") == "oneshot" and check == "channels":
        assert [int(S.rows(mask[n]).any(1).sum()) for n in ("hidden.0.weight", "hidden.1.weight")] == [75, 25]


@pytest.mark.parametrize("path,value,needle", [
    ("prune.pattern", "blocks", "unstructured, channel, nm"),
    ("prune.nm", "4:2", "N:M"),
    ("prune.nm", "2-4", "N:M"),
    ("prune.refill", "more", "none, refill, regroup"),
    ("prune.channel_score", "l2", "l1, bn"),
])
def test_bad_pattern_values_are_config_errors(path, value, needle):
    with pytest.raises(engine.ConfigError) as info:
        engine.RunConfig().replace(**{path: value})
    assert str(info.value).startswith(f"{path}: {value!r} is not valid") and needle in str(info.value)


@pytest.mark.parametrize("changes,field", [
    ({"prune.pattern": "nm", "prune.refill": "refill"}, "prune.refill"),
    ({"prune.method": "rigl", "prune.pattern": "channel"}, "prune.pattern"),
    ({"prune.method": "snip", "prune.refill": "regroup"}, "prune.refill"),
    ({"prune.pattern": "channel", "prune.scope": "global"}, "prune.scope"),
])
def test_pattern_combinations_that_make_no_sense_are_refused(changes, field):
    with pytest.raises(engine.ConfigError, match=f"^{field}: "):
        engine.RunConfig().replace(**changes)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "--pattern", "nm", "--nm", "5:4", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: prune.nm: '5:4' is not valid")
    # bn needs a BatchNorm: refused before anything trains or is written
    assert main(["run", "--pattern", "channel", "--channel-score", "bn", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "error: prune.channel_score: 'bn'" in capsys.readouterr().err
    assert not any((tmp_path / "r").glob("*/levels"))


def test_bn_channel_score_is_refused_for_pruning_at_init():
    with pytest.raises(engine.ConfigError, match="prune.channel_score.*gamma is 1"):
        tiny(**{"prune.method": "snip", "prune.pattern": "channel", "prune.channel_score": "bn"})


def test_oneshot_nm_output_layer_matches_imp_levels():
    from engine.methods.imp import imp_output_density
    cfg = tiny(**{"prune.method": "oneshot", "prune.pattern": "nm", "prune.nm": "2:4"}).prune
    assert imp_output_density(cfg) == pytest.approx((1 - cfg.output_fraction) ** 2)  # IMP: 4:4 -> 3:4 -> 2:4
