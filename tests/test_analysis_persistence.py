"""Neural persistence: gudhi's numbers against an independent union-find (Kruskal) implementation."""
import json
import math

import numpy as np
import pytest
import torch

import engine
from engine import models
from engine.analysis import layer_persistence, network_persistence, run_persistence
from engine.config import ModelConfig

from conftest import tiny


def kruskal_persistences(w: np.ndarray, global_max: float) -> np.ndarray:
    """Independent reference: the n - 1 merge persistences 1 - |w_e|/W of a maximum spanning tree of the
    complete bipartite graph, by Kruskal with union-find (strongest edge first)."""
    n_out, n_in = w.shape
    parent = list(range(n_in + n_out))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    strength = np.abs(w).astype(np.float64) / global_max
    deaths = []
    for flat in np.argsort(-strength, axis=None, kind="stable"):
        o, i = divmod(int(flat), n_in)
        ru, rv = find(i), find(n_in + o)
        if ru != rv:
            parent[ru] = rv
            deaths.append(1.0 - strength[o, i])
    assert len(deaths) == n_in + n_out - 1
    return np.sort(np.array(deaths))


def reference_np(w: np.ndarray, global_max: float) -> float:
    return math.sqrt(float(np.sum(kruskal_persistences(w, global_max) ** 2)) + 1.0)


def _layer(shape, seed, pruned=0.0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape)
    if pruned:
        w[rng.random(shape) < pruned] = 0.0
    return w


@pytest.mark.parametrize("shape, pruned", [((5, 7), 0.0), ((1, 12), 0.0), ((20, 1), 0.0), ((30, 40), 0.0),
                                           ((30, 40), 0.8), ((64, 16), 0.97), ((100, 50), 0.5)])
def test_gudhi_agrees_with_union_find(shape, pruned):
    w = _layer(shape, seed=sum(shape), pruned=pruned)
    global_max = 1.5 * np.abs(w).max()  # another layer holds the network's largest weight
    got = layer_persistence(torch.tensor(w), global_max)
    ref = kruskal_persistences(w, global_max)
    assert got["pairs"].shape == (sum(shape) - 1, 2)
    assert np.all(got["pairs"][:, 0] == 0.0)
    assert np.abs(np.sort(got["pairs"][:, 1] - got["pairs"][:, 0]) - ref).max() < 1e-9
    assert got["np"] == pytest.approx(reference_np(w, global_max), abs=1e-9)
    assert got["normalised"] == pytest.approx(got["np"] / math.sqrt(sum(shape) - 1), abs=1e-12)


def test_all_equal_weights_give_layer_np_one():
    w = np.full((6, 9), -0.3)
    got = layer_persistence(w, global_max=0.3)
    assert got["np"] == pytest.approx(1.0, abs=1e-12)  # every merge is instant; only the essential class
    assert got["normalised"] == pytest.approx(1 / math.sqrt(6 + 9 - 1))


def test_a_fully_pruned_unit_joins_last_and_adds_one():
    w = _layer((8, 10), seed=3)
    w[2, :] = 0.0  # output unit 2 lost every input
    got = layer_persistence(w, np.abs(w).max())
    deaths = np.sort(got["pairs"][:, 1])
    assert deaths[-1] == 1.0 and deaths[-2] < 1.0


def test_network_persistence_normalises_by_the_global_max_and_averages_layers():
    model = models.build(ModelConfig(width=0.1), (1, 8, 8), 10, seed=0)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.3
            for n, p in model.named_parameters() if n.endswith("weight")}
    got = network_persistence(model, mask)
    weights = {n: (p.detach() * mask[n]).double().numpy() for n, p in model.named_parameters() if n in mask}
    global_max = max(np.abs(w).max() for w in weights.values())
    assert list(got["layers"]) == ["hidden.0.weight", "hidden.1.weight", "out.weight"]
    for n, w in weights.items():
        assert got["layers"][n]["np"] == pytest.approx(reference_np(w, global_max), abs=1e-9)
        assert got["layers"][n]["shape"] == list(w.shape)
    assert got["network"] == pytest.approx(np.mean([r["normalised"] for r in got["layers"].values()]))
    # a bare state dict with the mask gives the same numbers
    assert network_persistence(model.state_dict(), mask)["network"] == got["network"]


def test_conv_layers_are_channel_graphs_weighted_by_the_strongest_kernel_entry():
    conv = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    got = layer_persistence(conv, float(conv.abs().max()))
    by_channel = conv.abs().amax(dim=(2, 3)).double().numpy()
    assert got["np"] == pytest.approx(reference_np(by_channel, float(conv.abs().max())), abs=1e-9)
    assert got["pairs"].shape == (4 + 3 - 1, 2)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="global_max"):
        layer_persistence(np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="below"):
        layer_persistence(np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="zero"):
        network_persistence({"fc.weight": torch.zeros(3, 4)})


def test_run_persistence_covers_every_level_and_is_stored(runs_dir):
    summary = engine.run(tiny(**{"prune.levels": 2, "prune.controls": (), "model.width": 0.2}),
                         runs_dir=runs_dir)
    result = run_persistence(runs_dir, summary["run_id"])
    assert [e["level"] for e in result["levels"]] == [0, 1, 2]
    assert result["levels"][0]["density"] == 1.0
    for entry in result["levels"]:
        assert 0 < entry["network"] and set(entry["layers"]) == {"hidden.0.weight", "hidden.1.weight", "out.weight"}
        layer = entry["layers"]["hidden.1.weight"]
        assert len(layer["pairs"]) == sum(layer["shape"]) - 1
    path = runs_dir / summary["run_id"] / "analyses" / "persistence.json"
    assert json.loads(path.read_text()) == result
    assert run_persistence(runs_dir, summary["run_id"]) == result  # stored levels are reused as they are
