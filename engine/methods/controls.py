"""Controls: what a ticket must beat to count as a winning ticket.

reinit  - same mask, a fresh random initialisation, trained from step 0 (Frankle & Carbin).
random  - a new random mask with exactly the ticket's per-layer counts, from the ticket's start weights.
shuffle - the ticket's mask permuted within each layer, from the ticket's start weights
          (Frankle et al. 2021's sanity check; for unstructured masks it is distributed like `random`,
          it differs once masks carry structure).
inverted - as many weights per layer, taken from the positions the ticket pruned, from its start weights.
"""
from __future__ import annotations

from .. import masks as M
from ..registry import CONTROLS
from ..seeding import generator


@CONTROLS.register("reinit", "same mask, fresh initialisation")
def reinit(ctx, level, mask, start, start_step):
    return mask, ctx.fresh_weights("reinit", level), 0


@CONTROLS.register("random", "random mask with the same per-layer densities")
def random(ctx, level, mask, start, start_step):
    return M.random_like(mask, generator(ctx.config.seed, "random", level)), start, start_step


@CONTROLS.register("shuffle", "the ticket's mask shuffled within each layer")
def shuffle(ctx, level, mask, start, start_step):
    return M.shuffle_within_layers(mask, generator(ctx.config.seed, "shuffle", level)), start, start_step


@CONTROLS.register("inverted", "the ticket's pruned positions kept instead (same per-layer counts)")
def inverted(ctx, level, mask, start, start_step):
    return M.inverted_like(mask, generator(ctx.config.seed, "inverted", level)), start, start_step
