"""Train K models of one architecture as ONE computation: the batched trainer.

Small models waste a CPU (or a GPU) one at a time: every step of a 64-32-10 MLP is a handful of tiny
kernels whose cost is mostly Python and dispatch. Here the K members' parameters are stacked along a new
leading axis ([K, *shape]) and one step trains them all: the forward is the architecture's own module run
through `torch.func.functional_call` under `torch.func.vmap` (so any Linear/Conv model works unchanged,
registry or user-made), the loss is the sum of the members' mean losses (members share no parameter, so
each one's gradient is exactly its own), and the optimizer update is elementwise over the stack.

Why vmap and not a hand-written grouped `bmm`: measured on this 2-core CPU (`python bench/zoo_speed.py
--forward`), one training step of 64 digits MLPs 64-64-32-10 (batch 60) costs the same both ways (best of 15
repeats, under contention from other processes: vmap + functional_call 13.1 ms, grouped baddbmm 13.1 ms),
and vmap also batches convolutions (Conv-2/4/6) and users' own modules with no second code path per layer
type. So there is one path: vmap.

What each member gets, exactly as `engine.trainer.train` would give it alone (tests/test_batched.py trains
both ways and compares the weights to float tolerance):

- its own start weights, mask, data-order seed and start step (`Member`); the data order of epoch e is
  `torch.randperm(n, generator(seed, "order", e))`, the trainer's own rule, so a member reproduces the
  trajectory of `train(model, data, cfg, mask, seed=seed, start_step=start_step)`;
- the configured learning-rate schedule (`trainer.lr_at`; members at one global step share it, since the
  schedule depends on the step only), batch size, evaluation points (every `eval_every` steps and at the
  end, validation and test), early-stopping record (the iteration of lowest validation loss);
- Adam or SGD (momentum, coupled L2 weight decay) with torch's update rules, written out here because one
  `torch.optim` step counter cannot serve members that start at different steps. Masks: a pruned entry's
  gradient is zeroed before the update, so its weight stays exactly 0 and its moments/momentum stay 0 (its
  weight decay is of a zero weight: zero).

Members that start later (a late-rewound ticket beside a reinit control that starts at 0) simply sit out the
steps before their start: no forward contribution to their gradient, no update, no optimizer state.

Not supported (one-line `Unsupported`): models with BatchNorm (their running statistics are buffers that
vmap cannot update in place per member here; train those one by one with engine.trainer), mask searches
(dynamic sparsity, strong tickets) and loss penalties: those change a member's mask while it trains.

API (the zoo, the scale work's ticket + controls and seeds, the stability work's instability copies):

    members = [Member(init=state_dict, mask=mask_or_None, seed=s, start_step=k), ...]
    out = train_batched(model, data, cfg, members, on_eval=..., cancel=...)
    out.results[i]          # engine.trainer.TrainResult of member i (final metrics, early stop, curve)
    out.weights             # {name: [K, *shape]} final weights, pruned entries exactly 0
    out.member(i)           # member i's state dict
    loss, acc = evaluate_batched(model, stacked_weights, split)   # [K] tensors, for any stack
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .config import TrainConfig
from .data import Dataset, Split
from .errors import ConfigError, RunCancelled, Unsupported
from .masks import Mask
from .seeding import generator
from .trainer import TrainResult, lr_at, steps_per_epoch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which engine.trainer uses
ADAM_EPS = 1e-8
EVAL_ELEMENTS = 1 << 14    # members x examples per evaluation chunk: bounds the activations held at once


@dataclass
class Member:
    """One network of a batch: where it starts and how it is fed.

    `init`: its start weights (a state dict of the architecture; masked entries are zeroed here, as the
    runner's `masks.apply` does), `mask`: None for dense, `seed`: the data-order seed trainer.train takes,
    `start_step`: the step to start at (late rewinding)."""
    init: dict[str, torch.Tensor]
    mask: Optional[Mask] = None
    seed: int = 0
    start_step: int = 0


@dataclass
class BatchedResult:
    results: list[TrainResult]          # per member, as trainer.train returns it (seconds: the whole batch's)
    weights: dict[str, torch.Tensor]    # {name: [K, *shape]}, detached

    def member(self, i: int) -> dict[str, torch.Tensor]:
        return member_weights(self.weights, i)


def stack_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """[state dict] -> {name: [K, *shape]}."""
    return {k: torch.stack([s[k].detach() for s in states]) for k in states[0]}


def member_weights(stacked: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Member i of a stack as an ordinary state dict (views into the stack: clone before changing)."""
    return {k: v[i] for k, v in stacked.items()}


def check_batchable(model: nn.Module) -> None:
    if any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules()):
        raise Unsupported(f"{type(model).__name__} has BatchNorm, whose running statistics the batched trainer "
                          "does not keep per member; train its members one by one (engine.trainer.train)")
    if list(model.buffers()):
        raise Unsupported(f"{type(model).__name__} has buffers, which the batched trainer does not keep per member")


