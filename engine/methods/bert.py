"""BERT tickets (Chen et al. 2020) and their transfer, for any model, pre-trained transformers first.

- `bert-imp`: iterative magnitude pruning that removes --prune-fraction of the ORIGINAL prunable weights per
  level (level k keeps 1 - k x fraction: 90%, 80%, ... at 0.1, the paper's schedule), ranked by |w| of the
  last level's trained weights over one global pool (--scope global, the paper's) or within each layer
  (layerwise), survivors rewound per --rewind: `init` is the pre-trained weights for a pre-trained model.
  A transformer's mask covers its attention and FFN weights only (engine.transformer).
- `transfer`: fine-tune a mask found by another run (--mask-from its directory or a mask .safetensors file,
  --mask-level) on this run's task, from this run's theta_0, beside the dense fine-tune (level 0) and the
  controls. The transfer matrix is one such run per (source ticket, target task).
- control `start-magnitude`: one-shot global magnitude pruning of the ticket's start weights to exactly its
  number of kept weights (for a pre-trained model: magnitude pruning of the pre-trained weights, the paper's
  "standard pruning" baseline); `random` (same per-layer densities) is the other control to use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import masks as M
from ..config import option, validate
from ..errors import ConfigError
from ..registry import CONTROLS, METHODS, MethodSpec


# ---------------------------------------------------------------- bert-imp
def keep_count(cfg, level: int, size: int) -> int:
    return round((1 - level * cfg.prune_fraction) * size)


def bert_imp(ctx) -> None:
    cfg = ctx.config.prune
    trained = ctx.dense
    for level in range(1, cfg.levels + 1):
        scores = M.magnitude_scores(trained.weights, trained.mask)
        if cfg.scope == "global":
            mask = M.keep_global(scores, trained.mask, keep_count(cfg, level, M.total(trained.mask)))
        else:
            mask = M.keep_per_layer(scores, trained.mask, {n: keep_count(cfg, level, m.numel())
                                                           for n, m in trained.mask.items()})
        start, start_step = ctx.rewind(trained.weights)
        trained = ctx.train_ticket(level, mask, start, start_step)


def check_levels(config, model) -> None:
    cfg = config.prune
    if cfg.levels * cfg.prune_fraction >= 1:
        raise ConfigError("prune.levels", cfg.levels, f"x --prune-fraction {cfg.prune_fraction} of the original "
                          f"weights must stay below 1 (at most {math.ceil(1 / cfg.prune_fraction) - 1} levels)")


def bert_imp_cost(summary: dict, level: dict, store) -> tuple[int, float]:
    """A level's mask cost the dense training and every earlier level's (as IMP's)."""
    trainings = [summary["dense"]] + [lv for lv in summary["levels"] if lv["level"] < level["level"]]
    return sum(t["iterations"] - t["start_step"] for t in trainings), sum(t["train_seconds"] for t in trainings)


def bert_imp_levels_to_reach(cfg, density: float) -> int:
    return max(1, min(math.ceil((1 - density) / cfg.prune_fraction), math.ceil(1 / cfg.prune_fraction) - 1))


METHODS.register("bert-imp", "IMP removing --prune-fraction of the ORIGINAL weights per level, --scope global, "
                 "rewinding to theta_0 = the pre-trained weights (BERT tickets, Chen et al. 2020)")(
    MethodSpec(bert_imp, scopes=("global", "layerwise"), levels=lambda config: config.prune.levels,
               search_cost=bert_imp_cost, levels_to_reach=bert_imp_levels_to_reach, check=check_levels,
               unread={"prune.output_fraction": "removes --prune-fraction of the original weights from every layer "
                                                "alike, the output layer too"}))


# ---------------------------------------------------------------- transfer
@dataclass(frozen=True)
class TransferOptions:
    mask_from: str = option("", "transfer: the mask to fine-tune: a run directory (its ticket at --mask-level) "
                            "or a mask .safetensors file")
    mask_level: int = option(-1, "transfer: level of the --mask-from run's ticket (-1: its last level)", lo=-1)

    def __post_init__(self):  # like every method's options: --mask-level -2 was let through to the run
        validate(self, "prune.")


def mask_file(options: TransferOptions) -> Path:
    """The mask file --mask-from / --mask-level name; one-line errors for what is not there."""
    if not options.mask_from:
        raise ConfigError("prune.mask_from", options.mask_from, "transfer needs --mask-from RUN_DIR or MASK.safetensors")
    path = Path(options.mask_from).expanduser()
    if path.is_file():
        return path
    levels = path / "levels" / "ticket"
    if not levels.is_dir():
        raise ConfigError("prune.mask_from", options.mask_from, "is neither a run directory nor a mask file (a run's "
                          "directory is the runs dir and its id: runs/RUN_ID)")
    done = sorted(int(p.name) for p in levels.iterdir() if p.name.isdigit() and (p / "record.json").exists()
                  and int(p.name) > 0)
    if not done:
        raise ConfigError("prune.mask_from", options.mask_from, "has no completed ticket level")
    level = done[-1] if options.mask_level == -1 else options.mask_level
    if level not in done:
        raise ConfigError("prune.mask_level", options.mask_level, f"completed levels: {', '.join(map(str, done))}")
    return levels / f"{level:03d}" / "mask.safetensors"


def load_transfer_mask(options: TransferOptions, model, device="cpu") -> M.Mask:
    """The source mask, checked against this model's prunable weights (same names and shapes)."""
    from ..store import load_tensors

    mask = load_tensors(mask_file(options), device)
    params = dict(model.named_parameters())
    wanted = M.prunable(model)
    if sorted(mask) != sorted(wanted) or any(tuple(mask[n].shape) != tuple(params[n].shape) for n in wanted):
        raise ConfigError("prune.mask_from", options.mask_from, "its mask does not cover this model's prunable "
                          "weights (different architecture?)")
    return {n: mask[n].bool() for n in wanted}


def transfer(ctx) -> None:
    mask = load_transfer_mask(ctx.options, ctx.model_with(ctx.init_weights), ctx.device)
    start, start_step = ctx.rewind(ctx.dense.weights)
    ctx.train_ticket(1, mask, start, start_step)


METHODS.register("transfer", "fine-tune a stored ticket (--mask-from, --mask-level) on this run's task from "
                 "theta_0: one cell of a transfer matrix")(
    MethodSpec(transfer, options=TransferOptions,
               check=lambda config, model: load_transfer_mask(config.prune.method_options(), model),
               unread=dict.fromkeys(("prune.density", "prune.scope", "prune.prune_fraction", "prune.output_fraction"),
                                    "fine-tunes the --mask-from mask as it is")))


# ---------------------------------------------------------------- the start-magnitude control
@CONTROLS.register("start-magnitude", "one-shot global magnitude of the ticket's start weights, as many kept "
                   "(pre-trained models: magnitude pruning of the pre-trained weights)")
def start_magnitude(ctx, level, mask, start, start_step):
    full = {n: torch.ones_like(m, dtype=torch.bool) for n, m in mask.items()}
    return M.keep_global(M.magnitude_scores(start, mask), full, M.kept(mask)), start, start_step


# ---------------------------------------------------------------- the transfer matrix, from stored summaries
def transfer_matrix(summaries: list[dict], runs_dir) -> dict:
    """Cells (source task of the ticket, target task) over the stored `bert-imp` runs (a ticket on its own task:
    its last level) and `transfer` runs (another run's ticket, named by --mask-from), each with the target's
    dense fine-tune of the same run and seed. Per cell: ticket and dense test accuracy, mean and std over seeds,
    the ticket's density, and "matching" = the ticket's mean at least the dense mean minus one dense std."""
    import json
    import statistics

    def source_of(s: dict) -> str:
        if s["method"] == "bert-imp":
            return s["dataset"]
        path = Path(s["config"].get("prune", {}).get("mask_from", "")).expanduser()
        if not path.is_absolute():
            path = Path(runs_dir) / path.name if not path.exists() else path
        try:
            return json.loads((path / "summary.json").read_text())["dataset"]
        except (OSError, ValueError, KeyError):
            return path.name or "?"

    groups: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        if s.get("method") not in ("bert-imp", "transfer") or not s.get("levels") or not s.get("dense"):
            continue
        groups.setdefault((source_of(s), s["dataset"]), []).append(s)

    def ms(xs):
        return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    cells = []
    for (source, target), runs in sorted(groups.items()):
        ticket = ms([r["levels"][-1]["test_accuracy"] for r in runs])
        dense = ms([r["dense"]["test_accuracy"] for r in runs])
        cells.append({"source": source, "target": target, "n": len(runs),
                      "density": statistics.mean(r["levels"][-1]["density"] for r in runs),
                      "ticket_mean": ticket[0], "ticket_std": ticket[1], "dense_mean": dense[0], "dense_std": dense[1],
                      "matching": ticket[0] >= dense[0] - dense[1]})
    return {"cells": cells, "sources": sorted({c["source"] for c in cells}),
            "targets": sorted({c["target"] for c in cells})}
