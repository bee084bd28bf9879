"""Train K models of one architecture as ONE computation: the batched trainer.

Small models waste a CPU (or a GPU) one at a time: every step of a 64-32-10 MLP is a handful of tiny
kernels whose cost is mostly Python and dispatch. Here the K members' parameters are stacked along a new
leading axis ([K, *shape]) and one step trains them all: the forward is one grouped computation over the stack (see
below), the loss is the sum of the members' mean losses (members share no parameter, so
each one's gradient is exactly its own), and the optimizer update is elementwise over the stack.

How the forward is batched, measured on this 2-core CPU (bench/zoo_speed.py, same process, interleaved,
under heavy contention from other processes): chains of Linear layers (mlp, lenet300) run as grouped
`baddbmm` with activations kept [K, features, batch] (so every weight gradient comes out contiguous for the
fused optimizer), which trained 64 digits MLPs 64-32 in 0.73-0.80 s vs 0.86-1.04 s through `vmap` over
`functional_call`, and 8 lenet300 in 0.35-0.56 s vs 0.62-0.70 s; every other architecture (Conv-2/4/6, users'
modules) goes through `torch.func.vmap` + `functional_call`, which batches any layer type with no code of
its own (on CPU no faster than one by one for conv4: 0.9-1.1x, bench/batched_speed.py). For Linear chains
the backward is written out too (`chain_step`: the kernels autograd would run, the same numbers bit for bit,
without building a graph each step), and torch's fused Adam kernel is called directly after its first step
(`_stepper`): on this CPU, profiled, autograd's and torch.optim's bookkeeping were about a third of a small
batch's step. Against one by one, same process, interleaved, 11 repeats, 1 thread, under contention (wall;
CPU time in brackets): 64 digits MLPs 9.6x (10.6x), 8 lenet300 2.4x (2.6x), a lenet300 level 2.4x (2.3x),
8 lenet300 seeds 2.6x (2.7x). lenet300's batched step is bound by its matmuls and the Adam update, which
batching does not make cheaper per member; what it saves is the per-step Python and small-kernel cost.

Who batches: `lottery zoo` (every member), the instability analysis (its copies), and `lottery run` with
`--batched auto` (a level's ticket and its controls, engine.runner.RunContext.train_together; `auto_reason`
says when it does not).

What each member gets, exactly as `engine.trainer.train` would give it alone (tests/test_batched.py trains
both ways and compares the weights to float tolerance):

- its own start weights, mask, data-order seed and start step (`Member`); the data order of epoch e is
  `torch.randperm(n, generator(seed, "order", e))`, the trainer's own rule, so a member reproduces the
  trajectory of `train(model, data, cfg, mask, seed=seed, start_step=start_step)`;
- the configured learning-rate schedule (`trainer.lr_at`; members at one global step share it, since the
  schedule depends on the step only), batch size, evaluation points (every `eval_every` steps and at the
  end, validation and test), early-stopping record (the iteration of lowest validation loss);
- the optimizer `engine.trainer.make_optimizer` builds (torch's fused Adam, or SGD with momentum and coupled
  L2 weight decay) over the stacked tensors: both update elementwise, so a stack steps each member exactly
  as alone. Members that share a start step share one optimizer (its step counter is theirs); a group
  that starts later has its own. Masks: a pruned entry's gradient is zeroed before the step, so its weight
  stays exactly 0 and its moments/momentum stay 0 (its weight decay is of a zero weight: zero).

Members that start later (a late-rewound ticket beside a reinit control that starts at 0) join the
computation at their start step: before it they are not computed at all.

BatchNorm's running statistics are stacked like the weights (every member keeps its own, updated by its own
batches: `functional_call` under `vmap` updates the stacked buffers in place), so ResNets batch too.

Not supported (one-line `Unsupported`): Bayesian layers (a KL penalty and sampled weights per member),
per-token targets (text tasks), and, by design of the API, mask searches (dynamic sparsity, strong tickets)
and loss penalties, which change a member's mask or loss while it trains: those train one by one.

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
from .trainer import TrainResult, autocast, lr_at, make_optimizer, steps_per_epoch

# the layers of the registry's models (mlp, lenet300, conv2/4/6, resnet20): what `--batched auto` batches
VMAP_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
               nn.Identity)
EVAL_ELEMENTS = 1 << 14    # members x examples per evaluation chunk: bounds the activations held at once


def untested_layers(model: nn.Module) -> list[str]:
    """The kinds of the model's leaf layers that the batched trainer has not been tested on (a transformer's
    embeddings, dropout: random per call, a user's own layers); [] when it has been on all of them."""
    return sorted({type(m).__name__ for m in model.modules()
                   if not list(m.children()) and not isinstance(m, (*VMAP_LAYERS, nn.Sequential))})


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


