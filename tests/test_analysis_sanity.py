"""Sanity checks: every control keeps the ticket's per-layer counts, and the analysis trains and stores them."""
import json

import pytest
import torch

from engine import masks as M
from engine import ConfigError, run
from engine.analysis import run_sanity
from engine.registry import CONTROLS
from engine.store import RunStore

from conftest import tiny


def _ticket():
    g = torch.Generator().manual_seed(0)
    # a sparse hidden layer, a middling one, and an output layer keeping more than half
    densities = {"h0.weight": ((40, 64), 0.05), "h1.weight": ((20, 40), 0.5), "out.weight": ((10, 20), 0.9)}
    return {n: M.keep_top(torch.rand(shape, generator=g), torch.ones(shape, dtype=torch.bool),
                          round(d * torch.Size(shape).numel())) for n, (shape, d) in densities.items()}


def test_inverted_mask_takes_pruned_positions_first():
    mask = _ticket()
    inv = M.inverted_like(mask, torch.Generator().manual_seed(2))
    for n, m in mask.items():
        k, size = int(m.sum()), m.numel()
        assert int(inv[n].sum()) == k
        assert int((inv[n] & m).sum()) == max(0, 2 * k - size), n  # the unavoidable minimum
        if 2 * k > size:
            assert bool(inv[n][~m].all())  # every pruned position is used before any kept one


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_empty_and_full_layers_stay_empty_and_full(density):
    mask = {"w": torch.full((6, 5), bool(density))}
    assert torch.equal(M.inverted_like(mask, torch.Generator().manual_seed(0))["w"], mask["w"])


def test_sanity_analysis_trains_every_control_at_exact_per_layer_density(tmp_path):
    runs = tmp_path / "runs"
    s = run(tiny(), runs_dir=runs)
    result = run_sanity(runs, s["run_id"])
    assert [r["level"] for r in result["rows"]] == [1, 2]
    assert set(result["controls"]) == set(CONTROLS.names()) >= {"reinit", "random", "shuffle", "inverted"}
    store = RunStore(runs, s["run_id"])
    for level in (1, 2):
        ticket_mask, _ = store.load_level("ticket", level)
        for name in CONTROLS.names():
            mask, weights = store.load_level(name, level)
            assert M.kept(mask) == M.kept(ticket_mask), (name, level)
            if name in ("reinit", "random", "shuffle", "inverted"):  # start-magnitude keeps the total only
                assert {n: int(m.sum()) for n, m in mask.items()} == {n: int(m.sum()) for n, m in ticket_mask.items()}
            for n, keep in mask.items():
                assert (weights[n][~keep] == 0).all()
    row = result["rows"][1]
    assert row["reinit"] == s["controls"]["reinit"][1]["test_accuracy"]  # the run's own control, reused
    assert row["inverted_delta"] == pytest.approx(row["inverted"] - row["ticket"])
    stored = json.loads((store.dir / "analyses" / "sanity.json").read_text())
    assert stored["rows"] == result["rows"]


def test_sanity_rejects_unknown_levels(tmp_path):
    runs = tmp_path / "runs"
    s = run(tiny(), runs_dir=runs)
    with pytest.raises(Exception, match="completed ticket levels"):
        run_sanity(runs, s["run_id"], levels=[5])


def test_sanity_refuses_strong_tickets(tmp_path):
    s = run(tiny(**{"prune.method": "edgepopup", "prune.density": 0.5, "train.epochs": 1}), runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="never trained"):
        run_sanity(tmp_path, s["run_id"])
