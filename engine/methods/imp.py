"""Magnitude pruning: iterative (IMP, with init / late / learning-rate rewinding) and one-shot.

Both prune in the configured pattern (--pattern unstructured, channel or nm, then --refill; see
engine.structured).
"""
from __future__ import annotations

import math

from .. import masks as M
from ..config import PATTERNS, parse_nm
from ..registry import METHODS, MethodSpec
from ..store import RunStore
from ..structured import Pattern, hidden_density, imp_levels


def imp(ctx) -> None:
    cfg = ctx.config.prune
    pattern = Pattern(cfg, ctx.model_with(ctx.init_weights))
    trained = ctx.dense
    for level in range(1, imp_levels(cfg) + 1):
        mask = pattern.imp_level(M.magnitude_scores(trained.weights, trained.mask), trained.mask, trained.weights,
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


def oneshot(ctx) -> None:
    cfg = ctx.config.prune
    dense = ctx.dense
    pattern = Pattern(cfg, ctx.model_with(ctx.init_weights))
    mask = pattern.one_shot(M.magnitude_scores(dense.weights, dense.mask), dense.mask, dense.weights,
                                    hidden_density(cfg), imp_output_density(cfg))
    start, start_step = ctx.rewind(dense.weights)
    ctx.train_ticket(1, mask, start, start_step)



def imp_search_cost(summary: dict, level: dict, store: RunStore) -> tuple[int, float]:
    """An IMP level's mask cost the dense training and every earlier level's."""
    trainings = [summary["dense"]] + [lv for lv in summary["levels"] if lv["level"] < level["level"]]
    return sum(t["iterations"] - t["start_step"] for t in trainings), sum(t["train_seconds"] for t in trainings)


def dense_search_cost(summary: dict, level: dict, store: RunStore) -> tuple[int, float]:
    """A mask pruned from the trained dense net cost the dense training."""
    return summary["dense"]["iterations"], summary["dense"]["train_seconds"]


def levels_to_reach(cfg, density: float) -> int:
    """IMP levels until --prune-fraction per level reaches `density` (at most 100). Under --pattern nm a level
    keeps one weight fewer per group of M and no fraction is read: its M - N levels step through every N:M the
    pattern reaches (the leaderboard reads each target off the nearest)."""
    if cfg.pattern == "nm":
        n, m = parse_nm(cfg.nm)
        return min(100, m - n)
    return min(100, math.ceil(math.log(density) / math.log(1 - cfg.prune_fraction)))


# Under --pattern nm the hidden layers follow --nm alone (an IMP level keeps one weight fewer per group of M,
# one-shot keeps N of every M): no --prune-fraction or --density is read. The output layer is still pruned at
# --output-fraction per level (one-shot: as IMP's levels would), so that one is read.
NM = {"prune.pattern": ("nm",)}
ONE_FEWER = "keeps one weight fewer per group of --nm's M in its hidden layers each level under --pattern nm"
N_OF_M = "keeps --nm's N of every M weights in its hidden layers under --pattern nm"

METHODS.register("imp", "iterative magnitude pruning with rewinding (--levels, --prune-fraction, --rewind)")(
    MethodSpec(imp, patterns=tuple(PATTERNS), refills=True, levels=lambda config: imp_levels(config.prune),
               search_cost=imp_search_cost, levels_to_reach=levels_to_reach,
               unread_under={"prune.prune_fraction": (NM, ONE_FEWER)}))
METHODS.register("oneshot", "one magnitude prune of the trained dense net to --density, then rewind and train")(
    MethodSpec(oneshot, patterns=tuple(PATTERNS), refills=True, search_cost=dense_search_cost,
               # under nm its output layer is pruned as IMP's min(--levels, M - N) levels to N:M would
               read_under={"prune.levels": NM},
               unread_under={"prune.density": (NM, N_OF_M), "prune.prune_fraction": (NM, N_OF_M)}))
