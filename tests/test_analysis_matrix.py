"""Every analysis on every kind of stored run: each works or refuses in one line (exit 2) naming the run, the
analysis and why, and a refusal leaves nothing half-written in the run's folder."""
import pytest

from engine import masks as M
from engine import models
from engine.analysis.earlybird_tracker import magnitude_rule
from engine.config import ModelConfig


def test_magnitude_rule_at_erk_scope_keeps_erk_layer_densities():
    # the earlybird-replay rule of a --scope erk run: the hidden layers at ERK densities (not one global pool),
    # the output layer at its own density
    model = models.build(ModelConfig(), (64,), 10, seed=0)
    mask = magnitude_rule(0.2, 0.5, "erk")(model)
    hidden = {n: m for n, m in M.ones(model).items() if n != "out.weight"}
    erk = M.erk_densities(hidden, 0.2)
    assert len(set(round(d, 3) for d in erk.values())) > 1  # ERK differs from uniform here: the test can fail
    for n, m in hidden.items():
        assert int(mask[n].sum()) == round(erk[n] * m.numel()), n
    assert int(mask["out.weight"].sum()) == round(0.5 * mask["out.weight"].numel())


def test_prune_to_density_refuses_an_unknown_scope():
    model = models.build(ModelConfig(), (64,), 10, seed=0)
    dense = M.ones(model)
    with pytest.raises(ValueError, match="scope"):
        M.prune_to_density(M.magnitude_scores(model, dense), dense, 0.2, 0.5, "erdos", "out.weight")
