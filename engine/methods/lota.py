"""LoTA: lottery ticket adaptation (Panda et al. 2024) - a sparse task vector found by a calibration fine-tune.

`--method lota --density 0.1` (sparsity 90%):
1. calibration: the run's dense fine-tune (level 0) gives theta_c; delta = theta_c - theta_base.
   (The paper calibrates with a shorter fine-tune; here the dense fine-tune doubles as the baseline.)
2. mask: the top --density of |delta| over the prunable weights, one global pool (exact count).
3. restart from theta_base and train only the masked entries: their gradients pass, every other prunable
   entry's gradient is zeroed (the same gradient masking as tickets, but the entries keep their base values
   instead of 0); the encoder's other parameters (embeddings, LayerNorms, biases) are frozen; a task head,
   new to the task, trains in full. Stored: the mask (the trainable entries) and the full weights.
   Adam's coupled weight decay would move the frozen entries, so --weight-decay must be 0.

Sequential tasks (`sequential`) and task-vector merging (`merge`) are experiments over two tasks built on the
same pieces (`lota_mask`, `train_sparse`), run by bench/science_foundation.py and the tests.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import masks as M
from .. import trainer
from ..errors import ConfigError
from ..registry import METHODS, MethodSpec
from ..runner import MaskSearch


def lota_mask(base: dict, calibrated: dict, alive: M.Mask, density: float) -> M.Mask:
    """Top `density` of |theta_c - theta_base| over the entries `alive` marks (all prunable weights, or the
    complement of an earlier task's mask), one global pool, exact count: round(density x prunable)."""
    scores = {n: (calibrated[n] - base[n]).abs() for n in alive}
    n_keep = min(M.kept(alive), round(density * M.total(alive)))
    return M.keep_global(scores, alive, n_keep)


class SparseAdaptation(MaskSearch):
    """Train only the masked entries from the start weights (nothing zeroed); freeze the encoder's other
    parameters; heads (parameters not under `frozen_prefix`) train in full."""

    def __init__(self, mask: M.Mask, frozen_prefix: str = "bert."):
        self.mask, self.frozen_prefix = mask, frozen_prefix

    def prepare(self, model: nn.Module):
        for n, p in model.named_parameters():
            if n.startswith(self.frozen_prefix) and n not in self.mask:
                p.requires_grad_(False)
        return self.mask

    def finish(self, model: nn.Module) -> M.Mask:
        for p in model.parameters():
            p.requires_grad_(True)
        return self.mask


def lota(ctx) -> None:
    cfg = ctx.config.prune
    stored = ctx.store.level_record("ticket", 1)
    mask = (ctx.store.load_level("ticket", 1, ctx.device)[0] if stored
            else lota_mask(ctx.init_weights, ctx.dense.weights, ctx.dense.mask, cfg.density))
    ctx.train_ticket(1, mask, ctx.init_weights, 0, search=SparseAdaptation(mask))


def made_by_lota(config) -> bool:
    """Whether a stored run's config is a lota run (what the lota-tasks analysis reads)."""
    return config.prune.method == "lota"


def check(config, model) -> None:
    if config.train.weight_decay != 0:
        raise ConfigError("train.weight_decay", config.train.weight_decay, "lota needs 0: coupled weight decay would "
                          "move the weights outside the sparse task vector")


METHODS.register("lota", "lottery ticket adaptation: the top --density of |fine-tuned - base| from the dense "
                 "fine-tune, then only those entries trained from the base weights (Panda et al. 2024)")(
    MethodSpec(lota, scopes=("global",), trains_controls=False, check=check,
               unread={**dict.fromkeys(("prune.prune_fraction", "prune.output_fraction"),
                                       "keeps the top --density of |fine-tuned - base| in one step"),
                       "prune.rewind": "trains its ticket from the base weights at step 0"},
               search_cost=lambda summary, level, store: (summary["dense"]["iterations"],
                                                          summary["dense"]["train_seconds"])))


# ---------------------------------------------------------------- two-task experiments
def train_sparse(model: nn.Module, data, cfg, mask: M.Mask | None, *, seed: int, cancel=None) -> trainer.TrainResult:
    """Fine-tune `model` in place: dense (mask None) or only `mask`'s entries (SparseAdaptation). `cancel` (a
    threading.Event) stops it at its next step (RunCancelled)."""
    if mask is None:
        return trainer.train(model, data, cfg, None, seed=seed, cancel=cancel)
    search = SparseAdaptation(mask)
    grad_mask = search.prepare(model)
    try:
        return trainer.train(model, data, cfg, grad_mask, seed=seed, cancel=cancel)
    finally:
        search.finish(model)


def with_encoder(model: nn.Module, encoder_state: dict) -> nn.Module:
    """A copy of `model` (its head) with the encoder weights `encoder_state` ({bert.* name: tensor})."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        params = dict(out.named_parameters())
        for n, v in encoder_state.items():
            params[n].copy_(v)
    return out


def encoder_state(model: nn.Module) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("bert.")}


def accuracy(model: nn.Module, split) -> float:
    return trainer.evaluate(model, split)[1]


@dataclass
class TaskResult:
    model: nn.Module         # the fine-tuned model (its head and encoder)
    mask: M.Mask | None      # the sparse task vector's support (None: dense)


def _no_report(what: str) -> None:
    pass


def fine_tune(model: nn.Module, data, cfg, density: float | None, *, seed: int, alive: M.Mask | None = None,
              calibrated: nn.Module | None = None, cancel=None, on_training=_no_report) -> TaskResult:
    """Dense (`density` None) or LoTA fine-tuning of a copy of `model`. LoTA calibrates with a dense fine-tune
    (or reuses `calibrated`), keeps the top `density` of |delta| among `alive` (default: every prunable entry)
    and trains only those from `model`'s weights. `on_training(what)` is called as each training starts (a long
    experiment's progress); `cancel` stops the training under way at its next step."""
    if density is None:
        tuned = copy.deepcopy(model)
        on_training("dense fine-tune")
        train_sparse(tuned, data, cfg, None, seed=seed, cancel=cancel)
        return TaskResult(tuned, None)
    if calibrated is None:
        calibrated = fine_tune(model, data, cfg, None, seed=seed, cancel=cancel,
                               on_training=lambda what: on_training("LoTA calibration (dense fine-tune)")).model
    alive = alive if alive is not None else M.ones(model)
    mask = lota_mask(dict(model.named_parameters()), dict(calibrated.named_parameters()), alive, density)
    tuned = copy.deepcopy(model)
    on_training("LoTA sparse fine-tune")
    train_sparse(tuned, data, cfg, mask, seed=seed, cancel=cancel)
    return TaskResult(tuned, mask)


def sequential(model_a: nn.Module, data_a, model_b: nn.Module, data_b, cfg, density: float, *, seed: int,
               cfg_b=None, dense_a: TaskResult | None = None, lota_a: TaskResult | None = None, cancel=None,
               on_training=_no_report) -> dict:
    """Task A then task B, LoTA (B on the complement of A's mask) vs dense fine-tuning; returns task A's test
    accuracy before and after B (forgetting = before - after) and B's. `model_a`/`model_b`: the base
    encoder with each task's head; `cfg_b`: task B's training (default `cfg`); `dense_a`/`lota_a`: task A's
    dense and LoTA fine-tunes when the caller already has them (not modified), else trained here. `cancel`,
    `on_training`: as `fine_tune`'s, for each of its trainings."""
    cfg_b = cfg if cfg_b is None else cfg_b
    out = {}
    on_a = lambda what: on_training(f"task A {what}")  # noqa: E731
    dense_a = dense_a if dense_a is not None else fine_tune(model_a, data_a, cfg, None, seed=seed, cancel=cancel,
                                                            on_training=on_a)
    for kind in ("dense", "lota"):
        if kind == "dense":
            a = dense_a
        else:
            a = lota_a if lota_a is not None else fine_tune(model_a, data_a, cfg, density, seed=seed,
                                                            calibrated=dense_a.model, cancel=cancel, on_training=on_a)
        start_b = with_encoder(model_b, encoder_state(a.model))
        on_b = lambda what, kind=kind: on_training(f"task B after A's {kind}: {what}")  # noqa: E731
        if kind == "dense":
            b = fine_tune(start_b, data_b, cfg_b, None, seed=seed, cancel=cancel, on_training=on_b)
        else:
            free = {n: ~m for n, m in a.mask.items()}  # task B may only use what task A left untouched
            b = fine_tune(start_b, data_b, cfg_b, density, seed=seed, alive=free, cancel=cancel, on_training=on_b)
        a_after = with_encoder(a.model, encoder_state(b.model))
        before, after = accuracy(a.model, data_a.test), accuracy(a_after, data_a.test)
        out[kind] = {"a_before": before, "a_after": after, "forgetting": before - after,
                     "b": accuracy(b.model, data_b.test)}
        if kind == "lota":
            out[kind]["overlap"] = sum(int((a.mask[n] & b.mask[n]).sum()) for n in a.mask)
    return out


SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5)