def check_batchable(model: nn.Module, data: Dataset | None = None, tested_only: bool = False) -> None:
    """Unsupported (one line) for what one stacked computation cannot train member by member; with tested_only,
    also for layers it has not been tested on (`untested_layers`: a transformer's dropout fails inside vmap),
    for callers that batch by default rather than because the user asked."""
    if data is not None and data.train.y.dim() != 1:
        raise Unsupported("the batched trainer takes one class label per example; per-token targets (text "
                          "tasks) train one by one with engine.trainer")
    from .bayes import is_bayesian

    if is_bayesian(model):
        raise Unsupported("Bayesian layers sample their weights and add a KL penalty per member; train them one "
                          "by one with engine.trainer")
    untested = untested_layers(model) if tested_only else []
    if untested:
        raise Unsupported(f"the batched trainer has not been tested on: {', '.join(untested)}")


def auto_reason(model: nn.Module, data: Dataset, cfg: TrainConfig | None = None) -> str | None:
    """Why `--batched auto` trains members of `model` one at a time on `data`'s device (None: it batches them).

    Batched only where it is supported and measured faster (bench/batched_speed.py, 2-core CPU): chains of
    Linear layers (grouped bmm: a lenet300 level with 2 controls about 2x). Convolutions go through vmap, which
    on CPU measured no faster than one at a time (conv4, 0.9-1.0x), so there auto keeps them one by one. On
    CUDA every supported model batches: one stacked kernel instead of K small launches (not measured here:
    no CUDA machine)."""
    try:
        check_batchable(model, data)
    except Unsupported as e:
        return str(e)
    if cfg is not None and cfg.amp != "off":  # bf16 rounds bmm and mm differently: alike only to bf16 precision
        return f"--amp {cfg.amp}: batched and one-by-one bf16 steps agree only to bf16 precision (not measured)"
    other = untested_layers(model)
    if other:
        return f"layers the batched trainer has not been tested on: {', '.join(other)}"
    if data.train.y.device.type == "cpu" and _linear_chain(model) is None:
        return "on CPU only chains of Linear layers train faster batched (vmap over convolutions measured ~1x)"
    return None


def _forward(model: nn.Module):
    def one(params, x):
        return functional_call(model, params, (x,))
    return one


def _linear_chain(model: nn.Module):
    """[(weight name, bias name, relu after)] when `model` is Flatten, Linear and ReLU only and those layers hold
    all its parameters, else None."""
    chain = model.as_sequential() if hasattr(model, "as_sequential") else None
    if chain is None or not all(isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)) for m in chain):
        return None
    names = {id(m): n for n, m in model.named_modules()}
    mods = list(chain)
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
            out.append((f"{names[id(m)]}.weight", f"{names[id(m)]}.bias" if m.bias is not None else None, relu))
    if {n for w, b, _ in out for n in (w, b) if n} != {n for n, _ in model.named_parameters()}:
        return None  # parameters outside the chain: the grouped pass would leave them out
    return out


