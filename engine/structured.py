"""Structured sparsity patterns: N:M, whole channels, and IMP-Refill / IMP-Regroup (Chen et al. 2022).

Unstructured tickets cut FLOPs but rarely time: sparse kernels only pay off at very high sparsity. These
are the patterns hardware can use: whole output channels (the layer physically shrinks, engine.shrink)
and N:M, exactly N kept in every M consecutive weights along the input dimension (2:4 runs on sparse
tensor cores). Masks stay plain {name: bool tensor}; the rules here only decide which entries a layer
keeps, so the trainer, the store and the controls need nothing new.

A pattern applies to the hidden layers. The output layer's rows are the classes, so under every pattern
it is pruned weight by weight by the method's usual output rule (--output-fraction; 0 keeps it dense).
Conv weights are seen as 2-D: one row per output channel, the input dimension flattened to
in_channels x kh x kw (the GEMM a convolution runs as). For conv weights this is PyTorch's
(in, kh, kw) order: N:M groups of a 3x3 conv span kernel windows, unlike the input-channel-last layout
hardware 2:4 convolutions use (NVIDIA ASP), so conv N:M tickets show accuracy, not sparse-kernel speed.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import masks as M
from .config import CHANNEL_SCORES, PATTERNS, REFILLS, parse_nm  # noqa: F401  (the choices live with the config)
from .errors import ConfigError

REGROUP_GROUPS = 8       # IMP-Regroup: row groups per layer (k-means clusters)
REGROUP_ITERATIONS = 10  # ... and k-means iterations to find them


def rows(t: torch.Tensor) -> torch.Tensor:
    """A weight (or its mask) as a matrix: one row per output channel."""
    return t.reshape(t.shape[0], -1)


# ---------------------------------------------------------------- N:M
def keep_nm(scores: torch.Tensor, alive: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Exactly `n` of every `m` consecutive alive entries along the input dimension, highest scores first.

    Dead entries never come back; ties go to the earlier position, as in `masks.keep_top`. A row whose
    fan-in is not a multiple of `m` ends in a short group: it is padded with pruned entries (as a
    semi-structured kernel pads the matrix with zeros), so that group keeps min(n, its size).
    """
    a = rows(alive)
    out, fan_in = a.shape
    pad = -fan_in % m
    a = torch.cat([a, a.new_zeros(out, pad)], 1).view(out, -1, m)
    s = torch.cat([rows(scores).float(), a.new_zeros(out, pad, dtype=torch.float32)], 1).view(out, -1, m)
    s = torch.where(a, s, torch.tensor(float("-inf"), device=s.device))
    rank = torch.argsort(s, dim=-1, descending=True, stable=True).argsort(dim=-1)
    keep = a & (rank < n)
    need = torch.full(keep.shape[:2], n, device=keep.device)
    need[:, -1] = min(n, m - pad)
    if (keep.sum(-1) < need).any():
        raise ValueError(f"cannot keep {n}:{m}: some groups have fewer than {n} alive entries")
    return keep.view(out, -1)[:, :fan_in].reshape(alive.shape)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether every full group of `m` along the input dimension keeps exactly `n` (at most n in a short
    last group)."""
    a = rows(mask)
    full = a.shape[1] // m * m
    groups = a[:, :full].reshape(a.shape[0], -1, m).sum(-1)
    return bool((groups == n).all()) and bool((a[:, full:].sum(1) <= n).all())


# ---------------------------------------------------------------- channels
def following_norms(model: nn.Module) -> dict[str, str]:
    """{prunable weight: weight (gamma) of the BatchNorm that normalises its outputs}.

    Read from registration order, as in every model of the registry and the usual hand-written blocks:
    the first module with parameters registered after a Linear/Conv layer, if it is an affine BatchNorm
    over that layer's outputs.
    """
    out, last = {}, None
    for name, mod in model.named_modules():
        if isinstance(mod, M.PRUNABLE_TYPES):
            last = (name, mod)
        elif next(mod.parameters(recurse=False), None) is not None:
            if (last is not None and isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine
                    and mod.num_features == last[1].weight.shape[0]):
                out[M.param_name(last[0], "weight")] = M.param_name(name, "weight")
            last = None
    return out


def channel_scores(scores: dict[str, torch.Tensor], mask: M.Mask, weights: dict[str, torch.Tensor] | None = None,
                   norms: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """One score per output channel: the l1 norm of its row of scores over alive entries (for magnitude
    scores the l1 norm of its surviving weights), or |gamma| of its BatchNorm where `norms` names one."""
    norms = norms or {}
    return {n: weights[norms[n]].detach().abs().float() if n in norms
            else rows(torch.where(m, scores[n].float(), 0.0)).sum(1) for n, m in mask.items()}


def keep_channels(channel_score: torch.Tensor, alive: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Whole output channels: exactly `n_channels` of the alive rows, highest score first; a kept row
    keeps its alive entries (all of them, in a channel ticket: it started dense)."""
    a = rows(alive)
    kept = M.keep_top(channel_score, a.any(1), n_channels)
    return (a & kept[:, None]).reshape(alive.shape)


