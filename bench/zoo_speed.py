"""Batched training (engine.batched) vs training the same members one by one (engine.trainer): a script.

Two zoos on digits, each member with its own init and data order, the engine's default optimizer (Adam,
batch 60): 64 small MLPs (64-32-10 by default: --hidden) and 8 lenet300. Both ways train exactly the same
members in one process, interleaved, after a warm-up; we report the median (and best) of --repeats and the
ratio one-by-one / batched. Targets (issue 12): >= 8x for the 64 MLPs, >= 3x for the 8 lenet300.

`--forward` also times one training step of the 64 MLPs through the two ways of batching the forward pass:
`torch.func.vmap` over `functional_call` (engine.batched's path for models other than Linear chains) and a
hand-written grouped `baddbmm` (its path for Linear chains).

    python bench/zoo_speed.py [--repeats 3] [--epochs 2] [--threads 1] [--forward]

Timings on a shared machine are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine import batched, models, trainer
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load


def members(mc: ModelConfig, data, k: int) -> list[batched.Member]:
    return [batched.Member(models.build(mc, data.input_shape, data.num_classes, seed).state_dict(), seed=100 + seed)
            for seed in range(k)]


def one_by_one(mc, data, cfg, ms) -> list[dict]:
    out = []
    for m in ms:
        net = models.build(mc, data.input_shape, data.num_classes, 0)
        net.load_state_dict(m.init)
        trainer.train(net, data, cfg, None, seed=m.seed)
        out.append(net.state_dict())
    return out


def together(mc, data, cfg, ms) -> dict:
    net = models.build(mc, data.input_shape, data.num_classes, 0)
    return batched.train_batched(net, data, cfg, ms).weights


def interleaved(ways: dict, args: tuple, repeats: int, cpu: dict | None = None) -> dict[str, list[float]]:
    """Seconds of each way (label -> function of `args`) over `repeats` rounds, the ways taking turns within
    a round so that a change in the machine's load hits them alike. `cpu`, if given, gets the CPU seconds of
    each run too (this process's): on a shared machine they vary less than wall time, since they leave out
    the time other processes held the cores (at one thread; with more, they add up every thread's time)."""
    times = {label: [] for label in ways}
    for _ in range(repeats):
        for label, fn in ways.items():
            t, c = time.perf_counter(), time.process_time()
            fn(*args)
            times[label].append(time.perf_counter() - t)
            if cpu is not None:
                cpu.setdefault(label, []).append(time.process_time() - c)
    return times


def cpu_ratio(cpu: dict[str, list[float]], slow: str, fast: str) -> str:
    return f"CPU-time ratio {statistics.median(cpu[slow]) / statistics.median(cpu[fast]):.1f}x"


def compare(name: str, mc: ModelConfig, k: int, data, cfg, repeats: int, target: float) -> float:
    ms = members(mc, data, k)
    alone, stacked = one_by_one(mc, data, cfg, ms[:2]), together(mc, data, cfg, ms[:2])  # warm-up, and a check
    gap = max(float((alone[i][n] - stacked[n][i]).abs().max()) for i in range(2) for n in stacked)
    cpu = {}
    times = interleaved({"one by one": one_by_one, "batched": together}, (mc, data, cfg, ms), repeats, cpu)
    med = {label: statistics.median(v) for label, v in times.items()}
    ratio = med["one by one"] / med["batched"]
    print(f"{name}: {k} members x {cfg.epochs} epochs  one by one {med['one by one']:.2f} s (best "
          f"{min(times['one by one']):.2f})  batched {med['batched']:.2f} s (best {min(times['batched']):.2f})  "
          f"ratio {ratio:.1f}x (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}; "
          f"{cpu_ratio(cpu, 'one by one', 'batched')}); max weight gap batched vs alone {gap:.1e}")
    return ratio


def forward_comparison(data, hidden: tuple, k: int = 64, bs: int = 60, repeats: int = 15) -> None:
    from torch.func import functional_call, vmap

    mc = ModelConfig(model="mlp", hidden=hidden)
    net = models.build(mc, data.input_shape, data.num_classes, 0)
    p = {n: torch.randn(k, *v.shape).mul_(0.1).requires_grad_() for n, v in net.named_parameters()}
    x, y = torch.randn(k, bs, *data.input_shape), torch.randint(0, data.num_classes, (k, bs))
    fwd = vmap(lambda pp, xx: functional_call(net, pp, (xx,)))
    layers = [(p[f"hidden.{i}.weight"], p[f"hidden.{i}.bias"]) for i in range(len(hidden))] + \
        [(p["out.weight"], p["out.bias"])]

    def bmm(xx):
        h = xx.flatten(2)
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            h = F.relu(h) if i < len(hidden) else h
        return h

    def step(f):
        for q in p.values():
            q.grad = None
        F.cross_entropy(f(x).transpose(1, 2), y, reduction="none").mean(1).sum().backward()

    ways = {"vmap + functional_call": lambda xx: fwd(p, xx), "grouped baddbmm": bmm}
    res = {name: [] for name in ways}
    for f in ways.values():
        for _ in range(10):
            step(f)
    for _ in range(repeats):
        for name, f in ways.items():
            t = time.perf_counter()
            for _ in range(50):
                step(f)
            res[name].append((time.perf_counter() - t) / 50 * 1e3)
    print(f"one training step of {k} MLPs {'-'.join(map(str, hidden))} (batch {bs}), forward + backward:")
    for name, v in res.items():
        print(f"  {name:<24} best {min(v):.2f} ms  median {statistics.median(v):.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: tiny models gain "
                    "nothing from more, and a shared machine stalls OpenMP threads)")
    ap.add_argument("--hidden", default="64,32",
                    help="the small MLPs' hidden widths (default: %(default)s, as in the issue's example)")
    ap.add_argument("--forward", action="store_true", help="also time vmap vs grouped bmm per training step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load(DataConfig("digits"))
    cfg = TrainConfig(epochs=args.epochs)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    print(f"digits, Adam, batch {cfg.batch_size}, {torch.get_num_threads()} thread(s)")
    compare(f"mlp {args.hidden}", ModelConfig(model="mlp", hidden=hidden), 64, data, cfg, args.repeats, 8)
    compare("lenet300", ModelConfig(model="lenet300"), 8, data, cfg, args.repeats, 3)
    if args.forward:
        forward_comparison(data, hidden)


if __name__ == "__main__":
    main()