def batched_forward(model: nn.Module, shared_input: bool = False):
    """f(stacked params, x) -> [K, b, C]: x is [K, b, ...] (or [b, ...], shared, with shared_input).
    Chains of Linear layers run as grouped baddbmm (measured faster than vmap on CPU); anything else through
    vmap over functional_call."""
    chain = _linear_chain(model)
    if chain is None:
        return vmap(_forward(model), in_dims=(0, None if shared_input else 0))

    def grouped(params, x):  # activations kept [K, features, b]: every weight's gradient comes out contiguous
        layers = iter(chain)
        if shared_input:  # every member reads the same x: the first layer is ONE matmul of the stacked weights
            w, b, relu = next(layers)
            k, out, fan_in = params[w].shape
            h = (params[w].reshape(k * out, fan_in) @ x.flatten(1).T).view(k, out, -1)
            h = h if b is None else h.add_(params[b].unsqueeze(2))
            h = h.relu_() if relu else h
        else:
            h = x.flatten(2).transpose(1, 2)
        for w, b, relu in layers:
            h = torch.bmm(params[w], h) if b is None else torch.baddbmm(params[b].unsqueeze(2), params[w], h)
            h = h.relu_() if relu else h  # in place: baddbmm's backward needs its inputs, not its output
        return h.transpose(1, 2)
    return grouped


