"""Physical shrink: a ticket's dead channels cut out, leaving a smaller dense nn.Module with the same outputs.

A channel is removed when its row of weights is entirely masked (a channel ticket's pruned channels) or
when every weight that reads it in the next layer is masked (nothing uses it). The next layer loses the
matching inputs. A pruned row still emits a constant: its bias, through the ReLU / BatchNorm / pooling
that follow, and the next layer's (unmasked) weights on those inputs turn it into a constant contribution.
Dropping it would change the outputs, so it is kept exactly: folded into the next layer's bias where it is
the same at every position (a Linear layer, a convolution without zero padding), and otherwise, after a
zero-padded convolution whose border positions see less of it, added as a fixed map (`AddConstant`).

Works on chains: nn.Sequential models, or models that provide `as_sequential()` (the registry's
lenet300/mlp and conv2/4/6). Between two Linear/Conv2d layers only per-channel modules may sit (ReLU,
BatchNorm, max-pooling, dropout, flatten). ResNets are not chains (a residual sum mixes the channels of two
paths) and are refused with `Unsupported`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import masks as M
from .errors import Unsupported
from .structured import rows

# Modules that act on every channel separately and map a channel-wise constant to a channel-wise constant.
CHANNELWISE = (nn.ReLU, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d)
LAYERS = (nn.Linear, nn.Conv2d)


class AddConstant(nn.Module):
    """Adds a fixed tensor: removed channels' contribution through a zero-padded convolution."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x):
        return x + self.value


def chain_of(model: nn.Module) -> nn.Sequential:
    """The model as a chain of its own modules, or Unsupported."""
    if isinstance(model, nn.Sequential):
        return model
    if hasattr(model, "as_sequential"):
        return model.as_sequential()
    raise Unsupported(f"{type(model).__name__} is not a chain of layers: physical shrink supports lenet300, mlp, "
                      "conv2/4/6 and nn.Sequential models (a ResNet's residual sums mix channels)")


@torch.no_grad()
def shrink(model: nn.Module, mask: M.Mask, example: torch.Tensor) -> nn.Sequential:
    """A smaller dense nn.Sequential computing what `model` computes with `mask` applied (in eval mode).

    `example` is one input batch (its shape fixes the spatial sizes of convolutions' constant maps).
    """
    original = chain_of(model)
    name_of = {id(mod): name for name, mod in model.named_modules()}
    names = [f"{name_of[id(mod)]}.weight" if isinstance(mod, LAYERS) else None for mod in original]
    chain = copy.deepcopy(original).eval()
    for mod, name in zip(chain, names):
        if name in mask:
            mod.weight.mul_(mask[name])
    layers = [i for i, mod in enumerate(chain) if isinstance(mod, LAYERS)]
    _check(chain, layers)
    shapes = _input_shapes(chain, example[:1].to(chain[layers[0]].weight))

    # Which channels of each layer go, and the feature -> channel map of the next layer's inputs.
    removed, owner = {}, {}
    for i, j in zip(layers, layers[1:]):
        owner[j] = _owner(chain, i, j, shapes)
        weight = chain[i].weight
        dead_rows = (~rows(mask[names[i]]).any(1) if names[i] in mask else
                     torch.zeros(len(weight), dtype=torch.bool, device=weight.device))
        used = _reads(chain[j].weight).any(0)  # does any kept weight of j read this input feature?
        unused = torch.zeros(len(weight), dtype=torch.long, device=weight.device).index_add_(0, owner[j],
                                                                                              used.long()) == 0
        gone = dead_rows | unused
        if gone.all():
            gone[0] = False  # keep one channel: a layer needs an input; keeping a removable channel is exact
        removed[i] = (gone, dead_rows & gone)

    out = list(chain)
    for i, j in zip(layers, layers[1:]):
        gone, constant = removed[i]
        delta = _contribution(chain, i, j, constant, owner[j], shapes)
        out[j] = _slice_inputs(chain[j], ~gone[owner[j]])
        if delta is not None:
            if delta.dim() == 1 or _uniform(chain[j]):
                _add_bias(out[j], delta if delta.dim() == 1 else delta[:, 0, 0])
            else:
                out[j] = nn.Sequential(out[j], AddConstant(delta))
        out[i] = _slice_outputs(out[i], ~gone)
        for k in range(i + 1, j):
            if isinstance(chain[k], nn.modules.batchnorm._BatchNorm):
                out[k] = _slice_norm(chain[k], ~gone)
    return nn.Sequential(*_flatten(out)).eval()


