"""Concrete Ticket Search (Arora & Teuscher 2025): search the mask over frozen weights, keeping the
sparse network's outputs close to the dense network's.

The weights stay frozen at the run's rewind point (theta_0, or theta_k with --rewind iter:K). Every
prunable weight gets a logit s, initialised to logit(kappa) with kappa its layer's target density; each step
samples a binary-Concrete mask m = sigmoid((s + log u - log(1 - u)) / tau), tau = 2/3, u ~ U(0, 1), and
takes an Adam step (--search-lr) on s against
  task:     100 * KL(p_sparse || p_dense), the reverse KL from the masked network's softmax to the
            unmasked network's, on the batch;
  sparsity: e = 100 * (sum sigmoid(s) / (1.1 K) - 1), K the number of weights to keep.
GradBalance (our reading of the paper): while e >= 0 the sparsity gradient is added scaled by lambda,
an exponential moving average (0.99) of ||g_task|| / ||g_sparsity||, so neither term drowns the other
whatever their scales; while e < 0 only the task term acts. After --search-epochs epochs the ticket is
the top K of s (global, layerwise or erk, exact counts), trained from the rewind point like an IMP ticket.
This search loop is its own: the objective and the two-gradient balance are not the trainer's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .. import masks as M
from .. import trainer
from ..config import option, validate
from ..errors import RunCancelled
from ..registry import METHODS, MethodSpec
from ..seeding import derive_seed, generator
from .pai import PAI_SCOPES, select, target_counts
from .search import SearchLog, recorded_search_cost, searched_mask

TAU = 2 / 3
KL_SCALE = 100.0
HEADROOM = 1.1   # the expected count aims 10% above K; the top K is taken at the end
EMA = 0.99


@dataclass(frozen=True)
class CTSOptions:
    search_epochs: int = option(20, "cts: epochs of mask search (each costs about one training epoch)", lo=1,
                                hi=100_000)
    search_lr: float = option(0.1, "cts: Adam learning rate of the mask logits", lo=0, hi=100, lo_open=True)

    def __post_init__(self):
        validate(self, "prune.")


def search(ctx, frozen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Optimise mask logits over the `frozen` weights; return {weight name: s}."""
    cfg = ctx.config.prune
    model = ctx.model_with(frozen)
    for p in model.parameters():
        p.requires_grad_(False)
    dense = M.ones(model)
    counts = target_counts(dense, cfg.density, cfg.scope)
    keep = counts if isinstance(counts, int) else sum(counts.values())
    kappa = {n: (counts[n] / m.numel() if isinstance(counts, dict) else cfg.density) for n, m in dense.items()}
    logits = {n: torch.full_like(frozen[n], _logit(k)).requires_grad_() for n, k in kappa.items()}
    opt = torch.optim.Adam(logits.values(), lr=ctx.options.search_lr)
    device = next(iter(frozen.values())).device
    noise = torch.Generator(device=device).manual_seed(derive_seed(ctx.config.seed, "cts"))
    data, bs = ctx.data, ctx.config.train.batch_size
    per_epoch = trainer.steps_per_epoch(len(data.train), ctx.config.train)
    total = ctx.options.search_epochs * per_epoch
    log = SearchLog(ctx, "cts", total)
    # Kept as tensors, so a step never waits for the device: lam is NaN until the sparsity term first acts.
    lam = torch.tensor(float("nan"), device=device)
    loss_sum = torch.zeros((), device=device)

    def masked(mask):
        return {n: frozen[n] * mask[n] for n in mask}

    def evaluate(step: int) -> None:
        ticket = ctx.model_with(frozen)  # the ticket the logits would give now
        M.apply(ticket, select({n: s.detach() for n, s in logits.items()}, dense, cfg.density, cfg.scope))
        val_loss, val_acc = trainer.evaluate(ticket, data.val)
        test_loss, test_acc = trainer.evaluate(ticket, data.test)
        expected = sum(float(torch.sigmoid(s.detach()).sum()) for s in logits.values()) / M.total(dense)
        log.evaluated({"iteration": step, "epoch": step / per_epoch, "train_loss": float(loss_sum) / per_epoch,
                       "val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss,
                       "test_accuracy": test_acc}, expected_density=expected, balance=_number(lam))
        loss_sum.zero_()

    model.train()
    for step in range(total):
        epoch, b = divmod(step, per_epoch)
        if b == 0:
            order = torch.randperm(len(data.train), generator=generator(ctx.config.seed, "cts-order", epoch))
            order = order.to(data.train.y.device)
        x = data.train.x[order[b * bs:(b + 1) * bs]]
        with torch.no_grad():
            log_p_dense = F.log_softmax(model(x), 1)
        mask = {}
        for n, s in logits.items():
            u = torch.rand(s.shape, generator=noise, device=device, dtype=s.dtype).clamp_(1e-6, 1 - 1e-6)
            mask[n] = torch.sigmoid((s + torch.logit(u)) / TAU)
        log_p_sparse = F.log_softmax(functional_call(model, masked(mask), (x,)), 1)
        task = KL_SCALE * (log_p_sparse.exp() * (log_p_sparse - log_p_dense)).sum(1).mean()
        g_task = torch.autograd.grad(task, list(logits.values()))
        probs = [torch.sigmoid(s.detach()) for s in logits.values()]
        acts = torch.stack([p.sum() for p in probs]).sum() >= HEADROOM * keep  # e >= 0
        g_sparse = [KL_SCALE / (HEADROOM * keep) * p * (1 - p) for p in probs]  # d e / d s
        ratio = _norm(g_task) / _norm(g_sparse).clamp_min(1e-30)
        lam = torch.where(acts, torch.where(torch.isnan(lam), ratio, EMA * lam + (1 - EMA) * ratio), lam)
        weight = torch.where(acts, lam, torch.zeros_like(lam))
        for s, gt, gs in zip(logits.values(), g_task, g_sparse):
            s.grad = gt + weight * gs
        opt.step()
        loss_sum += task.detach()
        if ctx.cancel is not None and ctx.cancel.is_set():
            raise RunCancelled("cancelled")
        if (step + 1) % per_epoch == 0:
            evaluate(step + 1)
    final = {n: s.detach() for n, s in logits.items()}
    log.save(expected_density=sum(float(torch.sigmoid(s).sum()) for s in final.values()) / M.total(dense),
             balance=_number(lam))
    return final