def chain_step(chain, params: dict[str, torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step's (loss [K], gradients {name: [K, *shape]}) of a Linear chain (`_linear_chain`), with
    the backward pass written out: the kernels autograd would run on batched_forward's graph (the same bmm
    operands, log-softmax and ReLU backward ops), so the gradients are the same numbers, without autograd's
    graph and node bookkeeping, which for small members is a good part of a step (bench/zoo_speed.py).
    x: [K, b, ...] (each member its own batch), y: [K, b]; float32 only (autocast is autograd's)."""
    with torch.no_grad():
        h = x.flatten(2).transpose(1, 2)
        inputs = []                                              # each layer's input, [K, features, b]
        for w, b, relu in chain:
            inputs.append(h)
            h = torch.bmm(params[w], h) if b is None else torch.baddbmm(params[b].unsqueeze(2), params[w], h)
            h = h.relu_() if relu else h
        logp = torch.log_softmax(h, 1)                           # [K, C, b]: cross-entropy over the classes
        target = y.unsqueeze(1)
        losses = logp.gather(1, target).squeeze(1).mean(1).neg_()
        # d(sum of the members' mean losses)/d logp: -1/b at each target, as autograd's mean and nll give it
        share = torch.full((), 1.0, device=h.device).div_(y.shape[1]).neg_().expand(target.shape)
        g = torch.ops.aten._log_softmax_backward_data(torch.zeros_like(logp).scatter_(1, target, share), logp, 1,
                                                      logp.dtype)
        grads = {}
        for j in range(len(chain) - 1, -1, -1):
            w, b, relu = chain[j]
            grads[w] = torch.bmm(g, inputs[j].transpose(1, 2))
            if b is not None:
                grads[b] = g.sum(2)
            if j:  # the first layer's input is data: no gradient
                g = torch.bmm(params[w].transpose(1, 2), g)
                if chain[j - 1][2]:  # through the ReLU before: zero where its output was zero
                    g = torch.ops.aten.threshold_backward(g, inputs[j], 0)
    return losses, grads


@torch.inference_mode()
def evaluate_batched(model: nn.Module, weights: dict[str, torch.Tensor],
                     split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy [K], accuracy [K]) of every member of a stack on a split, in one batched pass.

    The same numbers `engine.trainer.evaluate` gives each member alone (to float rounding)."""
    return _evaluate_splits(model, weights, [split])[0]


@torch.inference_mode()
def _evaluate_splits(model: nn.Module, weights: dict[str, torch.Tensor], splits: Sequence[Split],
                    fwd=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """evaluate_batched on each split, the model put in eval mode once; `fwd`: batched_forward(model,
    shared_input=True) if the caller has one (the trainer builds it once, not at every evaluation)."""
    was_training = model.training
    model.eval()
    fwd = fwd or batched_forward(model, shared_input=True)
    out = [_evaluate(fwd, weights, split) for split in splits]
    model.train(was_training)
    return out


def _evaluate(fwd, params: dict[str, torch.Tensor], split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    k = next(iter(params.values())).shape[0]
    loss = torch.zeros(k, device=split.y.device)
    correct = torch.zeros(k, device=split.y.device, dtype=torch.long)
    chunk = max(16, EVAL_ELEMENTS // k)
    for i in range(0, len(split), chunk):
        logits = fwd(params, split.x[i:i + chunk])                     # [K, b, C]: a view of [K, C, b] for bmm
        y = split.y[i:i + chunk]
        # log-softmax over the classes of [K, C, b] (contiguous) is fast (vectorised along b), argmax there is
        # 3x slower than over a contiguous [K, b, C] copy (64 members x 256 examples: 16 ms vs 5 ms, here)
        loss += F.cross_entropy(logits.transpose(1, 2), y.expand(k, -1), reduction="none").sum(1)
        correct += (logits.contiguous().argmax(2) == y).sum(1)
    return loss.double() / len(split), correct.double() / len(split)


def train_batched(model: nn.Module, data: Dataset, cfg: TrainConfig, members: Sequence[Member], *,
                  on_eval: Callable[[int, dict], None] | None = None, cancel=None,
                  on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
                  stop: int | None = None) -> BatchedResult:
    """Train every member from its start step to the end of the schedule (or to step `stop`: a family zoo's
    parents, which part there; evaluated there, the schedule still the whole training's), all in one computation.

    `model`: a module of the members' architecture (only its structure is used; it is not changed).
    `on_eval(i, point)` after member i's evaluations (the points trainer.train's on_eval gets);
    `on_step(step, weights)` after each step, with every member's current weights stacked in member order
    (built only when asked for); `cancel.is_set()` is checked every step.
    """
    if not members:
        raise ConfigError("members", 0, "need at least one member")
    check_batchable(model, data)
    x, y = data.train.x, data.train.y
    rows = x.reshape(len(x), -1)  # examples gathered by index_select: much faster than x[idx] with idx [K, b]
    bs, k, device = cfg.batch_size, len(members), y.device
    per_epoch = steps_per_epoch(len(y), cfg)
    total = cfg.epochs * per_epoch
    end = total if stop is None else min(stop, total)
    eval_every = cfg.eval_every or per_epoch
    names = [n for n, _ in model.named_parameters()]
    buffers = [n for n, _ in model.named_buffers()]  # BatchNorm statistics: stacked too, updated per member
    for i, m in enumerate(members):
        missing = set(names + buffers) - set(m.init)
        if missing:
            raise ConfigError(f"members[{i}].init", sorted(missing)[:3], "start weights lack these parameters")

    # Members starting at the same step form a group: one stacked leaf tensor per parameter and one optimizer
    # (engine.trainer.make_optimizer: torch's fused Adam or SGD, the update rules trainer.train uses; for 64 small
    # MLPs a fused Adam step took 2.2 ms where the same rules written out over the stack took 9-25 ms).
    # A group joins the computation at its start step.
    starts = sorted({m.start_step for m in members})
    groups = [[i for i, m in enumerate(members) if m.start_step == s] for s in starts]
    flat = [i for g in groups for i in g]                      # position in the full stack -> member index
    back = torch.tensor(sorted(range(k), key=flat.__getitem__), device=device)   # member index -> position
    masked = [n for n in names
              if any(m.mask is not None and n in m.mask and not bool(m.mask[n].all()) for m in members)]

    def stacked(idx, n, mask=False):
        def one(m):
            if mask:
                given = m.mask is not None and n in m.mask
                return m.mask[n] if given else torch.ones_like(m.init[n], dtype=torch.bool)
            return m.init[n].detach()
        return torch.stack([one(members[i]).to(device) for i in idx])

    leaves, stats, masks, opts = [], [], [], []
    for g in groups:
        stats.append({n: stacked(g, n) for n in buffers})
        keep = {n: stacked(g, n, mask=True) for n in masked}
        params = {n: stacked(g, n).to(torch.float32) for n in names}
        for n in masked:
            params[n].mul_(keep[n])
        leaves.append({n: p.requires_grad_(True) for n, p in params.items()})
        masks.append({n: t.to(torch.float32) for n, t in keep.items()})
        opts.append(make_optimizer(leaves[-1].values(), cfg))
    steppers = [_stepper(opt) for opt in opts]
    fwd = batched_forward(model)
    eval_fwd = batched_forward(model, shared_input=True)
    chain = _linear_chain(model) if cfg.amp == "off" else None  # written-out backward (chain_step)
    schedule = cfg.lr_schedule != "constant" or cfg.warmup > 0
    amp = autocast(cfg, device)  # --amp bf16: forward and loss under torch.autocast, as engine.trainer does

    def full_stack() -> dict[str, torch.Tensor]:  # every member's state dict, stacked in stack order
        return {n: torch.cat([group[n].detach() for group in leaves]) for n in names} | \
            {n: torch.cat([group[n] for group in stats]) for n in buffers}

    curves: list[list[dict]] = [[] for _ in members]
    loss_sum = torch.zeros(k, device=device)   # in stack order
    steps_since = [0] * len(groups)            # steps since the last evaluation, per group
    perms = None
    was_training = model.training
    model.train()
    t0 = time.perf_counter()
    for step in range(starts[0], end):
        epoch, b = divmod(step, per_epoch)
        if perms is None or b == 0:  # each member its own order, by the trainer's own rule
            perms = torch.stack([torch.randperm(len(y), generator=generator(members[i].seed, "order", epoch))
                                 for i in flat]).to(device)
        active = sum(s <= step for s in starts)            # groups are sorted by start: the first `active` train
        n_act = sum(len(g) for g in groups[:active])
        if active == 1:
            params = leaves[0] | stats[0]
        else:
            with torch.set_grad_enabled(chain is None):  # chain_step writes its backward: no autograd node
                params = {n: torch.cat([group[n] for group in leaves[:active]]) for n in names} | \
                    {n: torch.cat([group[n] for group in stats[:active]]) for n in buffers}
        idx = perms[:n_act, b * bs:(b + 1) * bs]                                # [K_active, bs]

        batch = rows.index_select(0, idx.flatten()).view(*idx.shape, *x.shape[1:])
        labels = y.index_select(0, idx.flatten()).view(idx.shape)
        if chain is not None:
            losses, grads = chain_step(chain, params, batch, labels)
            offset = 0
            for leaf in leaves[:active]:  # each group's gradients: its rows of the stack (views, no copy)
                size = len(next(iter(leaf.values())))
                for n, p in leaf.items():
                    p.grad = grads[n] if active == 1 else grads[n][offset:offset + size]
                offset += size
        else:
            losses = _autograd_step(fwd, params, batch, labels, amp, opts[:active])
        if active > 1 and buffers:  # BatchNorm updated the concatenated statistics: give each group its own
            offset = 0
            for group in stats[:active]:
                size = len(next(iter(group.values())))
                for n in buffers:
                    group[n].copy_(params[n][offset:offset + size])
                offset += size
        lr = lr_at(step, total, cfg) if schedule else None
        for leaf, keep, opt, opt_step in zip(leaves[:active], masks, opts, steppers):
            if keep:
                torch._foreach_mul_([leaf[n].grad for n in keep], list(keep.values()))
            if lr is not None:
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_ratio", 1.0)
            opt_step()
        loss_sum[:n_act] += losses
        for g in range(active):
            steps_since[g] += 1
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")

        if (step + 1) % eval_every == 0 or step + 1 == end:
            at = [step + 1 if j < n_act else None for j in range(k)]
            counted = torch.tensor([n for g, n in zip(groups, steps_since) for _ in g], device=device)
            _record(model, eval_fwd, full_stack(), data, curves, flat, at, per_epoch, loss_sum / counted.clamp(min=1),
                    on_eval)
            loss_sum.zero_()
            steps_since = [0] * len(groups)
        if on_step is not None:
            on_step(step + 1, {n: w.index_select(0, back) for n, w in full_stack().items()})

    seconds = time.perf_counter() - t0
    if not all(curves):  # members that started at or past the end: report their weights as they are
        at = [None if curves[i] else members[i].start_step for i in flat]
        _record(model, eval_fwd, full_stack(), data, curves, flat, at, per_epoch,
                torch.full((k,), math.nan, device=device), on_eval)
    model.train(was_training)
    keys = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
    results = []
    for curve in curves:
        best = curve[0]
        for point in curve[1:]:
            if point["val_loss"] < best["val_loss"]:
                best = point
        results.append(TrainResult(iterations=end, seconds=seconds, final={q: curve[-1][q] for q in keys},
                                   early_stop_iteration=best["iteration"], at_early_stop={q: best[q] for q in keys},
                                   curve=curve))
    return BatchedResult(results, {n: w.index_select(0, back) for n, w in full_stack().items()})


def _stepper(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """opt.step, or for torch's fused Adam (engine.trainer's default optimizer) the kernel it runs, called
    directly. torch.optim's step wraps that kernel in hooks, profiling and a regrouping of the tensors by
    device on every call: for a lenet300 level (3 members) that was about a fifth of a step under cProfile.
    The first step goes through opt.step, which creates the state (step counters, moments) as torch does;
    later ones hand the same state tensors and each group's current lr and settings to the same kernel, so
    the update is the same, bit for bit (tests/test_batched.py trains both ways)."""
    plain = isinstance(opt, torch.optim.Adam) and all(
        g.get("fused") and not (g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"]
                                or g.get("decoupled_weight_decay") or torch.is_tensor(g["lr"]))
        for g in opt.param_groups)
    if not plain:
        return opt.step
    groups = []

    def step() -> None:
        if not groups:
            opt.step()  # creates the state
            if any(not opt.state[p] for g in opt.param_groups for p in g["params"]):
                return  # a parameter the loss did not reach has no state yet: read it on a later step
            for g in opt.param_groups:
                state = [opt.state[p] for p in g["params"]]
                groups.append((g, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                               [s["step"] for s in state]))
            return
        grads = [[p.grad for p in g["params"]] for g, *_ in groups]
        if any(grad is None for group in grads for grad in group):
            opt.step()  # a parameter the loss did not reach: torch skips it
            return
        for (g, exp_avg, exp_avg_sq, steps), grads in zip(groups, grads):
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(g["params"], grads, exp_avg, exp_avg_sq, [], steps, amsgrad=False, lr=g["lr"],
                               beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"],
                               eps=g["eps"], maximize=False, grad_scale=None, found_inf=None)
    return step


def _autograd_step(fwd, params, batch, labels, amp, opts) -> torch.Tensor:
    """Loss [K] of one step; every leaf's .grad set by autograd (any architecture, autocast included)."""
    with amp:
        out = fwd(params, batch)                                                # [K_active, bs, C]
        losses = F.cross_entropy(out.transpose(1, 2), labels, reduction="none").mean(1)
    for opt in opts:  # the active groups' optimizers
        opt.zero_grad(set_to_none=True)
    losses.sum().backward()  # members share no parameter: each one's gradient is its own loss's
    return losses.detach()


def _record(model, fwd, weights, data: Dataset, curves, flat: list[int], at: list[int | None], per_epoch: int,
            train_loss: torch.Tensor, on_eval) -> None:
    """Evaluate the whole stack (one batched pass per split) and append a point at iteration at[j] to the
    member at stack position j (member flat[j]) wherever at[j] is not None."""
    (val_loss, val_acc), (test_loss, test_acc) = _evaluate_splits(model, weights, [data.val, data.test], fwd)
    rows = zip(at, val_loss.tolist(), val_acc.tolist(), test_loss.tolist(), test_acc.tolist(), train_loss.tolist())
    for j, (it, vl, va, tl, ta, trl) in enumerate(rows):
        if it is None:
            continue
        i = flat[j]
        point = {"iteration": it, "epoch": it / per_epoch, "train_loss": trl, "val_loss": vl, "val_accuracy": va,
                 "test_loss": tl, "test_accuracy": ta}
        curves[i].append(point)
        if on_eval is not None:
            on_eval(i, point)