def merge(base: nn.Module, tuned_a: nn.Module, data_a, tuned_b: nn.Module, data_b, scales=SCALES) -> dict:
    """Task arithmetic: encoder = base + lam (tau_A + tau_B), tau = tuned - base over the encoder, each task
    read with its own fine-tuned head; lam chosen by the mean validation accuracy over both tasks. Returns
    lam and both tasks' test accuracies (and each tuned model's own, for reference). `base`: any model with
    the base encoder."""
    base = encoder_state(base)
    tau_a = {n: v - base[n] for n, v in encoder_state(tuned_a).items()}
    tau_b = {n: v - base[n] for n, v in encoder_state(tuned_b).items()}
    best = None
    for lam in scales:
        merged = {n: base[n] + lam * (tau_a[n] + tau_b[n]) for n in base}
        ma, mb = with_encoder(tuned_a, merged), with_encoder(tuned_b, merged)
        val = (accuracy(ma, data_a.val) + accuracy(mb, data_b.val)) / 2
        if best is None or val > best[0]:
            best = (val, lam, ma, mb)
    _, lam, ma, mb = best
    return {"scale": lam, "a": accuracy(ma, data_a.test), "b": accuracy(mb, data_b.test),
            "a_alone": accuracy(tuned_a, data_a.test), "b_alone": accuracy(tuned_b, data_b.test)}