def _logit(k: float) -> float:
    """Initial logit for keep-probability k; an empty (k = 0) or full layer starts far out."""
    return -10.0 if k <= 0 else 10.0 if k >= 1 else math.log(k / (1 - k))


def _norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def _number(t: torch.Tensor) -> float | None:
    return None if torch.isnan(t) else float(t)


def cts(ctx) -> None:
    cfg = ctx.config.prune
    start, start_step = ctx.rewind(ctx.dense.weights)
    mask = searched_mask(ctx, lambda: select(search(ctx, start), M.ones(ctx.model_with(start)), cfg.density,
                                             cfg.scope))
    ctx.train_ticket(1, mask, start, start_step)


METHODS.register("cts", "Concrete Ticket Search: binary-Concrete mask logits over frozen weights, reverse KL to the "
                        "dense outputs, GradBalance sparsity; top --density trained like IMP; use an early --rewind "
                        "iter:K (Arora & Teuscher)")(
    MethodSpec(cts, options=CTSOptions, scopes=PAI_SCOPES, search_cost=recorded_search_cost,
               search_epochs=lambda config: config.prune.method_options().search_epochs,
               unread=dict.fromkeys(("prune.prune_fraction", "prune.output_fraction"),
                                    "keeps the top --density of its searched mask, with no magnitude pruning steps")))
