"""Masks: {parameter name: bool tensor of the parameter's shape}, and the selection rules over them.

Scoring (what matters: |w|, SNIP, ...) and selection (how many to keep, where: layerwise, global) are
kept apart so every method shares one exact, tested selection: `keep_top` keeps exactly the requested
number of entries, ties broken by position, so masks are deterministic and densities exact.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

Mask = Dict[str, torch.Tensor]

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable(model: nn.Module) -> list[str]:
    """Names of the weights that may be pruned: Linear/Conv weights, in module order.

    Biases and normalisation parameters are never pruned. The last entry is the output layer, whose
    policy is separate config (`prune.output_fraction`). A model may name its prunable parameters itself
    (`prunable_names()`: a transformer's attention and FFN weights, not its embeddings or heads).
    """
    if hasattr(model, "prunable_names"):
        return model.prunable_names()
    return [param_name(name) for name, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES)]


def param_name(module: str, attr: str = "weight") -> str:
    """The state-dict name of a module's parameter ("hidden.0" -> "hidden.0.weight"; the root -> "weight")."""
    return f"{module}.{attr}" if module else attr


def output_layer(model: nn.Module) -> str | None:
    """The output layer, pruned at its own rate; None for a model whose head is not in the mask at all
    (`has_output_layer = False`: transformers)."""
    if not getattr(model, "has_output_layer", True):
        return None
    return prunable(model)[-1]


def ones(model: nn.Module) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable(model)}


