"""What does a Bayesian net cost over its deterministic twin? (a script, not a test)

1. One training step (forward, cross-entropy + KL / N, backward, masked gradients, Adam step: what
   engine.trainer.train does per step, the masks and the optimizer handed to engine.bayes.start_training as the
   trainer does) of `--bayesian` vs the deterministic net, same architecture, same ticket mask (--density,
   default 0.2, IMP's layerwise magnitude pruning, output layer at half the rate), same batch, in one process,
   interleaved, median of --repeats. Target: <= 2.5x. Beside it the same for the dense nets (level 0: no mask, where the
   Bayesian posterior is computed over every weight; `--no-dense` skips it). The Bayesian posterior's elementwise
   arithmetic and its noise run in engine/posterior_kernel.c where it can be built (the first line says whether);
   the "ops" columns time the same Bayesian steps with the posterior's arithmetic on PyTorch ops (the same noise),
   in a second round, interleaved with the deterministic steps again, their ratios against that round's
   (`--no-ops` skips them).
2. Monte-Carlo evaluation of S samples batched into one forward pass vs one pass per sample (the same noise:
   engine.bayes.predict with batched=True / False), and which of the two predict picks for the model
   (`--no-mc` skips it).

    python bench/bayes_speed.py [--repeats 5] [--steps 100] [--threads 1] [--density 0.2]
                                [--settings digits,784,conv2] [--no-dense] [--no-ops] [--no-mc] [--samples 16]
                                [--eval-size 1000]

Settings: lenet300 on digits (64 inputs, batch 60: the default run), lenet300 at MNIST's 784 inputs (random
data), conv2 on 1x28x28 (random data; a conv2 step takes ~0.2 s on one CPU thread, so it is timed over a
twentieth of --steps). Every time is measured twice: wall clock, and the CPU time of this thread
(time.thread_time), which other processes on a shared machine inflate far less than the wall clock (though not
at all: they share caches and cores). Compare ratios, not times.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine import bayes, models, posterior_kernel, trainer
from engine import masks as M
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import Split, load

SETTINGS = ("digits", "784", "conv2")


def ticket(model, density: float):
    """IMP's layerwise magnitude ticket at `density` (the output layer pruned at half the rate), applied."""
    mask = M.prune_to_density(M.magnitude_scores(model, M.ones(model)), M.ones(model), density, 0.5, "layerwise",
                              M.output_layer(model))
    M.apply(model, mask)
    return mask


def stepper(model, mask, x, y, n_train):
    """The trainer's step, verbatim in what it computes (engine.trainer.train: its masks, optimizer, penalty)."""
    cfg = TrainConfig()
    params = dict(model.named_parameters())
    masked = [(params[n], m.to(params[n].dtype)) for n, m in mask.items() if not bool(m.all())]
    opt = trainer.make_optimizer(model.parameters(), cfg)
    penalty = bayes.start_training(model, n_train, 0, masked, opt)
    g = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(y), (60,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty()).backward()
        if masked:
            torch._foreach_mul_([p.grad for p, _ in masked], [m for _, m in masked])
        opt.step()
    return step


def on_ops(step):
    """The step with the posterior on PyTorch ops (engine.posterior_kernel turned off)."""
    def ops_step():
        with posterior_kernel.turned_off():
            step()
    return ops_step


def time_steps(step, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) per call of step()."""
    t, c = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps, (time.thread_time() - c) / steps


def timed(steps: dict, repeats: int, steps_each: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per step of each, timed `repeats` times, the steps interleaved."""
    for step in steps.values():
        time_steps(step, min(5, steps_each))  # warm-up
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            times[k].append(time_steps(step, steps_each))
    return {k: median(v) for k, v in times.items()}


def median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def settings(chosen=SETTINGS):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (6000,), generator=g)
    if "digits" in chosen:
        digits = load(DataConfig("digits"))
        yield "lenet300 / digits (64 in)", ModelConfig("lenet300"), digits.train.x, digits.train.y
    if "784" in chosen:
        yield "lenet300 / 784 in", ModelConfig("lenet300"), x, y
    if "conv2" in chosen:
        yield "conv2 / 1x28x28", ModelConfig("conv2"), x, y


def pair(t, scale=1e3, fmt=".2f"):
    return f"{scale * t[0]:{fmt}} / {scale * t[1]:{fmt}}"


