"""Magnitude pruning: iterative (IMP, with init / late / learning-rate rewinding) and one-shot.

Both prune in the configured pattern (--pattern unstructured, channel or nm, then --refill; see
engine.structured).
"""
from __future__ import annotations

import math

from .. import masks as M
from ..registry import METHODS
from ..structured import PATTERNS, Pattern, hidden_density, imp_levels


@METHODS.register("imp", "iterative magnitude pruning with rewinding (--levels, --prune-fraction, --rewind)")
def imp(ctx) -> None:
    cfg = ctx.config.prune
    pattern = Pattern(cfg, ctx.model_with(ctx.init_weights))
    trained = ctx.dense
    for level in range(1, imp_levels(cfg) + 1):
        mask = pattern.prune_step(M.magnitude_scores(trained.weights, trained.mask), trained.mask, trained.weights,
                                  level)
        start, start_step = ctx.rewind(trained.weights)
        trained = ctx.train_ticket(level, mask, start, start_step)


def imp_output_density(cfg) -> float:
    """The output layer's density where IMP would leave it on reaching the target density in the hidden
    layers, so one-shot (and early-bird) tickets compare with iterative ones layer by layer."""
    if cfg.pattern == "nm":  # IMP steps M:M -> N:M one kept weight per group per level
        equivalent_levels = imp_levels(cfg)
    else:
        equivalent_levels = math.log(hidden_density(cfg)) / math.log(1 - cfg.prune_fraction)
    return (1 - cfg.output_fraction) ** equivalent_levels


@METHODS.register("oneshot", "one magnitude prune of the trained dense net to --density, then rewind and train")
def oneshot(ctx) -> None:
    cfg = ctx.config.prune
    dense = ctx.dense
    pattern = Pattern(cfg, ctx.model_with(ctx.init_weights))
    mask = pattern.prune_to_density(M.magnitude_scores(dense.weights, dense.mask), dense.mask, dense.weights,
                                    hidden_density(cfg), imp_output_density(cfg))
    start, start_step = ctx.rewind(dense.weights)
    ctx.train_ticket(1, mask, start, start_step)


imp.patterns = oneshot.patterns = PATTERNS  # what PruneConfig accepts for --pattern and --refill
imp.refills = oneshot.refills = True