# ---------------------------------------------------------------- checks and shapes
def _check(chain: nn.Sequential, layers: list[int]) -> None:
    for i, j in zip(layers, layers[1:]):
        for mod in chain[i + 1:j]:
            if not isinstance(mod, (*CHANNELWISE, nn.Flatten)):
                raise Unsupported(f"{type(mod).__name__} between two layers: physical shrink needs per-channel "
                                  f"modules there ({', '.join(t.__name__ for t in CHANNELWISE)}, Flatten)")
    for i in layers:
        if isinstance(chain[i], nn.Conv2d) and (chain[i].groups != 1 or chain[i].padding_mode != "zeros"):
            raise Unsupported("physical shrink supports ungrouped, zero-padded convolutions only")


def _input_shapes(chain: nn.Sequential, x: torch.Tensor) -> list[torch.Size]:
    shapes = []
    for mod in chain:
        shapes.append(x.shape)
        x = mod(x)
    return shapes


def _owner(chain, i: int, j: int, shapes) -> torch.Tensor:
    """For each input feature of layer j, the output channel of layer i it comes from."""
    weight = chain[i].weight
    flat = next((k for k in range(i + 1, j) if isinstance(chain[k], nn.Flatten)), None)
    per_channel = 1 if flat is None else shapes[flat][2:].numel()
    return torch.arange(len(weight), device=weight.device).repeat_interleave(per_channel)


def _reads(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) bool: which inputs each output channel of a (masked) layer reads."""
    return (weight != 0).flatten(2).any(2) if weight.dim() > 2 else weight != 0


# ---------------------------------------------------------------- the constant of a pruned channel
def _contribution(chain, i: int, j: int, constant: torch.Tensor, owner: torch.Tensor, shapes):
    """What layer j adds from the removed channels of layer i whose rows are pruned (their bias, through
    the modules between), or None when that is zero: a vector for a Linear j, a map for a Conv2d j."""
    bias = chain[i].bias
    if bias is None and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in chain[i + 1:j]):
        return None
    value = torch.zeros(len(constant), dtype=chain[i].weight.dtype) if bias is None else bias.clone()
    value = value.view(1, -1, *([1] * (len(shapes[i + 1]) - 2)))  # a (1, C[, 1, 1]) constant input
    for k in range(i + 1, j):
        mod = chain[k]
        if isinstance(mod, nn.Flatten):
            value = value.expand(1, -1, *shapes[k][2:]).flatten(1)
        elif not isinstance(mod, nn.MaxPool2d):  # the max over a constant window is the constant
            value = mod(value)
    nxt = chain[j]
    if isinstance(nxt, nn.Linear):
        x = value.flatten() * constant[owner]
        return None if not x.any() else nxt.weight @ x
    x = (value * constant.view(1, -1, 1, 1)).expand(1, -1, *shapes[j][2:])
    if not x.any():
        return None
    return F.conv2d(x, nxt.weight, None, nxt.stride, nxt.padding, nxt.dilation)[0]


def _uniform(conv: nn.Conv2d) -> bool:
    """Whether a constant input map gives the same output at every position: no zero padding."""
    return conv.padding == "valid" or (conv.padding != "same" and not any(conv.padding))


# ---------------------------------------------------------------- building the smaller modules
def _slice_outputs(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    conv = layer[0] if isinstance(layer, nn.Sequential) else layer  # (conv, AddConstant) from an earlier step
    new = _like(conv, in_features=conv.weight.shape[1], out_features=int(keep.sum()))
    new.weight.copy_(conv.weight[keep])
    if conv.bias is not None:
        new.bias.copy_(conv.bias[keep])
    if isinstance(layer, nn.Sequential):
        return nn.Sequential(new, AddConstant(layer[1].value[keep]))
    return new


def _slice_inputs(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = _like(layer, in_features=int(keep.sum()), out_features=layer.weight.shape[0])
    new.weight.copy_(layer.weight[:, keep])
    if layer.bias is not None:
        new.bias.copy_(layer.bias)
    return new


def _like(layer: nn.Module, in_features: int, out_features: int) -> nn.Module:
    kw = {"bias": layer.bias is not None, "dtype": layer.weight.dtype, "device": layer.weight.device}
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_features, out_features, **kw)
    return nn.Conv2d(in_features, out_features, layer.kernel_size, layer.stride, layer.padding, layer.dilation, **kw)


def _add_bias(layer: nn.Module, delta: torch.Tensor) -> None:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(delta))
    layer.bias.add_(delta)


def _slice_norm(norm: nn.modules.batchnorm._BatchNorm, keep: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(norm)
    new.num_features = int(keep.sum())
    for name in ("weight", "bias"):
        if getattr(norm, name) is not None:
            setattr(new, name, nn.Parameter(getattr(norm, name)[keep].clone()))
    for name in ("running_mean", "running_var"):
        if getattr(norm, name) is not None:
            setattr(new, name, getattr(norm, name)[keep].clone())
    return new


def _flatten(modules: list[nn.Module]) -> list[nn.Module]:
    """(conv, AddConstant) pairs inline, so the result is one flat chain."""
    return [m for mod in modules for m in (mod if isinstance(mod, nn.Sequential) else [mod])]