def ratio(b, d):
    return pair((b[0] / d[0], b[1] / d[1]), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="steps per timing (conv2: a twentieth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--density", type=float, default=0.2, help="density of the ticket both nets train")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the dense nets (level 0)")
    ap.add_argument("--ops", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the Bayesian steps on PyTorch ops (without engine/posterior_kernel.c)")
    ap.add_argument("--mc", action=argparse.BooleanOptionalAction, default=True, help="also time MC evaluation")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--eval-size", type=int, default=1000, help="inputs of the MC evaluation")
    args = ap.parse_args()
    chosen = args.settings.split(",")
    if not set(chosen) <= set(SETTINGS):
        ap.error(f"--settings {args.settings!r}: allowed {', '.join(SETTINGS)}")
    torch.set_num_threads(args.threads)
    print(posterior_kernel.status())
    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeats} timings of {args.steps} "
          f"steps; ticket density {args.density}; each figure wall / thread CPU")
    head = f"{'setting':<26} {'deterministic ms':>16} {'bayesian ms':>16} {'step ratio':>11}"
    if args.dense:
        head += f"   {'dense: det. ms':>16} {'bayesian ms':>16} {'ratio':>11}"
    if args.ops:
        head += f"   {'ops: ticket ms':>16} {'ratio':>11}" + (f" {'dense ms':>16} {'ratio':>11}" if args.dense else "")
    if args.mc:
        head += (f"   {'MC S=' + str(args.samples) + ' batched ms':>20} {'S passes ms':>14} {'speedup':>11} "
                 f"{'picks':>8}")
    print(head)
    for name, cfg, x, y in settings(chosen):
        shape, classes = tuple(x.shape[1:]), 10
        steps_each = args.steps if cfg.model == "lenet300" else max(1, args.steps // 20)
        configs = {"det": cfg, "bayes": ModelConfig(**{**cfg.__dict__, "bayesian": True})}
        nets = {k: models.build(c, shape, classes, 0) for k, c in configs.items()}
        steps = {k: stepper(net, ticket(net, args.density), x, y, len(y)) for k, net in nets.items()}
        if args.dense:
            for k, c in configs.items():
                net = models.build(c, shape, classes, 0)
                steps["dense " + k] = stepper(net, M.ones(net), x, y, len(y))
        # interleaved, so that contention hits all alike; the Bayesian steps on PyTorch ops in a round of their own,
        # with the deterministic steps timed again beside them (their many temporaries left the allocator and caches
        # in a state that slowed the next Bayesian step timed: dense digits 2.50-2.68x interleaved with them,
        # 2.43-2.47x without)
        t = timed(steps, args.repeats, steps_each)
        o = None
        if args.ops and posterior_kernel.available(x):  # the same Bayesian steps on PyTorch ops, for comparison
            o = timed({k + " ops" if k.endswith("bayes") else k: on_ops(s) if k.endswith("bayes") else s
                       for k, s in steps.items()}, args.repeats, steps_each)
        line = f"{name:<26} {pair(t['det']):>16} {pair(t['bayes']):>16} {ratio(t['bayes'], t['det']):>11}"
        if args.dense:
            line += (f"   {pair(t['dense det']):>16} {pair(t['dense bayes']):>16} "
                     f"{ratio(t['dense bayes'], t['dense det']):>11}")
        if o is not None:  # (against the deterministic steps of their own round)
            line += (f"   {pair(o['bayes ops']):>16} {ratio(o['bayes ops'], o['det']):>11}")
            if args.dense:
                line += f" {pair(o['dense bayes ops']):>16} {ratio(o['dense bayes ops'], o['dense det']):>11}"
        if args.mc:
            bnet = nets["bayes"]
            test = Split(x[:args.eval_size], y[:args.eval_size])
            mc = {"batched": lambda: bayes.predict(bnet, test.x, args.samples, batched=True),
                  "passes": lambda: bayes.predict(bnet, test.x, args.samples, batched=False)}
            mc_times = {k: [time_steps(f, 1) for _ in range(args.repeats)] for k, f in mc.items()}
            mb, ml = (median(mc_times[k]) for k in mc)
            conv = any(isinstance(layer, bayes.BayesConv2d) for _, layer in bayes.layers(bnet))
            picks = "passes" if conv else "batched"  # engine.bayes.predict's choice on CPU
            line += (f"   {pair(mb, fmt='.0f'):>20} {pair(ml, fmt='.0f'):>14} {ratio(ml, mb):>11} "
                     f"{picks:>8}")
        print(line, flush=True)
    print("target: bayesian / deterministic step <= 2.5 (a ticket's and, where shown, the dense net's); "
          "ops: the Bayesian steps without the compiled posterior kernel; speedup = S passes / batched")


if __name__ == "__main__":
    main()
