import math

import pytest
import torch
from torch import nn

from engine import masks as M
from engine.models import MLP
from engine.seeding import generator


def lenet(in_features=784):
    torch.manual_seed(0)
    return MLP(in_features, [300, 100], 10)


def test_prunable_layers_are_linear_and_conv_weights_with_output_last():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    assert M.prunable(model) == ["0.weight", "3.weight"]
    assert M.output_layer(lenet()) == "out.weight"


def test_keep_top_keeps_exact_count_of_alive_highest_and_breaks_ties_by_position():
    scores = torch.tensor([3.0, 1.0, 1.0, 1.0, 5.0, 0.0])
    alive = torch.tensor([True, True, True, True, False, True])
    kept = M.keep_top(scores, alive, 3)
    assert kept.tolist() == [True, True, True, False, False, False]
    with pytest.raises(ValueError):
        M.keep_top(scores, alive, 6)


def _bookkeeping(fraction, output_fraction, scope, levels):
    """Prune `levels` times by magnitude and return the kept counts per layer after each level."""
    model = lenet()
    mask = M.ones(model)
    history = []
    for _ in range(levels):
        with torch.no_grad():  # new random weights each level, like a retrained net
            for p in model.parameters():
                p.normal_()
        mask = M.prune_step(M.magnitude_scores(model, mask), mask, fraction, output_fraction, scope, "out.weight")
        history.append({n: int(m.sum()) for n, m in mask.items()})
    return history


def test_layerwise_density_bookkeeping_after_levels():
    history = _bookkeeping(0.2, 0.1, "layerwise", 10)
    expect = {"hidden.0.weight": 784 * 300, "hidden.1.weight": 300 * 100, "out.weight": 1000}
    for level, counts in enumerate(history, start=1):
        for name in expect:
            frac = 0.1 if name == "out.weight" else 0.2
            expect[name] -= math.ceil(frac * expect[name])
        assert counts == expect, level
    # close to (1 - p)^L
    assert abs(history[-1]["hidden.0.weight"] / (784 * 300) - 0.8 ** 10) < 1e-4


def test_global_pool_excludes_output_layer_and_prunes_exact_fraction():
    history = _bookkeeping(0.2, 0.0, "global", 5)
    hidden = 784 * 300 + 300 * 100
    for counts in history:
        hidden -= math.ceil(0.2 * hidden)
        assert counts["hidden.0.weight"] + counts["hidden.1.weight"] == hidden
        assert counts["out.weight"] == 1000  # output_fraction 0: never pruned


def test_pruned_weights_never_come_back():
    model = lenet()
    mask = M.ones(model)
    first = M.prune_step(M.magnitude_scores(model, mask), mask, 0.5, 0.5, "layerwise", "out.weight")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in first:
                p.copy_(torch.where(first[n], torch.zeros_like(p), torch.full_like(p, 9.0)))  # dead ones now "large"
    second = M.prune_step(M.magnitude_scores(model, first), first, 0.5, 0.5, "layerwise", "out.weight")
    for n in first:
        assert not (second[n] & ~first[n]).any()


def test_prune_to_density_hits_target_exactly():
    model = lenet()
    mask = M.ones(model)
    for scope in ("layerwise", "global"):
        new = M.prune_to_density(M.magnitude_scores(model, mask), mask, 0.05, 0.5, scope, "out.weight")
        hidden = int(new["hidden.0.weight"].sum() + new["hidden.1.weight"].sum())
        assert abs(hidden - 0.05 * (784 * 300 + 300 * 100)) <= 1
        assert int(new["out.weight"].sum()) == 500


def test_controls_keep_per_layer_counts_and_move_positions():
    model = lenet()
    mask = M.prune_step(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.8, 0.5, "layerwise", "out.weight")
    for transform in (M.shuffle_within_layers, M.random_like):
        new = transform(mask, generator(0, transform.__name__))
        for n in mask:
            assert int(new[n].sum()) == int(mask[n].sum())
            assert not torch.equal(new[n], mask[n])


def test_density_reports():
    mask = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True, True, True])}
    assert M.density(mask) == 5 / 8
    assert M.layer_densities(mask) == {"a": 0.25, "b": 1.0}


def test_exports_work_without_this_project(tmp_path):
    model = lenet(64)
    mask = M.prune_step(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.5, 0.1, "layerwise", "out.weight")
    x = torch.randn(5, 64)
    masked = lenet(64)
    masked.load_state_dict(M.plain_state_dict(model, mask))
    expected = masked(x)
    assert (masked.hidden[0].weight[~mask["hidden.0.weight"]] == 0).all()

    pruned = M.export_pytorch(lenet(64), mask)  # torch.nn.utils.prune keeps the mask during training
    assert torch.allclose(pruned(x), expected)
    assert torch.equal(pruned.hidden[0].weight_mask.bool(), mask["hidden.0.weight"])
