"""Git Re-Basin weight matching (Ainsworth et al. 2023): permute B's hidden units to line up with A's.

Permuting the hidden units of a layer (its rows, its bias, and the matching input columns of the next
layer) leaves the function a network computes unchanged; two independently trained nets typically differ by
such a permutation plus a little, and only after undoing it does the straight line between them stay low
in loss. Weight matching chooses, layer by layer, the permutation P_l maximising the inner product between
A's and the permuted B's weights touching that layer,

    C_l = W_l^A (W_l^B P_{l-1}^T)^T + b_l^A b_l^B^T + W_{l+1}^A^T P_{l+1} W_{l+1}^B      (all axes flattened)

as a linear assignment (`scipy.optimize.linear_sum_assignment`, maximize), sweeping the layers in random
order by coordinate descent until a whole sweep improves nothing.

Everything here is a pure function over state dicts (and masks, which are weight-shaped and permute with
their weights). The architecture enters once, as a `PermutationSpec` read from the model:

    spec = permutation_spec(model)                 # mlp, lenet300, conv2/4/6 (chains of Linear/Conv)
    perm = weight_matching(spec, weights_a, weights_b)         # {perm name: LongTensor}
    b2 = permute(spec, perm, weights_b)             # same function as weights_b (tests: outputs to 1e-5)
    m2 = permute(spec, perm, mask_b)                # B's mask, moved with its weights
    b2, m2, perm = rebasin(model, weights_a, weights_b, mask_b)   # the three steps in one
    aligned = align(model, reference, [w1, w2, ...])            # a zoo canonicalised to one reference
    aligned, moved = align_to_mean(model, aligned, rounds=20)   # then each member re-matched to the others' mean
    result = barriers(model, a, b, split)           # loss/error curves and barriers, naive vs matched

A spec maps each permutation (named after the layer whose outputs it permutes: "hidden.0", "features.2",
"fc1") to the (parameter, axis) pairs it acts on. A Linear after a Flatten of C conv channels sees its input
as [C, H*W]: the channel permutation acts on the C axis of that view. The output layer's units are the
classes: never permuted. The CIFAR ResNets (resnet20) have their own spec: one permutation per stage's
residual stream, one per block's inner channels, BatchNorm (statistics included) moved with its channels;
the statistics are not matched on. Other models are refused with a one-line `Unsupported`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import Unsupported

SUPPORTED = ("chains of Linear/Conv layers with ReLU, max-pool and flatten between them (mlp, lenet300, conv2/4/6) "
             "and the CIFAR ResNets (resnet20)")


@dataclass(frozen=True)
class PermutationSpec:
    axes: dict[str, tuple[str | None, ...]]   # parameter -> the permutation acting on each axis of its view
    views: dict[str, tuple[int, ...]]         # parameter -> the shape it is permuted in (its own, or [out, C, H*W])
    stats: frozenset = frozenset()            # buffers permuted with their units but not matched on (BN statistics)

    @property
    def perms(self) -> dict[str, list[tuple[str, int]]]:
        """permutation name -> [(parameter, axis)] it acts on."""
        out: dict[str, list[tuple[str, int]]] = {}
        for param, names in self.axes.items():
            for axis, name in enumerate(names):
                if name is not None:
                    out.setdefault(name, []).append((param, axis))
        return out

    def size(self, name: str) -> int:
        param, axis = self.perms[name][0]
        return self.views[param][axis]


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation symmetries of `model`, read from its chain of layers (`model.as_sequential()`), or for
    the CIFAR ResNets from their blocks."""
    from .models import ResNetCifar

    if isinstance(model, ResNetCifar):
        return _resnet_spec(model)
    chain = model.as_sequential() if hasattr(model, "as_sequential") else None
    if chain is None:
        raise Unsupported(f"re-basin needs a model that is a chain of layers (`as_sequential()`); "
                          f"{type(model).__name__} is not one. Supported: {SUPPORTED}")
    names = {id(m): n for n, m in model.named_modules()}
    layers = [m for m in chain if isinstance(m, (nn.Linear, nn.Conv2d))]
    axes: dict[str, tuple[str | None, ...]] = {}
    views: dict[str, tuple[int, ...]] = {}
    prev, prev_channels = None, None  # the permutation of the current activations; conv channels before a flatten
    for m in chain:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            name = names[id(m)]
            out_perm = None if m is layers[-1] else name
            w = m.weight
            if isinstance(m, nn.Linear) and prev_channels is not None:  # first Linear after conv + flatten
                views[f"{name}.weight"] = (w.shape[0], prev_channels, w.shape[1] // prev_channels)
                axes[f"{name}.weight"] = (out_perm, prev, None)
            else:
                views[f"{name}.weight"] = tuple(w.shape)
                axes[f"{name}.weight"] = (out_perm, prev) + (None,) * (w.dim() - 2)
            if m.bias is not None:
                views[f"{name}.bias"] = tuple(m.bias.shape)
                axes[f"{name}.bias"] = (out_perm,)
            prev = out_perm
            prev_channels = m.out_channels if isinstance(m, nn.Conv2d) else None
        elif isinstance(m, nn.Flatten):
            pass  # prev_channels (set by the last conv) tells the next Linear how its input is laid out
        elif not isinstance(m, (nn.ReLU, nn.MaxPool2d)):  # anything else may mix units or keep state
            raise Unsupported(f"re-basin does not know how to permute through {type(m).__name__}; "
                              f"supported: {SUPPORTED}")
    own = {n for n, _ in model.named_parameters()}
    if set(axes) != own:
        raise Unsupported(f"re-basin found parameters outside the layer chain: {sorted(own - set(axes))[:3]}")
    return PermutationSpec(axes, views)


def _resnet_spec(model) -> PermutationSpec:
    """A CIFAR ResNet: the residual stream of each stage carries one channel permutation (an identity shortcut
    adds the block's output to its input unit by unit, so both must be permuted alike; a projection shortcut
    starts a new one), each block's inner channels their own; BatchNorm weight, bias and running statistics
    move with their channels."""
    axes: dict[str, tuple[str | None, ...]] = {}
    stats = set()

    def conv(name, out_perm, in_perm):
        axes[f"{name}.weight"] = (out_perm, in_perm, None, None)

    def bn(name, perm):
        for p in ("weight", "bias", "running_mean", "running_var"):
            axes[f"{name}.{p}"] = (perm,)
        stats.update({f"{name}.running_mean", f"{name}.running_var"})

    stream = "conv"
    conv("conv", stream, None)
    bn("bn", stream)
    for i, block in enumerate(model.blocks):
        b = f"blocks.{i}"
        out = stream if len(block.shortcut) == 0 else f"{b}.shortcut"
        conv(f"{b}.conv1", f"{b}.conv1", stream)
        bn(f"{b}.bn1", f"{b}.conv1")
        conv(f"{b}.conv2", out, f"{b}.conv1")
        bn(f"{b}.bn2", out)
        if len(block.shortcut):
            conv(f"{b}.shortcut.0", out, stream)
            bn(f"{b}.shortcut.1", out)
        stream = out
    axes["out.weight"] = (None, stream)
    axes["out.bias"] = (None,)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return PermutationSpec(axes, {k: shapes[k] for k in axes}, frozenset(stats))


def _permuted(spec: PermutationSpec, perm: dict[str, torch.Tensor], param: str, w: torch.Tensor,
              skip_axis: int | None = None) -> torch.Tensor:
    """`w` (parameter `param`, in its own shape) with every permutation of its axes applied but `skip_axis`'s."""
    shape = w.shape
    w = w.reshape(spec.views[param])
    for axis, name in enumerate(spec.axes[param]):
        if name is not None and axis != skip_axis:
            w = w.index_select(axis, perm[name].to(w.device))
    return w if skip_axis is not None else w.reshape(shape)


def permute(spec: PermutationSpec, perm: dict[str, torch.Tensor],
            tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict (or mask, or any dict of parameter-shaped tensors) with the permutations applied;
    entries the spec does not know (buffers) are passed through."""
    return {k: _permuted(spec, perm, k, v) if k in spec.axes else v for k, v in tensors.items()}


def identity(spec: PermutationSpec) -> dict[str, torch.Tensor]:
    return {name: torch.arange(spec.size(name)) for name in spec.perms}


def random_permutation(spec: PermutationSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.randperm(spec.size(name), generator=generator) for name in spec.perms}


def weight_matching(spec: PermutationSpec, weights_a: dict[str, torch.Tensor], weights_b: dict[str, torch.Tensor],
                    *, max_sweeps: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """The permutations of B's hidden units that best match A's weights (coordinate descent over layers,
    each step a linear assignment), until a whole sweep improves nothing. `perm[name][i]` is the unit of B
    that goes to position i."""
    from scipy.optimize import linear_sum_assignment

    perms = spec.perms
    a = {k: weights_a[k].detach().double().cpu() for k in spec.axes}
    b = {k: weights_b[k].detach().double().cpu() for k in spec.axes}
    perm = identity(spec)
    order = torch.Generator().manual_seed(seed)
    names = list(perms)
    for _ in range(max_sweeps):
        improved = False
        for i in torch.randperm(len(names), generator=order).tolist():
            name = names[i]
            n = spec.size(name)
            cost = torch.zeros(n, n, dtype=torch.float64)
            for param, axis in perms[name]:
                if param in spec.stats:
                    continue
                wa = a[param].reshape(spec.views[param]).movedim(axis, 0).reshape(n, -1)
                wb = _permuted(spec, perm, param, b[param], skip_axis=axis).movedim(axis, 0).reshape(n, -1)
                cost += wa @ wb.T
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            rows = torch.arange(n)
            old = float(cost[rows, perm[name]].sum())
            new = float(cost[rows, torch.from_numpy(cols)].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                improved = True
                perm[name] = torch.from_numpy(np.asarray(cols, dtype=np.int64))
        if not improved:
            break
    return perm


def rebasin(model: nn.Module, weights_a: dict[str, torch.Tensor], weights_b: dict[str, torch.Tensor],
            mask_b: dict[str, torch.Tensor] | None = None, *, seed: int = 0):
    """(B permuted to match A, B's mask permuted with it (None if none given), the permutation)."""
    spec = permutation_spec(model)
    perm = weight_matching(spec, weights_a, weights_b, seed=seed)
    return permute(spec, perm, weights_b), (None if mask_b is None else permute(spec, perm, mask_b)), perm


def align(model: nn.Module, reference: dict[str, torch.Tensor], others: list[dict[str, torch.Tensor]],
          masks: list[dict[str, torch.Tensor]] | None = None, *, seed: int = 0, cancel=None,
          on_progress: Callable[[int, int], None] | None = None):
    """Every net of `others` matched to `reference` (a zoo canonicalised to one member, as DeepWeightFlow
    does before learning the weights' distribution). Returns the permuted state dicts, and with `masks`
    (one per net) also the permuted masks: (weights, masks). `on_progress(i, n)` after the i-th of n nets;
    `cancel.is_set()` raises RunCancelled before the next one."""
    from .errors import RunCancelled

    spec = permutation_spec(model)
    perms = []
    for i, w in enumerate(others):
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")
        perms.append(weight_matching(spec, reference, w, seed=seed))
        if on_progress is not None:
            on_progress(i + 1, len(others))
    weights = [permute(spec, p, w) for p, w in zip(perms, others)]
    if masks is None:
        return weights
    return weights, [permute(spec, p, m) for p, m in zip(perms, masks)]


def align_to_mean(model: nn.Module, states: list[dict[str, torch.Tensor]], *, rounds: int = 20, seed: int = 0,
                  cancel=None, on_progress: Callable[[int, int, int, int], None] | None = None
                  ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """MergeMany (Ainsworth et al. 2023, appendix): every net in turn (random order) re-matched to the mean of
    all the others, for up to `rounds` rounds or until a round moves no net. Aligning a zoo to one reference
    member only makes each net close to that member; this pulls the whole zoo together around its mean (the
    sum of pairwise inner products never decreases: each step is weight matching started from the current
    permutation, which only accepts improvements). Start from `align`'s output. Returns (permuted state
    dicts, how many nets moved in each round). `on_progress(round, i, n, moved)` after the i-th of n nets of a
    round (both from 1), `moved` counting the nets this round re-permuted so far."""
    from .errors import RunCancelled

    spec = permutation_spec(model)
    states = list(states)
    n = len(states)
    if n < 3:  # with two nets "the mean of the others" is the other net: `align` did that already
        return states, []
    keys = list(spec.axes)
    total = {k: sum(s[k].double() for s in states) for k in keys}
    order = torch.Generator().manual_seed(seed)
    moved = []
    for r in range(rounds):
        count = 0
        for done, i in enumerate(torch.randperm(n, generator=order).tolist(), 1):
            if cancel is not None and cancel.is_set():
                raise RunCancelled("cancelled")
            others = {k: (total[k] - states[i][k].double()) / (n - 1) for k in keys}
            perm = weight_matching(spec, others, states[i], seed=seed)
            if not all(bool((p == torch.arange(len(p))).all()) for p in perm.values()):
                new = permute(spec, perm, states[i])
                for k in keys:
                    total[k] += new[k].double() - states[i][k].double()
                states[i] = new
                count += 1
            if on_progress is not None:
                on_progress(r + 1, done, n, count)
        moved.append(count)
        if count == 0:
            break
    return states, moved


def barriers(model, weights_a: dict[str, torch.Tensor], weights_b: dict[str, torch.Tensor], split, *,
             points: int = 11, mask_b: dict[str, torch.Tensor] | None = None, bn_data=None, seed: int = 0) -> dict:
    """Loss/error along A -> B (naive) and A -> B matched to A (weight matching), with both barriers.
    `model`: the architecture (a module or a factory); weights are evaluated by engine.trainer.evaluate."""
    from .analysis.interpolation import error_barrier, interpolate, loss_barrier

    net = model if isinstance(model, nn.Module) else model()
    matched, _, perm = rebasin(net, weights_a, weights_b, mask_b, seed=seed)
    naive_curve = interpolate(net, weights_a, weights_b, split, points, bn_data=bn_data)
    matched_curve = interpolate(net, weights_a, matched, split, points, bn_data=bn_data)
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perm.values())
    return {"naive_curve": naive_curve, "matched_curve": matched_curve,
            "naive_error_barrier": error_barrier(naive_curve), "naive_loss_barrier": loss_barrier(naive_curve),
            "matched_error_barrier": error_barrier(matched_curve), "matched_loss_barrier": loss_barrier(matched_curve),
            "units_moved": moved, "units": sum(len(p) for p in perm.values())}
