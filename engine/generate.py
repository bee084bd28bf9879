"""DeepWeightFlow: learn the distribution of a zoo's trained weights and sample new networks from it.

    canonicalise  permute every member's hidden units to match a reference member (Git Re-Basin), then
                  re-match each to the mean of the others for a few rounds (MergeMany), so the zoo's weights
                  differ by what they learned, not by the order of their units, and sit around one mean;
    flatten       one row per member (a ticket zoo: only the entries its mask keeps);
    PCA           K <= members - 1 components (the zoo spans at most N - 1 directions; default all of them);
    standardise   centred, then divided by one global scale (default) or each coordinate by its own;
    flow          a velocity MLP trained with conditional flow matching on the straight path
                  x_t = (1 - t) x0 + t x1 (target x1 - x0), x0 ~ N(0, I), with Meta's `flow-matching`
                  library (AffineProbPath + CondOTScheduler) and sampled by integrating the ODE with its
                  ODESolver (torchdiffeq underneath);
    back          undo standardisation and PCA, unflatten into the architecture (mask re-applied, so a
                  generated ticket has exactly the zoo's density), recompute BatchNorm statistics where
                  present, REPAIR where not (`--repair`: each hidden unit rescaled to the activation statistics
                  of the members the net blends, no gradient), evaluate with `engine.trainer.evaluate`. No
                  fine-tuning.

What a generation is measured against: the zoo itself (accuracy, diversity = mean pairwise disagreement of
test predictions, novelty = each net's nearest-neighbour distance to the zoo next to the zoo members' own
leave-one-out nearest-neighbour distances) and two baselines that need no flow: a Gaussian fitted to the zoo
in the same coordinates, and the zoo's mean as one network. Both baselines are also given without
canonicalisation, where averaging unaligned networks is known to fail.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .batched import member_weights, stack_weights
from .config import option, validate
from .errors import ConfigError, RunCancelled

Stack = dict[str, torch.Tensor]   # parameter name -> tensor [N, ...]: N networks' weights, stacked
NEAR_COPY = 0.5                   # a generated net closer to a zoo member than this x the zoo's median
                                  # nearest-neighbour distance counts as a near copy of it


# ---------------------------------------------------------------- weight space <-> rows
def members(stack: Stack) -> int:
    return next(iter(stack.values())).shape[0]


def flat_names(stack: Stack) -> list[str]:
    """The entries that are weights (floating point); integer buffers (BatchNorm's counter) are not."""
    return [k for k, v in stack.items() if v.is_floating_point()]


def flatten(stack: Stack, mask: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """[N, D]: every member's floating-point entries in one row; with a mask, only the entries it keeps
    (pruned entries are 0 in every member and carry nothing to learn)."""
    rows = []
    for k in flat_names(stack):
        v = stack[k].flatten(1)
        if mask is not None and k in mask:
            v = v[:, mask[k].flatten().to(v.device)]
        rows.append(v)
    return torch.cat(rows, 1)


def unflatten(x: torch.Tensor, like: Stack, mask: dict[str, torch.Tensor] | None = None) -> Stack:
    """The inverse of `flatten` for M rows; `like` gives names and shapes (and the non-weight buffers,
    copied from its first member). Pruned entries are exactly 0."""
    out, i, m = {}, 0, x.shape[0]
    for k, v in like.items():
        shape = v.shape[1:]
        if not v.is_floating_point():
            out[k] = v[:1].expand(m, *shape).clone()
            continue
        keep = mask[k].flatten().to(x.device) if mask is not None and k in mask else None
        n = int(keep.sum()) if keep is not None else math.prod(shape)
        part = x[:, i:i + n]
        i += n
        if keep is not None:
            full = x.new_zeros(m, math.prod(shape))
            full[:, keep] = part
            part = full
        out[k] = part.reshape(m, *shape).to(v.dtype)
    if i != x.shape[1]:
        raise ValueError(f"rows have {x.shape[1]} entries, the architecture {i}")
    return out


def canonicalise(stack: Stack, match: Callable[[dict, dict], dict], reference: int = 0,
                 cancel=None) -> Stack:
    """Every member permuted to match member `reference` (which stays as it is)."""
    ref = member_weights(stack, reference)
    states = []
    for i in range(members(stack)):
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")
        states.append(ref if i == reference else match(ref, member_weights(stack, i)))
    return stack_weights(states)


# ---------------------------------------------------------------- coordinates: PCA + standardisation
STANDARDISE = ("global", "coordinate")


@dataclass
class Coordinates:
    """x (flattened weights) <-> z (what the flow sees): z = ((x - mean) V) / scale, V the top-K principal
    directions of the zoo (identity without PCA); scale one number for all coordinates ("global": the zoo's
    shape kept, its total variance K) or each coordinate's own standard deviation ("coordinate")."""
    mean: torch.Tensor            # [D]
    basis: torch.Tensor | None    # [D, K] orthonormal columns, or None
    scale: torch.Tensor           # [K] or [D]

    @classmethod
    def fit(cls, x: torch.Tensor, pca: int = 0, standardise: str = "global") -> "Coordinates":
        mean = x.mean(0)
        centred = x - mean
        basis = None
        if pca:
            # SVD of the centred zoo: its right singular vectors are the principal directions.
            _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
            basis = vh[:pca].T.to(x.dtype).contiguous()
            centred = centred @ basis
        scale = centred.std(0)
        if standardise == "global":
            # Whitening all N - 1 principal coordinates of N members would place them at the corners of a
            # regular simplex (every pairwise distance equal): the flow would no longer see which directions
            # the zoo varies in. One scale keeps that shape (measured: see GenerateOptions.standardise).
            scale = scale.pow(2).mean().sqrt().expand_as(scale).clone()
        scale = scale.clamp_min(1e-8)  # a coordinate every member shares stays put, not NaN
        return cls(mean, basis, scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        c = x - self.mean
        if self.basis is not None:
            c = c @ self.basis
        return c / self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = z * self.scale
        if self.basis is not None:
            c = c @ self.basis.T
        return c + self.mean

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "scale": self.scale, **({"basis": self.basis} if self.basis is not None else {})}

    @classmethod
    def from_state(cls, s: dict[str, torch.Tensor]) -> "Coordinates":
        return cls(s["mean"], s.get("basis"), s["scale"])


def check_pca(pca: int, n_members: int) -> None:
    """K principal components of N networks: the centred zoo has rank at most N - 1."""
    if not isinstance(pca, int) or isinstance(pca, bool) or pca < 0 or (pca and pca > n_members - 1):
        raise ConfigError("pca", pca, f"must be 0 (no PCA) or 1..{n_members - 1} (members - 1) for a zoo of "
                          f"{n_members} members")


# ---------------------------------------------------------------- the velocity network and the flow
class Velocity(nn.Module):
    """u(x, t): an MLP over [x, sin/cos features of t] -> R^dim (SiLU; DeepWeightFlow uses an MLP too)."""

    FREQUENCIES = 8

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.dim = dim
        sizes = [dim + 2 * self.FREQUENCIES, *[hidden] * depth]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], dim))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(self.FREQUENCIES, dtype=torch.float32))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).expand(x.shape[0], 1) * self.freqs  # the ODE solver passes one scalar t
        return self.net(torch.cat([x, t.sin(), t.cos()], 1))


