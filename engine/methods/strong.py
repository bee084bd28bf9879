"""Strong (untrained) lottery tickets: a supermask over frozen random weights.

Edge-Popup (Ramanujan et al. 2020): every prunable weight gets a real score (Kaiming-uniform); the forward
pass uses the weights whose |score| is in the layer's top --density; the backward pass hands the mask's
gradient straight through to the scores. Only the scores train, with the run's optimizer, learning rate and
schedule (the paper: SGD 0.1, cosine, momentum 0.9, weight decay 1e-4; --init signed_constant and
--density 0.5 are its best settings). Every original parameter is frozen (requires_grad False, left out of
the optimizer), and `finish` checks the weights are bit-identical to where they started.
biprop (Diffenderfer & Kailkhura 2021, multi-prize tickets): the same search over binary weights
alpha * sign(w) * m, alpha = ||m * w||_1 / ||m||_0 per layer.

The stored ticket is what runs inference: w * m (edgepopup) or alpha * sign(w) * m (biprop), pruned
entries exactly 0. No controls are trained: a supermask is never trained, so its comparison is the trained
dense network (level 0) of the same run.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import masks as M
from ..registry import METHODS, MethodSpec
from ..runner import MaskSearch
from ..seeding import generator
from .pai import target_counts


class _TopK(torch.autograd.Function):
    """Forward: 1 at the k largest entries, 0 elsewhere. Backward: the gradient passes straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return top_k(scores, k).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest entries (exactly k)."""
    out = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    out[torch.topk(scores.flatten(), k, sorted=False).indices] = True
    return out.view_as(scores)


class Supermask(nn.Module):
    """Parametrization of a frozen weight: w * m (or alpha * sign(w) * m), m the top-k of |scores|."""

    def __init__(self, scores: torch.Tensor, k: int, binary: bool):
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.k, self.binary = k, binary

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        m = _TopK.apply(self.scores.abs(), self.k)
        if not self.binary:
            return w * m
        alpha = (w.abs() * m).sum() / max(self.k, 1)  # ||m * w||_1 / ||m||_0 (an empty layer stays 0)
        return alpha * torch.sign(w) * m

    def mask(self) -> torch.Tensor:
        return top_k(self.scores.detach().abs(), self.k)


def initial_scores(weights: dict[str, torch.Tensor], names, seed: int) -> dict[str, torch.Tensor]:
    """Kaiming-uniform scores (a = sqrt(5), bound 1/sqrt(fan_in)), as in the hidden-networks code."""
    g = generator(seed, "supermask-scores")
    return {n: ((torch.rand(weights[n].shape, generator=g) * 2 - 1) / math.sqrt(weights[n][0].numel()))
            .to(weights[n]) for n in names}


class SupermaskSearch(MaskSearch):
    def __init__(self, scores: dict[str, torch.Tensor], counts: dict[str, int], binary: bool):
        self.scores, self.counts, self.binary = scores, counts, binary
        self.frozen: dict[str, torch.Tensor] = {}

    def initial_mask(self) -> M.Mask:
        return {n: top_k(s.abs(), self.counts[n]) for n, s in self.scores.items()}

    def prepare(self, model: nn.Module):
        self.frozen = {k: v.detach().clone() for k, v in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        for name, scores in self.scores.items():
            parametrize.register_parametrization(M.owner(model, name), "weight",
                                                 Supermask(scores.clone(), self.counts[name], self.binary))
        return None  # nothing to mask: the parametrization decides what the forward pass sees

    def finish(self, model: nn.Module) -> M.Mask:
        mask = {}
        for name in self.scores:
            module = M.owner(model, name)
            mask[name] = module.parametrizations.weight[0].mask()
            original = module.parametrizations.weight.original
            if not torch.equal(original, self.frozen[name]):
                raise RuntimeError(f"{name} changed during a supermask search; its weights must stay frozen")
            # leave_parametrized: the layer keeps w * m (or alpha sign(w) m), the weights that run inference
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        changed = [n for n, p in model.named_parameters() if n not in mask and not torch.equal(p, self.frozen[n])]
        if changed:
            raise RuntimeError(f"frozen parameters changed during a supermask search: {changed}")
        return mask


def _register(name: str, binary: bool, help: str):
    def method(ctx) -> None:
        cfg = ctx.config.prune
        dense = M.ones(ctx.model_with(ctx.init_weights))
        search = SupermaskSearch(initial_scores(ctx.init_weights, dense, ctx.config.seed),
                                 target_counts(dense, cfg.density, cfg.scope), binary)
        ctx.train_ticket(1, search.initial_mask(), ctx.init_weights, 0, search=search)

    # per-layer top-k, as in the papers; the supermask is the ticket: never trained, so no trained controls,
    # and its search cost is the score training, i.e. the level's own
    METHODS.register(name, help)(MethodSpec(
        method, scopes=("layerwise", "erk"), trains_controls=False, search_cost=own_training,
        unread={**dict.fromkeys(("prune.prune_fraction", "prune.output_fraction"),
                                "searches a supermask of --density, with no magnitude pruning steps"),
                "prune.rewind": "searches its supermask over theta_0 from step 0, never training the weights"}))


def own_training(summary: dict, level: dict, store) -> tuple[int, float]:
    return level["iterations"], level["train_seconds"]


_register("edgepopup", False, "strong ticket: a supermask of --density per layer over frozen random weights, "
                              "scores trained straight-through (Ramanujan et al. 2020)")
_register("biprop", True, "strong ticket: supermask over binary weights alpha x sign(w) (Diffenderfer & "
                          "Kailkhura 2021)")