def alive_channels(alive: torch.Tensor) -> int:
    return int(rows(alive).any(1).sum())


# ---------------------------------------------------------------- IMP-Refill and IMP-Regroup
def refill(mask: M.Mask, channel_score: dict[str, torch.Tensor], names: list[str]) -> M.Mask:
    """IMP-Refill: per layer, n_c = nnz / fan-in equivalent channels (rounded, at least one); the n_c
    highest-scoring output channels become fully dense, the others are dropped. Kept weights that were
    pruned earlier come back (from the rewind point), so nnz stays within one channel of the budget.
    (Chen et al.'s Refill+, which keeps a few channels more, is not implemented.)"""
    new = dict(mask)
    for n in names:
        a = rows(mask[n])
        n_c = min(a.shape[0], max(1, round(int(a.sum()) / a.shape[1])))
        kept = M.keep_top(channel_score[n], torch.ones(a.shape[0], dtype=torch.bool, device=a.device), n_c)
        new[n] = kept[:, None].expand_as(a).reshape(mask[n].shape).clone()
    return new


def regroup(mask: M.Mask, scores: dict[str, torch.Tensor], names: list[str], groups: int = REGROUP_GROUPS) -> M.Mask:
    """IMP-Regroup, simplified: per layer, cluster the alive rows by their 0/1 column patterns (k-means,
    `groups` clusters, Hamming distance), then give every group one dense block: its rows x the columns
    with the largest l1 of surviving scores in the group, as many columns as keep the group's nnz
    (rounded, at least one). Chen et al. find the groups by hypergraph partitioning; k-means on the
    patterns keeps the idea (rows sharing columns share a dense GEMM) at a fraction of the code."""
    new = dict(mask)
    for n in names:
        a = rows(mask[n])
        s = rows(torch.where(mask[n], scores[n].float(), 0.0))
        alive = a.any(1).nonzero().flatten()
        out = torch.zeros_like(a)
        if len(alive):
            labels = _kmeans(a[alive].float(), groups)
            for g in labels.unique():
                members = alive[labels == g]
                n_cols = min(a.shape[1], max(1, round(int(a[members].sum()) / len(members))))
                cols = M.keep_top(s[members].sum(0), torch.ones(a.shape[1], dtype=torch.bool, device=a.device),
                                  n_cols).nonzero().flatten()
                out[members[:, None], cols[None, :]] = True
        new[n] = out.reshape(mask[n].shape)
    return new


