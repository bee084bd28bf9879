"""Scoring rules for pruning at initialisation: pure functions `score(model, batch) -> {name: tensor}`.

Higher scores are kept (selection lives in engine.masks). Conventions follow the Synaptic-Flow
repository (Tanaka et al. 2020), see shared/ALGORITHMS.md:
- magnitude: |theta|;
- snip: |g * theta| on one batch (about 10 examples per class), g the loss gradient;
- grasp: theta * Hg, signed, with logits divided by a temperature of 200 and H g from double
  backpropagation of g_stopped . g; the lowest scores are pruned;
- synflow: data-free; |theta * dR/dtheta| with R the summed output of the linearised net (|theta|, eval
  mode) on one all-ones input. Iterated over rounds by `synflow_mask`;
- random: uniform noise (the random-pruning baseline).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import masks as M

Scores = dict[str, torch.Tensor]


def _params(model: nn.Module, mask: M.Mask) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    return {n: named[n] for n in mask}


def magnitude(model: nn.Module, mask: M.Mask, batch=None, generator=None) -> Scores:
    return M.magnitude_scores(model, mask)


def random(model: nn.Module, mask: M.Mask, batch=None, generator=None) -> Scores:
    return {n: torch.rand(m.shape, generator=generator).to(m.device) for n, m in mask.items()}


def snip(model: nn.Module, mask: M.Mask, batch, generator=None) -> Scores:
    x, y = batch
    model = copy.deepcopy(model)
    M.apply(model, mask)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {n: (p.grad * p).detach().abs() for n, p in _params(model, mask).items()}


GRASP_TEMPERATURE = 200.0


def grasp(model: nn.Module, mask: M.Mask, batch, generator=None) -> Scores:
    x, y = batch
    model = copy.deepcopy(model)
    M.apply(model, mask)
    params = list(_params(model, mask).values())
    grads = torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), params, create_graph=True)
    stopped = [g.detach() for g in grads]
    hg = torch.autograd.grad(sum((g * s).sum() for g, s in zip(grads, stopped)), params)  # H g
    return {n: (p * h).detach() for (n, p), h in zip(_params(model, mask).items(), hg)}


def synflow(model: nn.Module, mask: M.Mask, input_shape, generator=None) -> Scores:
    """One SynFlow scoring round of the masked model (float64, so deep products neither under- nor overflow)."""
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    M.apply(model, mask)
    device = next(model.parameters()).device
    model.zero_grad()
    model(torch.ones((1, *input_shape), dtype=torch.float64, device=device)).sum().backward()
    return {n: (p.grad * p).detach().abs().float() for n, p in _params(model, mask).items()}


def synflow_mask(model: nn.Module, mask: M.Mask, input_shape, keep, rounds: int = 100) -> M.Mask:
    """Iterative SynFlow: `rounds` rounds, density after round t = rho^(t / rounds), re-scoring the masked
    net each round so no layer collapses. `keep` is the final count, global (int) or per layer (dict), or
    a rule keep(scores, mask, progress) that selects at progress t / rounds itself (structured patterns)."""
    total = M.total(mask)
    for t in range(1, rounds + 1):
        scores = synflow(model, mask, input_shape)
        if callable(keep):
            mask = keep(scores, mask, t / rounds)
        elif isinstance(keep, int):
            n_keep = round(total * (keep / total) ** (t / rounds))
            mask = M.keep_global(scores, mask, n_keep)
        else:
            mask = {n: M.keep_top(scores[n], mask[n], round(mask[n].numel() * (keep[n] / mask[n].numel())
                                                            ** (t / rounds))) for n in mask}
    return mask