# ---------------------------------------------------------------- reports
def kept(mask: Mask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def total(mask: Mask) -> int:
    return sum(m.numel() for m in mask.values())


def density(mask: Mask) -> float:
    """Fraction of prunable weights kept (sparsity = 1 - density)."""
    return kept(mask) / total(mask)


def layer_densities(mask: Mask) -> dict[str, float]:
    return {n: float(m.sum()) / m.numel() for n, m in mask.items()}


# ---------------------------------------------------------------- selection
def keep_top(scores: torch.Tensor, alive: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask keeping exactly `n_keep` of the alive entries with the highest scores.

    Dead entries never come back. Ties go to the earlier position (stable sort), so the result does
    not depend on the platform's top-k implementation.
    """
    n_alive = int(alive.sum())
    if not 0 <= n_keep <= n_alive:
        raise ValueError(f"cannot keep {n_keep} of {n_alive} alive entries")
    flat = torch.where(alive, scores.float(), torch.tensor(float("-inf"), device=scores.device)).flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:n_keep]
    out = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    out[order] = True
    return out.view_as(alive)


def prune_step(scores: dict[str, torch.Tensor], mask: Mask, fraction: float, output_fraction: float,
               scope: str, output_name: str) -> Mask:
    """One pruning level: remove `fraction` of the remaining weights by lowest score.

    layerwise: each layer loses ceil(fraction x its remaining); global: the non-output layers form one
    pool that loses ceil(fraction x pool remaining). The output layer always loses
    ceil(output_fraction x its remaining) on its own (0 keeps it dense), as in Frankle & Carbin.
    """
    new: Mask = {}
    pool = [n for n in mask if n != output_name]
    if scope == "layerwise":
        for n in pool:
            new[n] = drop_fraction(scores[n], mask[n], fraction)
    elif scope == "global":
        alive = sum(int(mask[n].sum()) for n in pool)
        new.update(keep_global(scores, mask, alive - math.ceil(fraction * alive), pool))
    else:
        raise ValueError(f"unknown scope {scope!r}")
    if output_name is not None:
        new[output_name] = drop_fraction(scores[output_name], mask[output_name], output_fraction)
    return {n: new[n] for n in mask}  # keep the model's layer order


def drop_fraction(scores: torch.Tensor, alive: torch.Tensor, fraction: float) -> torch.Tensor:
    """One layer loses ceil(fraction x its alive entries), lowest scores first."""
    n_alive = int(alive.sum())
    return keep_top(scores, alive, n_alive - math.ceil(fraction * n_alive))


def keep_density(scores: torch.Tensor, alive: torch.Tensor, density: float) -> torch.Tensor:
    """One layer keeps round(density x its size) entries (at most the alive ones), highest scores first."""
    return keep_top(scores, alive, min(int(alive.sum()), round(density * alive.numel())))


def keep_global(scores, mask: Mask, n_keep: int, names: list[str] | None = None) -> Mask:
    """Keep exactly `n_keep` entries, ranked together over the layers `names` (default: all of `mask`)."""
    names = list(mask) if names is None else names
    if not names:  # a model whose one prunable layer is its output layer: the pool of the others is empty
        return {}
    flat_scores = torch.cat([scores[n].flatten().float() for n in names])
    flat_alive = torch.cat([mask[n].flatten() for n in names])
    flat = keep_top(flat_scores, flat_alive, n_keep)
    out, i = {}, 0
    for n in names:
        k = mask[n].numel()
        out[n] = flat[i:i + k].view_as(mask[n])
        i += k
    return out


def prune_to_density(scores: dict[str, torch.Tensor], mask: Mask, target: float, output_density: float,
                     scope: str, output_name: str) -> Mask:
    """One-shot: keep round(target x size) of the non-output layers (per layer, at ERK layer densities, or
    pooled) and round(output_density x size) of the output layer."""
    new: Mask = {}
    pool = [n for n in mask if n != output_name]
    if scope == "layerwise":
        for n in pool:
            new[n] = keep_density(scores[n], mask[n], target)
    elif scope == "erk":
        per_layer = erk_densities({n: mask[n] for n in pool}, target) if pool else {}
        for n in pool:
            new[n] = keep_density(scores[n], mask[n], per_layer[n])
    elif scope == "global":
        size = sum(mask[n].numel() for n in pool)
        alive = sum(int(mask[n].sum()) for n in pool)
        new.update(keep_global(scores, mask, min(alive, round(target * size)), pool))
    else:
        raise ValueError(f"unknown scope {scope!r}")
    if output_name is not None:
        new[output_name] = keep_density(scores[output_name], mask[output_name], output_density)
    return {n: new[n] for n in mask}


def keep_per_layer(scores, mask: Mask, counts: dict[str, int]) -> Mask:
    """Keep exactly counts[name] entries in each layer."""
    return {n: keep_top(scores[n], mask[n], counts[n]) for n in mask}


def erk_densities(mask: Mask, density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities (Evci et al. 2020, RigL): density proportional to
    sum(shape) / prod(shape), scaled so the network keeps `density` of all weights; a layer that would
    exceed 1 is made dense and the scale re-solved over the rest."""
    size = {n: m.numel() for n, m in mask.items()}
    raw = {n: sum(m.shape) / m.numel() for n, m in mask.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(size.values()) - sum(size[n] for n in dense)
        scale = budget / sum(raw[n] * size[n] for n in mask if n not in dense)
        top = max((n for n in mask if n not in dense), key=lambda n: raw[n], default=None)
        if top is None or scale * raw[top] <= 1:
            return {n: 1.0 if n in dense else scale * raw[n] for n in mask}
        dense.add(top)


def magnitude_scores(model_or_weights, mask: Mask) -> dict[str, torch.Tensor]:
    """|w| of the masked parameters, from a model or a state dict."""
    params = dict(model_or_weights.named_parameters()) if isinstance(model_or_weights, nn.Module) else model_or_weights
    return {n: params[n].detach().abs() for n in mask}


# ---------------------------------------------------------------- controls' mask transforms
def shuffle_within_layers(mask: Mask, generator: torch.Generator) -> Mask:
    """Permute each layer's mask entries: same per-layer counts, positions forgotten."""
    out = {}
    for n, m in mask.items():
        perm = torch.randperm(m.numel(), generator=generator).to(m.device)
        out[n] = m.flatten()[perm].view_as(m)
    return out


def random_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A fresh uniformly random mask with exactly the same number kept in every layer."""
    out = {}
    for n, m in mask.items():
        scores = torch.rand(m.shape, generator=generator).to(m.device)
        out[n] = keep_top(scores, torch.ones_like(m), int(m.sum()))
    return out


def inverted_like(mask: Mask, generator: torch.Generator) -> Mask:
    """Per layer, the same number kept, drawn at random from the ticket's *pruned* positions first.

    A layer keeping more than half its weights has too few pruned positions: it takes all of them and
    fills up with random kept ones, so the overlap with the ticket is the unavoidable minimum 2k - n.
    (Ranking by lowest trained |w| is no alternative: pruned weights are exactly 0 after training.)
    """
    out = {}
    for n, m in mask.items():
        # pruned positions score in [1, 2), kept ones in [0, 1): all pruned ones go first, at random
        scores = torch.rand(m.shape, generator=generator).to(m.device) + (~m).to(torch.float32)
        out[n] = keep_top(scores, torch.ones_like(m), int(m.sum()))
    return out


# ---------------------------------------------------------------- applying and exporting
@torch.no_grad()
def apply(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        params[n].mul_(m)


def export_pytorch(model: nn.Module, mask: Mask) -> nn.Module:
    """Attach the mask with `torch.nn.utils.prune.custom_from_mask`, so a ticket keeps its sparsity
    while training in code that knows nothing of this project. Modifies and returns `model`."""
    from torch.nn.utils import prune

    for n, m in mask.items():
        prune.custom_from_mask(owner(model, n), n.rpartition(".")[2], m.to(dtype=torch.float32))
    return model


def owner(model: nn.Module, name: str) -> nn.Module:
    """The module holding parameter `name` ("hidden.0.weight" -> model.hidden[0])."""
    return model.get_submodule(name.rpartition(".")[0])


def plain_state_dict(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """The ticket as an ordinary state_dict: pruned weights are stored as zeros."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for n, m in mask.items():
        sd[n].mul_(m)
    return sd