def train_flow(z: torch.Tensor, *, steps: int, hidden: int = 256, lr: float = 1e-3, batch: int = 256,
               ema: float = 0.0, seed: int = 0, cancel=None, on_progress: Callable[[int, float], None] | None = None,
               progress_every: int = 100) -> tuple[Velocity, list[float]]:
    """Conditional flow matching on the rows of z: (velocity network, loss every `progress_every` steps).

    Each step draws a batch of zoo rows x1, noise x0 ~ N(0, I) and t ~ U(0, 1); the library's affine path
    with the conditional-OT scheduler gives x_t = (1 - t) x0 + t x1 and the target velocity x1 - x0.
    With `ema` > 0 the network returned is an exponential moving average of the trained one's weights
    (decay `ema` per step, torch.optim.swa_utils), as diffusion and flow models are usually sampled.
    """
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the velocity network's own initialisation
        model = Velocity(z.shape[1], hidden).to(z.device)
    path = AffineProbPath(scheduler=CondOTScheduler())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    averaged = None
    if ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema))
    n, b = z.shape[0], min(batch, z.shape[0])
    losses, running = [], torch.zeros((), device=z.device)
    for step in range(steps):
        x1 = z[torch.randint(0, n, (b,), generator=g).to(z.device)]
        x0 = torch.randn(x1.shape, generator=g).to(z.device)
        t = torch.rand(b, generator=g).to(z.device)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        loss = (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if averaged is not None:
            averaged.update_parameters(model)
        running += loss.detach()
        if (step + 1) % progress_every == 0 or step + 1 == steps:
            losses.append(float(running) / ((step % progress_every) + 1))
            running.zero_()
            if on_progress is not None:
                on_progress(step + 1, losses[-1])
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")
    if averaged is not None:
        model = averaged.module
    model.eval()
    return model, losses


ODE_METHODS = ("euler", "midpoint", "rk4")


@torch.no_grad()
def sample_flow(model: Velocity, n: int, *, ode_steps: int = 100, method: str = "midpoint",
                temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """n rows integrated from x0 ~ N(0, temperature^2 I) at t = 0 to t = 1 with the library's ODE solver
    (a temperature below 1 starts nearer the noise's centre: the usual flow trick for fewer, likelier samples)."""
    from flow_matching.solver import ODESolver

    device = next(model.parameters()).device
    x0 = temperature * torch.randn(n, model.dim, generator=torch.Generator().manual_seed(seed)).to(device)
    solver = ODESolver(velocity_model=model)
    grid = torch.tensor([0.0, 1.0], device=device)
    return solver.sample(x_init=x0, step_size=1.0 / ode_steps, method=method, time_grid=grid)


def gaussian_rows(z: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n rows of the Gaussian with the zoo's mean and covariance in these coordinates: mean + w (z - mean)
    / sqrt(N - 1), w ~ N(0, I_N), which has exactly the sample covariance even when it is rank-deficient
    (coordinates > members)."""
    mean = z.mean(0)
    w = torch.randn(n, z.shape[0], generator=torch.Generator().manual_seed(seed)).to(z.device)
    return mean + w @ (z - mean) / math.sqrt(max(1, z.shape[0] - 1))


# ---------------------------------------------------------------- measuring networks
@torch.no_grad()
def evaluate_stack(make_model: Callable[[], nn.Module], stack: Stack, split, *, bn_data=None,
                   cancel=None) -> tuple[list[float], torch.Tensor]:
    """(test accuracy of every network, their predictions [M, examples]) with `engine.trainer.evaluate`;
    BatchNorm statistics are recomputed on `bn_data` first where the architecture has BatchNorm (a
    generated network has none of its own)."""
    from .analysis.interpolation import batchnorms, recompute_bn_stats
    from .trainer import evaluate

    net = make_model().to(split.x.device)
    has_bn = bool(batchnorms(net))
    if has_bn and bn_data is None:
        raise ValueError("this model has BatchNorm: pass bn_data to recompute its statistics")
    accs, preds = [], []
    for i in range(members(stack)):
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")
        net.load_state_dict(member_weights(stack, i))
        if has_bn:
            recompute_bn_stats(net, bn_data)
        accs.append(evaluate(net, split)[1])
        net.eval()
        with torch.inference_mode():
            preds.append(net(split.x).argmax(1))
    return accs, torch.stack(preds)


# ---------------------------------------------------------------- REPAIR (Jordan et al. 2022, arXiv 2211.08403)
# A net that averages or mixes aligned networks has hidden pre-activations of smaller spread than any of them
# (variance collapse); REPAIR rescales each hidden unit so its pre-activation mean and standard deviation on
# training data are those of the networks it mixes: for a point (1 - a) A + a B, (1 - a) times A's statistics
# plus a times B's. Data statistics and no gradient, like recomputing BatchNorm statistics. Written here (forward
# hooks, about 50 lines) because no maintained library does it for a plain module; the authors' code is notebooks.
REPAIR = ("auto", "mix", "mean", "none")
REPAIR_EXAMPLES = 1024   # training examples the statistics are taken on (one batch; digits: 1024 of 1437)
REPAIR_FLAT = 1e-6       # a unit whose pre-activation varies less than this over the batch is only shifted
UnitStats = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer -> (mean, std) per unit, [networks, units]


def repair_layers(model: nn.Module, asked: str = "mix") -> list[str]:
    """Module names of the hidden Linear/Conv2d layers REPAIR rescales, in forward order (every one but the
    output layer, which is not touched). ConfigError (one line, naming the `asked` value of repair, which the
    CLI names --repair) for models it does not apply to."""
    from .analysis.interpolation import batchnorms

    what = "applies to chains of Linear/Conv2d layers with ReLU and max-pooling (mlp, lenet300, conv2/4/6)"
    name = type(model).__name__
    if batchnorms(model):
        raise ConfigError("repair", asked, f"{name} has BatchNorm, whose statistics are recomputed for every "
                          f"generated net already; repair {what}")
    chain = model.as_sequential() if hasattr(model, "as_sequential") else None
    allowed = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)
    if chain is None or not all(isinstance(m, allowed) for m in chain):
        raise ConfigError("repair", asked, f"{name} is not such a chain; repair {what}")
    layers = [m for m in chain if isinstance(m, (nn.Linear, nn.Conv2d))]
    if any(m.bias is None for m in layers[:-1]):  # the mean is moved through the bias
        raise ConfigError("repair", asked, f"{name} has a hidden layer without bias; repair {what}")
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(m)] for m in layers[:-1]]


def resolve_repair(repair: str, model: nn.Module) -> str:
    """auto -> mix where REPAIR applies, none where it does not (BatchNorm: its statistics are recomputed
    instead); mix or mean asked of a model it does not apply to: ConfigError (one line)."""
    if repair == "auto":
        try:
            repair_layers(model)
        except ConfigError:
            return "none"
        return "mix"
    if repair != "none":
        repair_layers(model, repair)
    return repair


def _unit_stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of each unit (dim 1: a Linear's outputs, a conv's channels) over examples and positions."""
    std, mean = torch.std_mean(out.double(), dim=[d for d in range(out.dim()) if d != 1], correction=0)
    return mean, std


def _forward_each(net: nn.Module, stack: Stack, x: torch.Tensor, hooks: dict[str, Callable],
                  after: Callable[[nn.Module], object] | None = None) -> list:
    """Load each network of `stack` into `net` in turn and run x through it, with `hooks[name](i, module, out)` a
    forward hook on module `name` while network i runs (what it returns, if not None, replaces the module's output);
    the hooks are removed however this ends. Returns `after(net)` of each network after its pass (with `after`)."""
    modules = dict(net.named_modules())
    current = 0  # the network running (the hooks read it)
    handles = [modules[k].register_forward_hook(lambda module, _, out, hook=hook: hook(current, module, out))
               for k, hook in hooks.items()]
    results = []
    try:
        for current in range(members(stack)):
            net.load_state_dict(member_weights(stack, current))
            net(x)
            if after is not None:
                results.append(after(net))
    finally:
        for h in handles:
            h.remove()
    return results


@torch.no_grad()
def unit_statistics(make_model: Callable[[], nn.Module], stack: Stack, x: torch.Tensor) -> UnitStats:
    """Every network's own pre-activation mean and std of each hidden unit on the batch x."""
    net = make_model().to(x.device).eval()
    seen: dict[str, list] = {k: [] for k in repair_layers(net)}
    _forward_each(net, stack, x, {k: lambda i, module, out, k=k: seen[k].append(_unit_stats(out)) for k in seen})
    return {k: tuple(map(torch.stack, zip(*v))) for k, v in seen.items()}


class Span:
    """A zoo's N flattened members in coordinates of their own span (the SVD of the centred rows, taken once per
    zoo however many sets of networks are then mixed from it)."""

    def __init__(self, zoo: torch.Tensor):
        self.mean = zoo.mean(0)
        u, sv, self.vh = torch.linalg.svd((zoo - self.mean).double(), full_matrices=False)
        self.members_at = (u * sv).cpu().numpy()  # [N, r]: members in span coordinates, exact distances


def mixing_weights(span: Span, rows: torch.Tensor) -> torch.Tensor:
    """[M, N]: for each row (a flattened network) the convex combination of the N zoo rows nearest to it
    (weights >= 0 summing to 1, scipy's non-negative least squares), computed in the zoo's own span: a near copy
    of a member gets weight ~1 on it, the zoo's mean 1/N on every member, a point outside the zoo's hull the
    mix of its projection on the hull."""
    from scipy.optimize import nnls

    members_at = span.members_at
    rows_at = ((rows - span.mean).double() @ span.vh.T).cpu().numpy()  # the rows' projections on that span
    n = members_at.shape[0]
    weight = 1e3 * max(1.0, float(abs(members_at).max()))  # "sum to 1" as a heavily weighted extra equation
    design = np.vstack([members_at.T, np.full((1, n), weight)])
    out = []
    for r in rows_at:
        a, _ = nnls(design, np.append(r, weight), maxiter=50 * n)
        out.append(a / a.sum())
    return torch.tensor(np.array(out), dtype=torch.float64)


@torch.no_grad()
def repair(make_model: Callable[[], nn.Module], stack: Stack, targets: UnitStats, x: torch.Tensor) -> Stack:
    """Every network of `stack` with each hidden layer's units rescaled, in forward order (each layer sees the
    earlier ones corrected), so that their pre-activation mean and std on x are its row of `targets`:
    W <- W * (S / s) row-wise (a conv: per output channel), b <- (b - m) * (S / s) + M. A pruned weight stays
    exactly 0 (it is only multiplied); a unit flat on the batch (s below REPAIR_FLAT) is only shifted, and one
    whose target std is 0 (flat in every member it blends) gets all-zero weights: a constant, as they have."""
    def correct(name, i, module, out):  # layer `name` of network i
        m, s = _unit_stats(out)
        mean, std = (t[i] for t in targets[name])
        ratio = torch.where(s > REPAIR_FLAT, std / s.clamp_min(REPAIR_FLAT), torch.ones_like(s))
        module.weight.mul_(ratio.to(module.weight.dtype).reshape((-1,) + (1,) * (module.weight.dim() - 1)))
        module.bias.copy_(((module.bias - m) * ratio + mean).to(module.bias.dtype))
        # what the corrected layer gives on x, so the next layer is corrected on what it will see
        view = (1, -1) + (1,) * (out.dim() - 2)
        return ((out.double() - m.reshape(view)) * ratio.reshape(view) + mean.reshape(view)).to(out.dtype)

    net = make_model().to(x.device).eval()
    return stack_weights(_forward_each(net, stack, x, {k: functools.partial(correct, k) for k in targets},
                                       after=lambda net: {k: v.clone() for k, v in net.state_dict().items()}))


def repair_targets(stats: UnitStats, weights: torch.Tensor) -> UnitStats:
    """Each network's targets: its mixing weights [M, N] times the N members' statistics."""
    return {k: (weights @ m, weights @ s) for k, (m, s) in stats.items()}


def disagreement(preds: torch.Tensor) -> float:
    """Mean over pairs of networks of the fraction of examples on which their predictions differ."""
    m = preds.shape[0]
    if m < 2:
        return 0.0
    onehot = nn.functional.one_hot(preds).float()              # [M, E, C]
    agree = torch.einsum("iec,jec->ij", onehot, onehot) / preds.shape[1]
    return float((1 - agree).sum() / (m * (m - 1)))


def nearest_other(zoo: torch.Tensor) -> torch.Tensor:
    """Each zoo member's distance to its nearest other member (flattened rows)."""
    zz = torch.cdist(zoo.double(), zoo.double())
    zz.fill_diagonal_(float("inf"))
    return zz.min(1).values


def novelty(generated: torch.Tensor, zoo: torch.Tensor, zoo_nn: torch.Tensor | None = None) -> dict:
    """Distances in (canonicalised) weight space: each generated net's nearest zoo member, next to each zoo
    member's nearest other member (`zoo_nn`, `nearest_other(zoo)`: pass it when measuring several sets against one
    zoo, the N x N distances are the costly part). A generated net nearer than NEAR_COPY x the zoo's median
    nearest-neighbour distance is counted as a near copy."""
    zoo_nn = nearest_other(zoo) if zoo_nn is None else zoo_nn
    gen_nn = torch.cdist(generated.double(), zoo.double()).min(1).values
    typical = float(zoo_nn.median())
    return {"zoo_nn": zoo_nn.tolist(), "generated_nn": gen_nn.tolist(), "zoo_nn_median": typical,
            "generated_nn_median": float(gen_nn.median()),
            "near_copy_share": float((gen_nn < NEAR_COPY * typical).float().mean())}


def family_placement(generated: torch.Tensor, zoo: torch.Tensor, families: list[int]) -> dict:
    """Where generated nets lie relative to a family zoo's families (members sharing an init, engine.zoo): each
    net's distance to the nearest family centre (its members' mean), next to each family's radius (its farthest
    member from its centre) and the distance from each centre to the nearest other. A net within its nearest
    family's radius is inside that family's cloud: a new net in a basin the zoo samples, not a new basin."""
    ids = sorted(set(families))
    which = torch.tensor([ids.index(f) for f in families])
    zoo = zoo.double()
    centres = torch.stack([zoo[which == j].mean(0) for j in range(len(ids))])
    radius = torch.stack([(zoo[which == j] - centres[j]).norm(dim=1).max() for j in range(len(ids))])
    d = torch.cdist(generated.double(), centres)
    nearest, j = d.min(1)
    between = torch.cdist(centres, centres).fill_diagonal_(float("inf")).min(1).values
    return {"families": len(ids), "generated_centre_median": float(nearest.median()),
            "radius_median": float(radius.median()), "between_median": float(between.median()),
            "inside_share": float((nearest <= radius[j]).float().mean())}


def distribution(values: list[float]) -> dict:
    """Median, 5th/95th percentiles, min, max and mean of a list of accuracies."""
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    return {"n": len(values), "median": q[1], "p05": q[0], "p95": q[2], "min": float(t.min()),
            "max": float(t.max()), "mean": float(t.mean())}


# ---------------------------------------------------------------- one generation of a stored zoo
@dataclass(frozen=True)
class GenerateOptions:
    """What `lottery generate ZOO_ID` (and the explorer's generate button) asks for."""
    samples: int = option(32, "networks to generate", lo=1, hi=100_000)
    canonicalise: str = option("auto", "permute every member to match the reference member before learning "
                               "(Git Re-Basin weight matching); auto: rebasin for a dense zoo, none for a ticket zoo "
                               "(its members share their start point and mask)", choices=["auto", "rebasin", "none"])
    align_rounds: int = option(20, "rebasin: rounds of re-matching every member to the mean of the others after "
                               "matching to the reference (MergeMany; 0: the reference only, as DeepWeightFlow). "
                               "Digits, 64 MLPs 128-128: zoo mean as one net .914 -> .931, Gaussian .60 -> .86, "
                               "generated .917 -> .938; MLPs 32-32: Gaussian .49 -> .63, generated level (.885/.890)",
                               lo=0, hi=10_000)
    pca: int | None = option(None, "principal components the flow works in (default: members - 1, the zoo's whole "
                             "span; 0: no PCA). Digits, 64 MLPs 32-32: 63 components .89, none .31; fewer "
                             "components lose the members themselves (projected on 32: .79)", lo=0)
    standardise: str = option("global", "scale of the flow's coordinates: one global scale (keeps the zoo's shape) "
                              "or each coordinate to unit variance (whitens it). Digits, 64 MLPs 32-32, 3 flow "
                              "seeds: global .901, coordinate .892; 128-128 level; 256 members .67 vs .72",
                              choices=list(STANDARDISE))
    steps: int = option(3000, "flow-matching training steps", lo=1, hi=10_000_000)
    ode_steps: int = option(100, "ODE integration steps from noise to weights", lo=1, hi=100_000)
    ode_method: str = option("rk4", "ODE solver (torchdiffeq)", choices=list(ODE_METHODS))
    temperature: float = option(1.0, "standard deviation of the noise the ODE starts from, N(0, t^2 I): below 1 "
                                "samples nearer the noise's centre, fewer near copies of members at about the same "
                                "accuracy (digits, 64 MLPs 32-32, 3 seeds: 1.0 .903 with 47% near copies, 0.6 .903 "
                                "with 31%, 0.4 .897 with 16%)", lo=0, lo_open=True, hi=10)
    ema: float = option(0.0, "sample with an exponential moving average of the velocity network's weights, this "
                        "decay per step (0: the trained weights; digits 32-32, 3 seeds: 0.999 .906 vs .903, within "
                        "the seeds' spread)", lo=0, hi=1, hi_open=True)
    repair: str = option("auto", "REPAIR (Jordan et al. 2022), applied alike to the generated nets and both "
                         "baselines: every hidden unit rescaled so its pre-activation mean and std on 1024 training "
                         "examples are those of the (canonicalised) members the net mixes, no gradient. mix: the "
                         "members of the convex combination nearest to it, weighted by it (a near copy: its member's; "
                         "the zoo's mean: all alike); mean: all members alike; auto: mix for models without BatchNorm "
                         "(mlp, lenet300, conv2/4/6), none for those with it (their statistics are recomputed). "
                         "Digits, 64 MLPs, 3 seeds, generated median none -> mix: 32-32 .903 -> .925, 128-128 .929 -> "
                         ".944, 512-512 .951 -> .963; the zoo's mean as one net rises alike", choices=list(REPAIR))
    hidden: int = option(256, "width of the velocity MLP's three hidden layers", lo=1, hi=65_536)
    lr: float = option(3e-3, "Adam learning rate of the velocity MLP, cosine-decayed (digits, 64 members, PCA 63, "
                       "3000 steps: 3e-3 gave a generated median of .890, 1e-3 .846, 1e-3 for 10000 steps .882)",
                       lo=0, lo_open=True, hi=10)
    reference: int = option(0, "the zoo member the others are permuted to match", lo=0)
    prune_density: float = option(0.0, "also magnitude-prune every generated and every zoo network to this density "
                                  "(layerwise, no retraining) and compare (0: skip; dense zoos)", lo=0, hi=1,
                                  hi_open=True)
    seed: int = option(0, "seed of the flow's initialisation, batches and samples", lo=0, hi=2**31 - 1)

    def __post_init__(self):
        validate(self)


@dataclass
class _Plan:
    zoo: object                  # engine.zoo.Zoo
    options: GenerateOptions
    canonicalise: str            # "rebasin" or "none" (auto resolved)
    generation_id: str


# Options added after generations were first stored, at the value that reproduces those generations: left out
# of the hash there, so a generation stored before they existed keeps its id.
ADDED_LATER = {"temperature": 1.0, "ema": 0.0, "repair": "none"}


def generation_id(options: GenerateOptions) -> str:
    """gen-HASH over the options that change what is generated (all of them)."""
    values = {k: v for k, v in dataclasses.asdict(options).items() if ADDED_LATER.get(k, ...) != v}
    blob = json.dumps(values, sort_keys=True).encode()
    return "gen-" + hashlib.sha256(blob).hexdigest()[:10]


def plan(runs_dir, zoo_id: str, options: GenerateOptions) -> _Plan:
    """Open the zoo (on the device its config names) and check the options against it; writes nothing.
    Errors are one line."""
    from . import masks as M
    from .runner import resolve_device
    from .zoo import load_zoo

    zoo = load_zoo(runs_dir, zoo_id)
    device = resolve_device(zoo.config.device)
    if device.type != "cpu":
        zoo.weights = {k: v.to(device) for k, v in zoo.weights.items()}
        zoo.mask = None if zoo.mask is None else {k: v.to(device) for k, v in zoo.mask.items()}
        zoo.device = device
    n = len(zoo)
    if n < 2:
        raise ConfigError("ZOO_ID", zoo_id, f"has {n} member; a distribution needs at least 2")
    if options.pca is None:  # resolved before hashing: the default and an explicit members - 1 are one generation
        options = dataclasses.replace(options, pca=n - 1)
    check_pca(options.pca, n)
    if options.reference >= n:
        raise ConfigError("reference", options.reference, f"must be a member index 0..{n - 1}")
    model = zoo.model()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape[1:]) for k, v in zoo.weights.items()}
    if expected != stored:
        diff = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise ConfigError("ZOO_ID", zoo_id, f"its weights do not fit the architecture of its config "
                          f"({zoo.config.model.model}): {diff[0]} is {stored.get(diff[0])}, the model has "
                          f"{expected.get(diff[0])}")
    auto = "none" if zoo.mask is not None else "rebasin"
    canon = auto if options.canonicalise == "auto" else options.canonicalise
    if canon == "rebasin" and zoo.mask is not None:
        raise ConfigError("canonicalise", "rebasin", "a ticket zoo's members share one mask and start point "
                          "(already one coordinate system); permuting them would move the mask: use none or auto")
    if canon == "rebasin":
        from .rebasin import permutation_spec
        permutation_spec(model)  # raises Unsupported (one line) for architectures it cannot permute
    # resolved before hashing: auto and what it chose are one generation (canonicalise the other way round, to
    # "auto", so that the generations stored with the default keep their ids)
    options = dataclasses.replace(options, repair=resolve_repair(options.repair, model),
                                  canonicalise="auto" if canon == auto else canon)
    if canon == "none":  # the reference and MergeMany's rounds only apply to re-basin: asked or not, one generation
        defaults = GenerateOptions()
        options = dataclasses.replace(options, align_rounds=defaults.align_rounds, reference=defaults.reference)
    if options.prune_density and zoo.mask is not None:
        raise ConfigError("prune_density", options.prune_density, "applies to dense zoos (a ticket zoo is pruned "
                          "already)")
    if zoo.mask is not None and set(zoo.mask) != set(M.prunable(model)):
        raise ConfigError("ZOO_ID", zoo_id, "its mask does not fit its architecture")
    return _Plan(zoo, options, canon, generation_id(options))


def generation_dir(runs_dir, zoo_id: str, gen_id: str) -> Path:
    """ZOO_DIR/generations/GEN_ID (both ids plain names: the path stays inside the zoo's folder)."""
    from .store import RunStore

    return RunStore(runs_dir, zoo_id).path("generations", gen_id)


def _stored_generations(runs_dir, zoo_id: str) -> list[tuple[str, dict | str]]:
    """(id, report, or why it cannot be read) of every complete generation stored with a zoo, oldest first."""
    from .store import RunStore, read_objects

    store = RunStore(runs_dir, zoo_id)
    folder = store.path("generations")
    names = [p.name for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []
    reports = [store.path("generations", n, "report.json") for n in names]  # ".gen-…": being written, not yet stored
    paths = {p.parent.name: p for p in sorted((p for p in reports if p.exists()), key=lambda p: p.stat().st_mtime)}
    # one damaged report (by hand, by the disk) spoils neither the zoo nor the others: it is listed with why
    damaged: dict[str, str] = {}
    readable = read_objects(paths, damaged)
    for gen in list(readable):  # a report without its networks is no stored generation: computed again
        problem = _missing_networks(paths[gen].parent)
        if problem:
            damaged[gen] = problem
            del readable[gen]
    found = readable | damaged  # the report, or why it cannot be read
    return [(gen, found[gen]) for gen in paths if gen in found]


def generations(runs_dir, zoo_id: str) -> list[dict]:
    """The reports of every complete, readable generation stored with a zoo, oldest first."""
    return [r for _, r in _stored_generations(runs_dir, zoo_id) if isinstance(r, dict)]


def generation_rows(runs_dir, zoo_id: str) -> list[dict]:
    """One row per stored generation of a zoo (what `lottery show ZOO_ID` lists): its id, canonicalisation,
    PCA components (0: none), samples, flow steps and seed, and the median test accuracy of the generated nets
    and of the zoo; or, for a report that cannot be read, its id and why ("unreadable")."""
    return [{"generation": r["generation"], "canonicalise": r["canonicalise"], "pca": r["options"]["pca"],
             "samples": r["options"]["samples"], "steps": r["options"]["steps"], "seed": r["options"]["seed"],
             "generated_median": r["accuracy"]["generated"]["median"], "zoo_median": r["accuracy"]["zoo"]["median"]}
            if isinstance(r, dict) else {"generation": gen, "unreadable": r}
            for gen, r in _stored_generations(runs_dir, zoo_id)]


def _stored_report(folder: Path) -> dict | None:
    """A generation folder's report, or None when there is none or it cannot be read (then it is computed again
    and the folder replaced)."""
    from .store import read_objects

    if _missing_networks(folder):
        return None
    return read_objects({"report": folder / "report.json"}).get("report")


def _missing_networks(folder: Path) -> str | None:
    """Why a generation folder's networks cannot be used (weights.safetensors gone), with how to recover, or None.
    (generator.safetensors is kept for whoever wants to sample more, but nothing here reads it.)"""
    weights = folder / "weights.safetensors"
    if weights.exists():
        return None
    return f"{weights} is missing; `lottery generate` with the same settings computes the generation again"


def load_generation(runs_dir, zoo_id: str, gen_id: str) -> tuple[dict, Stack]:
    """(report, generated networks stacked) of a stored generation."""
    from .store import StoreDamaged, load_tensors, read_json

    d = generation_dir(runs_dir, zoo_id, gen_id)
    if not (d / "report.json").exists():
        raise ConfigError("GENERATION", gen_id, f"no complete generation of zoo {zoo_id}")
    missing = _missing_networks(d)
    if missing:
        raise StoreDamaged(missing)
    return read_json(d / "report.json"), load_tensors(d / "weights.safetensors")


def magnitude_prune(stack: Stack, names: list[str], density: float) -> tuple[Stack, dict]:
    """Every network pruned on its own to `density` in each layer of `names` by |w| (one shot, no
    retraining), with `engine.masks.keep_density`; returns (pruned stack, first network's mask)."""
    from . import masks as M

    out, first = dict(stack), {}
    for k in names:
        w = stack[k]
        keep = torch.stack([M.keep_density(w[i].abs(), torch.ones_like(w[i], dtype=torch.bool), density)
                            for i in range(w.shape[0])])
        out[k] = w * keep
        first[k] = keep[0]
    return out, first


def generate(runs_dir, zoo_id: str, options: GenerateOptions | None = None, *, on_event=None, cancel=None) -> dict:
    """Learn the zoo's weight distribution, sample `options.samples` networks, measure them, store the
    generator and the networks under ZOO_DIR/generations/GEN_ID/ and return the report. A generation already
    stored is returned as it is. Bad options raise ConfigError before anything is written; a cancel raises
    RunCancelled and leaves nothing behind."""
    import shutil
    import tempfile

    from . import masks as M
    from .events import AnalysisProgress, AnalysisReady
    from .store import save_tensors, write_json

    options = options or GenerateOptions()
    p = plan(runs_dir, zoo_id, options)
    zoo, o = p.zoo, p.options  # PCA resolved
    final = generation_dir(runs_dir, zoo_id, p.generation_id)
    stored = _stored_report(final)
    if stored is not None:
        return stored

    total = o.steps + 3  # progress: canonicalise, flow steps, sample, evaluate

    def progress(done: int, message: str) -> None:
        if on_event is not None:
            on_event(AnalysisProgress(zoo_id, "generate", done, total, message))

    def stop() -> None:
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")

    seconds = {}
    t0 = time.perf_counter()
    raw = zoo.weights
    model = zoo.model()
    stack, moved = raw, []
    if p.canonicalise == "rebasin":
        progress(0, f"canonicalising {len(zoo)} members to member {o.reference} (Git Re-Basin)")
        from .rebasin import align

        ref = member_weights(raw, o.reference)
        others = [member_weights(raw, i) for i in range(len(zoo)) if i != o.reference]
        # wide zoos take minutes to canonicalise: every member matched is reported, and a cancel is heard
        aligned = iter(align(model, ref, others, cancel=cancel, on_progress=lambda i, n: progress(
            0, f"canonicalising: {i}/{n} members matched to member {o.reference} (Git Re-Basin)")))
        states = [ref if i == o.reference else next(aligned) for i in range(len(zoo))]
        if o.align_rounds:
            from .rebasin import align_to_mean

            progress(0, f"re-matching {len(zoo)} members to the mean of the others (MergeMany)")
            states, moved = align_to_mean(
                model, states, rounds=o.align_rounds, seed=o.seed, cancel=cancel,
                on_progress=lambda r, i, n, count: progress(
                    0, f"MergeMany round {r}/{o.align_rounds}: {i}/{n} members re-matched to the mean of the "
                       f"others, {count} moved"))
        stack = stack_weights(states)
    seconds["canonicalise"] = time.perf_counter() - t0
    stop()
    mask = zoo.mask
    x = flatten(stack, mask)
    coords = Coordinates.fit(x, o.pca, o.standardise)
    z = coords.encode(x)

    t0 = time.perf_counter()
    progress(1, f"training the flow ({o.steps} steps; the loss every 100)")
    velocity, losses = train_flow(z, steps=o.steps, hidden=o.hidden, lr=o.lr, ema=o.ema, seed=o.seed, cancel=cancel,
                                  on_progress=lambda step, loss: progress(1 + step, f"flow step {step}/{o.steps}, "
                                                                          f"loss {loss:.4f}"))
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sample_flow(velocity, o.samples, ode_steps=o.ode_steps, method=o.ode_method, temperature=o.temperature,
                       seed=o.seed)
    generated = unflatten(coords.decode(rows), stack, mask)
    seconds["generate"] = time.perf_counter() - t0
    progress(o.steps + 2, f"evaluating {o.samples} generated networks")
    stop()

    t0 = time.perf_counter()
    data = zoo.data
    bn = data.train
    from .analysis.interpolation import batchnorms

    def evaluate(s: Stack):
        return evaluate_stack(zoo.model, s, data.test, bn_data=bn, cancel=cancel)

    zoo_nn = nearest_other(x)  # (for the novelty of the generated nets before and after REPAIR)
    x_flow = flatten(generated, mask)  # the nets as the flow gave them
    repaired = {"applied": o.repair != "none"}
    if o.repair != "none":  # the generated nets and both baselines alike, each toward the zoo it came from
        from .analysis.interpolation import bn_subset

        batch = bn_subset(data.train, REPAIR_EXAMPLES, o.seed).x
        member_stats = unit_statistics(zoo.model, stack, batch)

        def fix(s: Stack, zoo_rows: torch.Tensor = x, stats: UnitStats = member_stats) -> Stack:
            rows = flatten(s, mask)
            if o.repair == "mix":
                if id(zoo_rows) not in spans:
                    spans[id(zoo_rows)] = Span(zoo_rows)
                weights = mixing_weights(spans[id(zoo_rows)], rows)
            else:
                weights = torch.full((len(rows), len(zoo_rows)), 1 / len(zoo_rows), dtype=torch.float64)
            return repair(zoo.model, s, repair_targets(stats, weights.to(batch.device)), batch)
        spans: dict[int, Span] = {}  # each zoo's span, taken once (up to 3 mixes from one zoo)

        before = novelty(x_flow, x, zoo_nn)
        generated = fix(generated)
        repaired.update(target=o.repair, examples=len(batch), layers=list(member_stats),
                        generated_nn_before=before["generated_nn"], near_copy_share_before=before["near_copy_share"])
    else:
        def fix(s: Stack, zoo_rows=None, stats=None) -> Stack:
            return s

    zoo_acc, zoo_pred = evaluate(raw)
    gen_acc, gen_pred = evaluate(generated)
    gauss = fix(unflatten(coords.decode(gaussian_rows(z, o.samples, seed=o.seed)), stack, mask))
    gauss_acc, gauss_pred = evaluate(gauss)
    mean_acc = evaluate(fix(unflatten(x.mean(0, keepdim=True), stack, mask)))[0][0]
    baselines = {"gaussian": distribution(gauss_acc), "zoo_mean": mean_acc}
    if p.canonicalise == "rebasin":  # the same baselines on the unaligned zoo: what canonicalisation buys
        x_raw = flatten(raw, mask)
        raw_coords = Coordinates.fit(x_raw, o.pca, o.standardise)
        raw_stats = unit_statistics(zoo.model, raw, batch) if o.repair != "none" else None
        raw_gauss = unflatten(raw_coords.decode(gaussian_rows(raw_coords.encode(x_raw), o.samples, seed=o.seed)),
                              raw, mask)
        baselines["gaussian_uncanonicalised"] = distribution(evaluate(fix(raw_gauss, x_raw, raw_stats))[0])
        baselines["zoo_mean_uncanonicalised"] = evaluate(fix(unflatten(x_raw.mean(0, keepdim=True), raw, mask),
                                                             x_raw, raw_stats))[0][0]
    x_gen = flatten(generated, mask)
    report = {
        "analysis": "generate", "generation": p.generation_id, "zoo": zoo_id, "zoo_kind": zoo.kind,
        "model": zoo.config.model.model, "dataset": zoo.config.data.dataset, "device": str(zoo.device),
        "options": dataclasses.asdict(o), "canonicalise": p.canonicalise, "members": len(zoo),
        "align_moved": moved,  # MergeMany: members re-permuted in each round (the last 0 if it converged)
        "dims": x.shape[1], "coordinates": z.shape[1],
        "accuracy": {"zoo": distribution(zoo_acc), "generated": distribution(gen_acc), **baselines},
        "accuracies": {"zoo": zoo_acc, "generated": gen_acc, "gaussian": gauss_acc},
        "diversity": {"zoo": disagreement(zoo_pred), "generated": disagreement(gen_pred),
                      "gaussian": disagreement(gauss_pred)},
        # the novelty of the nets stored and evaluated: after REPAIR where it was applied (after_repair)
        "novelty": {**novelty(x_gen, x, zoo_nn), "after_repair": repaired["applied"]},
        "repair": repaired,  # whether REPAIR was applied; with it, the novelty before it (the flow's own nets)
        # BatchNorm: every net evaluated here, zoo members included, had its statistics recomputed on training
        # data, so the zoo's accuracies here are not the stored ones (`lottery show`), which use the members' own
        "batchnorm_recomputed": bool(batchnorms(model)),
        "flow_loss": losses,
        "map": _map(x, x_gen),
    }
    if zoo.options.families is not None:  # a family zoo: the flow's nets (before any REPAIR) among its families
        report["families"] = {**family_placement(x_flow, x, [m["family"] for m in zoo.members]),
                              "spawn_step": zoo.options.spawn_step}
    if mask is not None:
        names = list(mask)
        zero = all(bool((generated[k][:, ~mask[k]] == 0).all()) for k in names)
        report["density"] = {"zoo": M.density(mask), "generated": M.density(mask), "pruned_entries_zero": zero}
    if o.prune_density:
        names = M.prunable(model)
        pruned_zoo, _ = magnitude_prune(raw, names, o.prune_density)
        pruned_gen, first = magnitude_prune(generated, names, o.prune_density)
        report["pruned"] = {"density": M.density(first), "zoo": distribution(evaluate(pruned_zoo)[0]),
                            "generated": distribution(evaluate(pruned_gen)[0])}
    seconds["evaluate"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    stop()

    # Everything goes to a temporary folder renamed into place: a generation is stored whole or not at all.
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.generation_id}.", dir=final.parent))
    try:
        save_tensors(tmp / "generator.safetensors", {**{f"velocity.{k}": v for k, v in velocity.state_dict().items()},
                                                     **{f"coordinates.{k}": v for k, v in coords.state().items()}})
        save_tensors(tmp / "weights.safetensors", generated)
        write_json(tmp / "report.json", report)
        stored = _stored_report(final)
        if stored is not None:  # another process stored the same generation meanwhile: keep it
            return stored
        if final.exists():  # a folder without a readable report (damaged by hand): replaced by a whole one
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    progress(total, "done")
    if on_event is not None:
        on_event(AnalysisReady(zoo_id, "generate", str(final / "report.json")))
    return report


def _map(x: torch.Tensor, x_gen: torch.Tensor) -> dict:
    """Both sets projected on the zoo's first two principal directions (the explorer's weight-space map)."""
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd((x - mean).double(), full_matrices=False)
    basis = vh[:2].T.to(x.dtype)
    if basis.shape[1] < 2:
        basis = torch.cat([basis, basis.new_zeros(basis.shape[0], 2 - basis.shape[1])], 1)
    return {"zoo": ((x - mean) @ basis).tolist(), "generated": ((x_gen - mean) @ basis).tolist()}


# ---------------------------------------------------------------- `lottery generate`
def _pct(d: dict | float) -> str:
    v = d["median"] if isinstance(d, dict) else d
    return f"{100 * v:.2f}%"


def _spread(d: dict) -> str:
    return f"median {100 * d['median']:.2f}% [{100 * d['p05']:.2f}, {100 * d['p95']:.2f}] (5-95%)"


def format_report(r: dict, others: list[dict] = ()) -> str:
    """What `lottery generate` prints: one line per comparison the issue asks for."""
    a, o, nov = r["accuracy"], r["options"], r["novelty"]
    temperature = o.get("temperature", ADDED_LATER["temperature"])  # reports stored before the option lack it
    lines = [f"generation {r['generation']} of zoo {r['zoo']} ({r['zoo_kind']}, {r['members']} members, "
             f"{r['model']} on {r['dataset']}): {o['samples']} nets, canonicalise {r['canonicalise']}, "
             f"{'PCA ' + str(o['pca']) if o['pca'] else 'no PCA'} ({r['coordinates']} of {r['dims']} coordinates), "
             f"{o['steps']} flow steps{', EMA %g' % o['ema'] if o.get('ema') else ''}, {o['ode_method']} x "
             f"{o['ode_steps']}{', temperature %g' % temperature if temperature != ADDED_LATER['temperature'] else ''}"
             + (f", {len(r['align_moved'])} MergeMany rounds (members moved: {r['align_moved']})"
                if r.get("align_moved") else ""),
             f"  test accuracy  zoo        {_spread(a['zoo'])}",
             f"                 generated  {_spread(a['generated'])}  (no fine-tuning)",
             f"  baselines      Gaussian in the same coordinates {_spread(a['gaussian'])}; zoo mean as one net "
             f"{_pct(a['zoo_mean'])}"]
    if "gaussian_uncanonicalised" in a:
        lines.append(f"  without canonicalisation: Gaussian {_spread(a['gaussian_uncanonicalised'])}; zoo mean "
                     f"{_pct(a['zoo_mean_uncanonicalised'])}")
    d = r["diversity"]
    lines.append(f"  diversity      mean pairwise disagreement: zoo {d['zoo']:.3f}, generated {d['generated']:.3f}, "
                 f"Gaussian {d['gaussian']:.3f}")
    # REPAIR moves every net in weight space, a near copy off its member too: with it, novelty is given before and
    # after it, each labelled (`novelty` holds the nets after it, `repair` their distances before it)
    lines.append(f"  novelty        distance to the nearest zoo member in weight space (the zoo members' own median "
                 f"{nov['zoo_nn_median']:.3g}; a near copy: < {NEAR_COPY} x that)")
    rep = r.get("repair", {"applied": False})  # reports stored before the option lack it
    after = f"generated median {nov['generated_nn_median']:.3g}, near copies {100 * nov['near_copy_share']:.0f}%"
    if rep["applied"]:
        before = float(torch.tensor(rep["generated_nn_before"], dtype=torch.float64).median())  # as novelty() takes it
        lines += [f"                 before REPAIR (the nets as the flow gave them): generated median {before:.3g}, "
                  f"near copies {100 * rep['near_copy_share_before']:.0f}%",
                  f"                 after REPAIR (the nets evaluated above):        {after}",
                  f"  REPAIR         applied to the generated nets and both baselines (targets: {rep.get('target')}; "
                  f"unit statistics of {rep['examples']} training examples)"]
    else:
        lines += [f"                 no REPAIR (the nets as the flow gave them): {after}", "  REPAIR         not applied"]
    if "families" in r:
        f = r["families"]
        lines.append(f"  families       {f['families']} families parting at step {f['spawn_step']}, centres "
                     f"{f['between_median']:.3g} apart (median to the nearest other), radius {f['radius_median']:.3g} "
                     f"(median, farthest member): the flow's nets at {f['generated_centre_median']:.3g} from the "
                     f"nearest centre (median), {100 * f['inside_share']:.0f}% inside that family's radius")
    if r.get("batchnorm_recomputed"):
        lines.append("  BatchNorm      statistics recomputed on training data for every net above, zoo members too "
                     "(`lottery show` gives the members' accuracies with their own statistics)")
    if "density" in r:
        lines.append(f"  density        {100 * r['density']['generated']:.2f}% (the ticket's; pruned entries exactly 0: "
                     f"{r['density']['pruned_entries_zero']})")
    if "pruned" in r:
        pr = r["pruned"]
        lines.append(f"  pruned to {100 * pr['density']:.1f}% by magnitude (no retraining): zoo {_spread(pr['zoo'])}, "
                     f"generated {_spread(pr['generated'])}")
    s = r["seconds"]
    lines.append(f"  seconds        canonicalise {s['canonicalise']:.1f}, train flow {s['train']:.1f}, generate "
                 f"{s['generate']:.2f}, evaluate {s['evaluate']:.1f}")
    rest = [g for g in others if g["generation"] != r["generation"]]
    if rest:
        lines.append("  other generations of this zoo:")
        lines += [f"    {g['generation']}: canonicalise {g['canonicalise']}, PCA {g['options']['pca']}, "
                  f"{g['options']['steps']} steps, seed {g['options']['seed']} -> generated "
                  f"{_spread(g['accuracy']['generated'])}" for g in rest]
    return "\n".join(lines)


def add_command(sub, common) -> None:
    from .cli import options_command

    parser = options_command(sub, common, "generate", "DeepWeightFlow: learn a zoo's weight distribution with flow "
                             "matching and generate new networks (no fine-tuning); stored with the zoo",
                             GenerateOptions, _cmd_generate)
    parser.add_argument("zoo_id", metavar="ZOO_ID", help="a zoo made by `lottery zoo`")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_generate(options: GenerateOptions, args) -> int:
    import sys

    bar = None

    def on_event(e) -> None:
        nonlocal bar
        from .events import AnalysisProgress
        if args.quiet or args.json or not isinstance(e, AnalysisProgress):
            return
        if bar is None:
            from tqdm import tqdm
            bar = tqdm(total=e.total, unit="step", file=sys.stderr, desc="generate", dynamic_ncols=True)
        bar.update(e.done - bar.n)
        bar.set_postfix_str(e.message)

    from .cli import errors_name_flags

    try:
        with errors_name_flags(GenerateOptions):  # plan's errors name fields (pca); the user typed --pca
            report = generate(args.runs_dir, args.zoo_id, options, on_event=on_event)
    except (KeyboardInterrupt, RunCancelled):
        print("cancelled: nothing of this generation was stored", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    from .cli import json_text  # (engine.cli imports this module's command lazily: no cycle)

    print(json_text(report) if args.json else format_report(report, generations(args.runs_dir, args.zoo_id)))
    return 0