def _forward(model: nn.Module):
    def one(params, x):
        return functional_call(model, params, (x,))
    return one


@torch.inference_mode()
def evaluate_batched(model: nn.Module, weights: dict[str, torch.Tensor], split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy [K], accuracy [K]) of every member of a stack on a split, in one batched pass.

    The same numbers `engine.trainer.evaluate` gives each member alone (to float rounding)."""
    k = next(iter(weights.values())).shape[0]
    params = {n: w for n, w in weights.items()}
    was_training = model.training
    model.eval()
    fwd = vmap(_forward(model), in_dims=(0, None))
    loss = torch.zeros(k, device=split.y.device)
    correct = torch.zeros(k, device=split.y.device, dtype=torch.long)
    chunk = max(16, EVAL_ELEMENTS // k)
    for i in range(0, len(split), chunk):
        out = fwd(params, split.x[i:i + chunk])                        # [K, b, C]
        y = split.y[i:i + chunk]
        loss += F.cross_entropy(out.transpose(1, 2), y.expand(k, -1), reduction="none").sum(1)
        correct += (out.argmax(2) == y).sum(1)
    model.train(was_training)
    return loss.double() / len(split), correct.double() / len(split)


class _Optimizer:
    """Adam or SGD over stacked parameters, with torch.optim's update rules, a step counter per member and
    an `active` mask: members not yet started are left exactly as they are."""

    def __init__(self, params: dict[str, torch.Tensor], cfg: TrainConfig, k: int):
        self.params, self.cfg, self.k = params, cfg, k
        self.state = {n: (torch.zeros_like(p), torch.zeros_like(p)) if cfg.optimizer == "adam" else torch.zeros_like(p)
                      for n, p in params.items()}
        self.steps = torch.zeros(k, dtype=torch.float64)

    @torch.no_grad()
    def step(self, lr: float, active: torch.Tensor | None) -> None:
        cfg = self.cfg
        if active is None:
            self.steps += 1
        else:
            self.steps += active.to(self.steps.dtype)
        for n, p in self.params.items():
            g = p.grad
            if cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            shape = (self.k,) + (1,) * (p.dim() - 1)
            if cfg.optimizer == "adam":
                b1, b2 = ADAM_BETAS
                m, v = self.state[n]
                old = (p.clone(), m.clone(), v.clone()) if active is not None else None
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                t = self.steps.clamp(min=1)
                bias1 = (1 - b1 ** t).to(p.dtype).view(shape)
                bias2_sqrt = (1 - b2 ** t).sqrt().to(p.dtype).view(shape)
                p.sub_((lr / bias1) * m / (v.sqrt() / bias2_sqrt + ADAM_EPS))
                if old is not None:
                    keep = ~active.view(shape)
                    for new, before in zip((p, m, v), old):
                        new.copy_(torch.where(keep, before, new))
            else:
                buf = self.state[n]
                old = (p.clone(), buf.clone()) if active is not None else None
                if cfg.momentum:
                    buf.mul_(cfg.momentum).add_(g)  # from zero, the first step gives buf = g, as torch's SGD
                    g = buf
                p.sub_(lr * g)
                if old is not None:
                    keep = ~active.view(shape)
                    for new, before in zip((p, buf), old):
                        new.copy_(torch.where(keep, before, new))


def train_batched(model: nn.Module, data: Dataset, cfg: TrainConfig, members: Sequence[Member], *,
                  on_eval: Callable[[int, dict], None] | None = None, cancel=None,
                  on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None) -> BatchedResult:
    """Train every member from its start step to the end of the schedule, all in one computation.

    `model`: a module of the members' architecture (only its structure is used; it is not changed).
    `on_eval(i, point)` after member i's evaluations (the points trainer.train's on_eval gets);
    `on_step(step, weights)` after each step, with the live stack; `cancel.is_set()` is checked every step.
    """
    if not members:
        raise ConfigError("members", 0, "need at least one member")
    check_batchable(model)
    x, y = data.train.x, data.train.y
    bs, k, device = cfg.batch_size, len(members), y.device
    per_epoch = steps_per_epoch(len(y), cfg)
    total = cfg.epochs * per_epoch
    eval_every = cfg.eval_every or per_epoch
    names = [n for n, _ in model.named_parameters()]
    for i, m in enumerate(members):
        missing = set(names) - set(m.init)
        if missing:
            raise ConfigError(f"members[{i}].init", sorted(missing)[:3], "start weights lack these parameters")

    masked = sorted({n for m in members for n, t in (m.mask or {}).items() if not bool(t.all())}, key=names.index)
    masks = {n: torch.stack([(m.mask[n] if m.mask is not None and n in m.mask
                              else torch.ones_like(m.init[n], dtype=torch.bool)).to(device) for m in members])
             for n in masked}
    params = {n: torch.stack([m.init[n].detach().to(device, torch.float32) for m in members]) for n in names}
    for n, keep in masks.items():
        params[n].mul_(keep)
        masks[n] = keep.to(params[n].dtype)
    for p in params.values():
        p.requires_grad_(True)
    opt = _Optimizer(params, cfg, k)
    fwd = vmap(_forward(model), in_dims=(0, 0))
    schedule = cfg.lr_schedule != "constant" or cfg.warmup > 0

    starts = torch.tensor([m.start_step for m in members], device=device)
    first = min(m.start_step for m in members)
    seeds = [m.seed for m in members]
    curves: list[list[dict]] = [[] for _ in members]
    loss_sum = torch.zeros(k, device=device)
    counted = torch.zeros(k, device=device)
    perms = None
    was_training = model.training
    model.train()
    t0 = time.perf_counter()
    for step in range(first, total):
        epoch, b = divmod(step, per_epoch)
        if perms is None or b == 0:  # each member its own order, by the trainer's own rule
            perms = torch.stack([torch.randperm(len(y), generator=generator(s, "order", epoch)) for s in seeds]).to(device)
        idx = perms[:, b * bs:(b + 1) * bs]                                   # [K, bs]
        active = None if step >= int(starts.max()) else starts <= step

        out = fwd(params, x[idx])                                             # [K, bs, C]
        losses = F.cross_entropy(out.transpose(1, 2), y[idx], reduction="none").mean(1)   # [K]
        if active is not None:
            losses = losses * active
        for p in params.values():
            p.grad = None
        losses.sum().backward()
        if masked:
            torch._foreach_mul_([params[n].grad for n in masked], [masks[n] for n in masked])
        opt.step(lr_at(step, total, cfg) if schedule else cfg.lr, active)
        loss_sum += losses.detach()
        counted += 1 if active is None else active
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")

        if (step + 1) % eval_every == 0 or step + 1 == total:
            at = [step + 1 if m.start_step <= step else None for m in members]
            _record(model, params, data, curves, at, per_epoch, loss_sum / counted.clamp(min=1), on_eval)
            loss_sum.zero_()
            counted.zero_()
        if on_step is not None:
            on_step(step + 1, params)

    seconds = time.perf_counter() - t0
    if not all(curves):  # members that started at or past the end: report their weights as they are
        at = [None if c else m.start_step for c, m in zip(curves, members)]
        _record(model, params, data, curves, at, per_epoch, torch.full((k,), math.nan, device=device), on_eval)
    model.train(was_training)
    keys = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
    results = []
    for curve in curves:
        best = curve[0]
        for point in curve[1:]:
            if point["val_loss"] < best["val_loss"]:
                best = point
        results.append(TrainResult(iterations=total, seconds=seconds, final={q: curve[-1][q] for q in keys},
                                   early_stop_iteration=best["iteration"], at_early_stop={q: best[q] for q in keys},
                                   curve=curve))
    return BatchedResult(results, {n: p.detach() for n, p in params.items()})


def _record(model, params, data: Dataset, curves, at: list[int | None], per_epoch: int, train_loss: torch.Tensor,
            on_eval) -> None:
    """Evaluate every member (one batched pass per split) and append a point at iteration at[i] to each
    member whose at[i] is not None."""
    weights = {n: p.detach() for n, p in params.items()}
    val_loss, val_acc = evaluate_batched(model, weights, data.val)
    test_loss, test_acc = evaluate_batched(model, weights, data.test)
    rows = zip(at, val_loss.tolist(), val_acc.tolist(), test_loss.tolist(), test_acc.tolist(), train_loss.tolist())
    for i, (it, vl, va, tl, ta, trl) in enumerate(rows):
        if it is None:
            continue
        point = {"iteration": it, "epoch": it / per_epoch, "train_loss": trl, "val_loss": vl, "val_accuracy": va,
                 "test_loss": tl, "test_accuracy": ta}
        curves[i].append(point)
        if on_eval is not None:
            on_eval(i, point)
