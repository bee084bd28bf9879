"""Magnitude pruning: iterative (IMP, with init / late / learning-rate rewinding) and one-shot."""
from __future__ import annotations

import math

from .. import masks as M
from ..registry import METHODS


@METHODS.register("imp", "iterative magnitude pruning with rewinding (--levels, --prune-fraction, --rewind)")
def imp(ctx) -> None:
    cfg = ctx.config.prune
    trained = ctx.dense
    for level in range(1, cfg.levels + 1):
        mask = M.prune_step(M.magnitude_scores(trained.weights, trained.mask), trained.mask, cfg.prune_fraction,
                            cfg.output_fraction, cfg.scope, ctx.output_name)
        start, start_step = ctx.rewind(trained.weights)
        trained = ctx.train_ticket(level, mask, start, start_step)


def imp_output_density(cfg) -> float:
    """The output layer's density where IMP would leave it on reaching `cfg.density` in the hidden layers,
    so one-shot (and early-bird) tickets compare with iterative ones layer by layer."""
    equivalent_levels = math.log(cfg.density) / math.log(1 - cfg.prune_fraction)
    return (1 - cfg.output_fraction) ** equivalent_levels


@METHODS.register("oneshot", "one magnitude prune of the trained dense net to --density, then rewind and train")
def oneshot(ctx) -> None:
    cfg = ctx.config.prune
    dense = ctx.dense
    mask = M.prune_to_density(M.magnitude_scores(dense.weights, dense.mask), dense.mask, cfg.density,
                              imp_output_density(cfg), cfg.scope, ctx.output_name)
    start, start_step = ctx.rewind(dense.weights)
    ctx.train_ticket(1, mask, start, start_step)
