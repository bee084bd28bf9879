"""One flat training loop over in-memory tensors, with masks enforced.

Read it top to bottom: pick the batch for this step (a fixed permutation per epoch, so data order is a
function of (seed, step) and late rewinding can continue from step k), forward, backward, zero the
gradients of pruned weights, step. Zeroing the gradients is enough to keep pruned weights at exactly 0
with no optimizer state: SGD's momentum and Adam's moments start at 0 and only ever see 0 there, and
(coupled) weight decay of a zero weight is zero. Tests check this invariant after every step.

On a GPU the step loop never waits for the device: the data, masks and optimizer state live there, the
running loss is summed there and read only at evaluations (tests/test_device.py runs the loop on PyTorch's
"meta" device, where any host sync or CPU tensor in a step fails the test).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import bayes
from .config import TrainConfig
from .data import Dataset, Split
from .errors import ConfigError, RunCancelled
from .masks import Mask
from .seeding import generator, seed_device_generator


AMP_DEVICES = ("cuda", "cpu")  # where torch.autocast runs bfloat16


def autocast(cfg: TrainConfig, device: torch.device):
    """The context a training step's forward and loss run in: torch.autocast in bfloat16 for `--amp bf16`
    (matmuls and convolutions in bf16, reductions such as the loss in float32), else nothing."""
    if cfg.amp == "off":
        return contextlib.nullcontext()
    if device.type not in AMP_DEVICES:
        raise ConfigError("train.amp", cfg.amp, f"runs on {' or '.join(AMP_DEVICES)}, not on {device.type}: "
                          "use --amp off")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    if cfg.batch_size > n_train:
        raise ConfigError("train.batch_size", cfg.batch_size, f"must be at most the {n_train} training examples")
    return n_train // cfg.batch_size  # the last partial batch is dropped: every step sees batch_size examples


def total_steps(n_train: int, cfg: TrainConfig) -> int:
    return cfg.epochs * steps_per_epoch(n_train, cfg)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    if cfg.lr_schedule == "step":  # x0.1 at 50% and at 75% of training
        return cfg.lr * (0.1 ** ((step >= total // 2) + (step >= 3 * total // 4)))
    return cfg.lr


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the parameters that train. Frozen ones (requires_grad False: the
    weights under a strong ticket's scores) are left out; parameters marked `no_weight_decay = True`
    (Continuous Sparsification's mask logits, Bayesian rho) get no weight decay, and a parameter with its
    own `lr` (Bayesian rho) its own group, whose lr follows the schedule in proportion (`lr_ratio`)."""
    params = [p for p in params if p.requires_grad]
    keyed: dict[tuple, list] = {}
    for p in params:
        keyed.setdefault((getattr(p, "no_weight_decay", False), getattr(p, "lr", None)), []).append(p)
    groups = [{"params": ps, "lr_ratio": 1.0 if lr is None else lr / cfg.lr, **({"lr": lr} if lr is not None else {}),
               **({"weight_decay": 0.0} if nd else {})} for (nd, lr), ps in sorted(keyed.items(), key=_group_order)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Fused Adam: the unfused CPU path calls sqrt() on the second moments, which is ~5x slower on the
    # exact zeros a ticket's pruned weights keep there (measured in bench/trainer_overhead.py).
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _group_order(item):  # the default group first, as before per-parameter settings existed
    (no_decay, lr), _ = item
    return (no_decay, lr is not None, lr or 0.0)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch: int = 8192) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a split, in large batches; for a Bayesian net those of its
    Monte-Carlo predictive (engine.bayes)."""
    if bayes.is_bayesian(model):
        m = bayes.evaluate(model, split)
        return m["nll"], m["accuracy"]
    batch = getattr(model, "eval_batch_size", batch)  # a transformer's activations need smaller batches
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=split.y.device)
    correct = torch.zeros((), device=split.y.device, dtype=torch.long)
    for i in range(0, len(split), batch):
        out = model(split.x[i:i + batch])
        y = split.y[i:i + batch]
        loss += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    # per-token targets (masked language modelling): -100 marks a slot that predicts nothing
    n = int((split.y != -100).sum()) if split.y.dim() > 1 else len(split)
    return float(loss) / n, int(correct) / n


@dataclass
class TrainResult:
    iterations: int                        # the step training ended at
    seconds: float
    final: dict                            # val/test loss and accuracy of the final weights
    early_stop_iteration: int              # iteration of minimum validation loss
    at_early_stop: dict                    # val/test metrics at that iteration
    curve: list = field(default_factory=list)


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, mask: Optional[Mask], *, seed: int,
          start_step: int = 0, on_step: Callable[[int, nn.Module], None] | None = None,
          on_eval: Callable[[dict], None] | None = None, cancel=None,
          on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
          penalty: Callable[[], torch.Tensor] | None = None) -> TrainResult:
    """Train `model` in place from `start_step` to the end of the schedule.

    `on_step(step, model)` runs after each optimizer step and its evaluation, if any (rewind capture, dynamic
    sparsity, annealing);
    `on_eval(metrics)` after each evaluation; `cancel.is_set()` is checked every step; `on_optimizer(opt)`
    once the optimizer exists (dynamic sparsity zeroes optimizer state of weights it moves); `penalty()` is
    added to every step's loss (Continuous Sparsification's mask penalty). A mask given
    as float tensors of the parameters' dtype is used as is, so a caller may change it in place.
    The optimizer starts fresh: rewinding restores weights, not optimizer state.
    """
    x, y = data.train.x, data.train.y
    bs = cfg.batch_size
    per_epoch = steps_per_epoch(len(y), cfg)
    total = cfg.epochs * per_epoch
    eval_every = cfg.eval_every or per_epoch
    params = dict(model.named_parameters())
    # read once here (a host sync per mask, before the first step); moved to the weights' device once
    masked = [(params[n], m.to(params[n].device, params[n].dtype)) for n, m in (mask or {}).items()
              if not bool(m.all())]
    masked_params = [p for p, _ in masked]
    masked_values = [m for _, m in masked]
    opt = make_optimizer(model.parameters(), cfg)
    # a Bayesian net trains on the negative ELBO (else None); its posterior computes on the kept weights only,
    # and `opt` steps their rho only
    kl = bayes.start_training(model, len(y), seed, masked, opt)
    if kl is not None:
        penalty = kl if penalty is None else (lambda extra=penalty: extra() + kl())
    if on_optimizer is not None:
        on_optimizer(opt)
    schedule = cfg.lr_schedule != "constant" or cfg.warmup > 0
    amp = autocast(cfg, y.device)

    # Dropout draws from the device's global generator: seeded from (seed, step) at every step, a training's
    # draws depend on nothing that ran before it in the process (another run of a comparison, a method's own
    # draws) and a training resumed at step k continues the uninterrupted one's.
    stochastic = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    model.train()
    curve: list[dict] = []
    best = (math.inf, start_step, {})
    loss_sum = torch.zeros((), device=y.device)
    losses_since_eval = 0
    perm = None
    t0 = time.perf_counter()
    try:  # a Bayesian training ends here, whatever happens in it (engine.bayes.end_training)
        for step in range(start_step, total):
            epoch, b = divmod(step, per_epoch)
            if perm is None or b == 0:  # a CPU generator (the same order on every device), copied once an epoch
                perm = torch.randperm(len(y), generator=generator(seed, "order", epoch)).to(y.device)
            idx = perm[b * bs:(b + 1) * bs]
            if schedule:
                lr = lr_at(step, total, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr * group["lr_ratio"]

            if stochastic:
                seed_device_generator(y.device, seed, "dropout", step)
            with amp:
                loss = F.cross_entropy(model(x[idx]), y[idx])  # what is reported; the penalty only steers
            opt.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty()).backward()
            if masked:
                if all(p.grad is not None for p in masked_params):
                    torch._foreach_mul_([p.grad for p in masked_params], masked_values)
                else:  # a layer this step did not use (a mixture of experts' idle one): no gradient, no update
                    used = [(p.grad, m) for p, m in zip(masked_params, masked_values) if p.grad is not None]
                    if used:
                        torch._foreach_mul_(*map(list, zip(*used)))
            opt.step()
            loss_sum += loss.detach()
            losses_since_eval += 1
            if cancel is not None and cancel.is_set():
                raise RunCancelled("cancelled")

            if (step + 1) % eval_every == 0 or step + 1 == total:
                val_loss, val_acc = evaluate(model, data.val)
                test_loss, test_acc = evaluate(model, data.test)
                point = {"iteration": step + 1, "epoch": (step + 1) / per_epoch,
                         "train_loss": float(loss_sum) / losses_since_eval,
                         "val_loss": val_loss, "val_accuracy": val_acc,
                         "test_loss": test_loss, "test_accuracy": test_acc}
                loss_sum.zero_()
                losses_since_eval = 0
                curve.append(point)
                if not best[2] or val_loss < best[0]:  # the first point counts even if its loss is NaN
                    best = (val_loss, step + 1, point)
                if on_eval is not None:
                    on_eval(point)
            if on_step is not None:  # after the evaluation, so a change it makes applies from the next step on
                on_step(step + 1, model)

        seconds = time.perf_counter() - t0
        if not curve:  # started at or past the end: nothing to train, still report the weights as they are
            val_loss, val_acc = evaluate(model, data.val)
            test_loss, test_acc = evaluate(model, data.test)
            curve.append({"iteration": start_step, "epoch": start_step / per_epoch, "train_loss": float("nan"),
                          "val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss,
                          "test_accuracy": test_acc})
            best = (val_loss, start_step, curve[-1])
        keys = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
        return TrainResult(iterations=total, seconds=seconds, final={k: curve[-1][k] for k in keys},
                           early_stop_iteration=best[1], at_early_stop={k: best[2][k] for k in keys},
                           curve=curve)
    finally:
        bayes.end_training(model)