def _kmeans(x: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster labels of the rows of `x`: Lloyd's k-means from evenly spaced rows (deterministic)."""
    k = min(k, len(x))
    centres = x[torch.linspace(0, len(x) - 1, k).round().long()].clone()
    for _ in range(REGROUP_ITERATIONS):
        labels = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = labels == j
            if members.any():
                centres[j] = x[members].mean(0)
    return torch.cdist(x, centres).argmin(1)


# ---------------------------------------------------------------- the configured pattern, for methods
def imp_levels(cfg) -> int:
    """IMP's number of levels: --levels, or under --pattern nm at most M - N (one fewer kept per group per
    level, from M:M down to N:M; further levels would repeat the same mask)."""
    if cfg.pattern != "nm":
        return cfg.levels
    n, m = parse_nm(cfg.nm)
    return max(1, min(cfg.levels, m - n))


def hidden_density(cfg) -> float:
    """The hidden layers' target density: N/M under --pattern nm (the pattern fixes it), else --density."""
    if cfg.pattern != "nm":
        return cfg.density
    n, m = parse_nm(cfg.nm)
    return n / m


class Pattern:
    """The configured --pattern, --nm, --refill and --channel-score as the selection rules methods call:
    `imp_level` (an IMP level), `one_shot` (one-shot) and `prune_to` (per-layer densities,
    pruning at init). `weights` arguments are state dicts: the BatchNorm scales are read from them."""

    def __init__(self, cfg, model: nn.Module):
        self.cfg, self.kind = cfg, cfg.pattern
        self.n, self.m = parse_nm(cfg.nm)
        self.output = M.output_layer(model)
        self.norms = following_norms(model) if cfg.channel_score == "bn" else {}

    @property
    def structured(self) -> bool:
        return self.kind != "unstructured"

    def hidden(self, mask: M.Mask) -> list[str]:
        return [n for n in mask if n != self.output]

    def imp_level(self, scores, mask: M.Mask, weights, level: int) -> M.Mask:
        """IMP level `level`: unstructured (then refill/regroup) loses --prune-fraction of each layer's
        alive weights (or of the pool); channel loses that fraction of each layer's alive channels; N:M keeps
        M - ceil(level (M - N) / levels) per group, reaching N:M at the last level."""
        cfg = self.cfg
        if self.kind == "unstructured":
            new = M.prune_step(scores, mask, cfg.prune_fraction, cfg.output_fraction, cfg.scope, self.output)
            return self.refine(new, scores, weights)
        new = {self.output: M.drop_fraction(scores[self.output], mask[self.output], cfg.output_fraction)}
        if self.kind == "nm":
            per_group = self.m - math.ceil(level * (self.m - self.n) / imp_levels(cfg))
            new.update({k: keep_nm(scores[k], mask[k], per_group, self.m) for k in self.hidden(mask)})
        else:
            score = channel_scores(scores, mask, weights, self.norms)
            for k in self.hidden(mask):
                alive = alive_channels(mask[k])
                new[k] = keep_channels(score[k], mask[k], max(1, alive - math.ceil(cfg.prune_fraction * alive)))
        return {k: new[k] for k in mask}

    def one_shot(self, scores, mask: M.Mask, weights, density: float, output_density: float) -> M.Mask:
        """One-shot: the hidden layers at `density` (N:M: N per group), the output layer at
        `output_density`, then refill/regroup."""
        if self.structured:
            new = self.prune_to(scores, mask, weights, {n: density for n in self.hidden(mask)}
                                | {self.output: output_density})
        else:
            new = M.prune_to_density(scores, mask, density, output_density, self.cfg.scope, self.output)
        return self.refine(new, scores, weights)

    def prune_to(self, scores, mask: M.Mask, weights, densities: dict[str, float], progress: float = 1.0) -> M.Mask:
        """A structured pattern at per-layer `densities`: round(d x channels) channels (at least one), N:M
        whatever the density, the output layer weight by weight. At `progress` < 1 (SynFlow's rounds) a
        layer keeps d^progress, and N:M keeps M - ceil(progress (M - N)) per group."""
        o = self.output
        new = {o: M.keep_density(scores[o], mask[o], densities[o] ** progress)}
        if self.kind == "nm":
            per_group = self.m - math.ceil(progress * (self.m - self.n))
            new.update({k: keep_nm(scores[k], mask[k], per_group, self.m) for k in self.hidden(mask)})
        else:
            score = channel_scores(scores, mask, weights, self.norms)
            for k in self.hidden(mask):
                count = max(1, round(densities[k] ** progress * mask[k].shape[0]))
                new[k] = keep_channels(score[k], mask[k], min(alive_channels(mask[k]), count))
        return {k: new[k] for k in mask}

    def refine(self, mask: M.Mask, scores, weights) -> M.Mask:
        """--refill: coarsen an unstructured mask's hidden layers into dense channels or dense blocks."""
        if self.cfg.refill == "refill":
            return refill(mask, channel_scores(scores, mask, weights, self.norms), self.hidden(mask))
        if self.cfg.refill == "regroup":
            return regroup(mask, scores, self.hidden(mask))
        return mask


def check_model(cfg, model: nn.Module) -> None:
    """Settings that only the model can refute, checked before anything trains."""
    uses_channels = cfg.pattern == "channel" or cfg.refill == "refill"
    if uses_channels and cfg.channel_score == "bn" and not following_norms(model):
        raise ConfigError("prune.channel_score", cfg.channel_score, "this model has no BatchNorm after its "
                          "Linear/Conv layers; use l1")
