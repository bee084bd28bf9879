"""What does a Bayesian net cost over its deterministic twin? (a script, not a test)

1. One training step (forward, cross-entropy + KL / N, backward, masked gradients, Adam step: what
   engine.trainer.train does per step) of `--bayesian` vs the deterministic net, same architecture, same
   ~20%-density ticket mask, same batch, in one process, interleaved, median of --repeats. Target: <= 2.5x.
2. Monte-Carlo evaluation of S samples batched into one forward pass vs one pass per sample (the same noise:
   engine.bayes.predict with batched=True / False), and which of the two predict picks for the model.

    python bench/bayes_speed.py [--repeats 5] [--steps 100] [--threads 1] [--samples 16] [--eval-size 1000]

Settings: lenet300 on digits (64 inputs, batch 60: the default run), lenet300 at MNIST's 784 inputs (random
data), conv2 on 1x28x28 (random data). Every time is measured twice: wall clock, and the CPU time of this
thread (time.thread_time), which other processes on a shared machine inflate far less than the wall clock
(though not at all: they share caches and cores). Compare ratios, not times.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine import bayes, models, trainer
from engine import masks as M
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import Split, load


def ticket(model):
    mask = M.prune_to_density(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.2, 0.5, "layerwise",
                              M.output_layer(model))
    M.apply(model, mask)
    return mask


def stepper(model, mask, x, y, n_train):
    """The trainer's step, verbatim in what it computes."""
    cfg = TrainConfig()
    opt = trainer.make_optimizer(model.parameters(), cfg)
    penalty = bayes.start_training(model, n_train, seed=0)
    params = dict(model.named_parameters())
    masked = [(params[n], m.to(params[n].dtype)) for n, m in mask.items()]
    g = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(y), (60,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty()).backward()
        torch._foreach_mul_([p.grad for p, _ in masked], [m for _, m in masked])
        opt.step()
    return step


def time_steps(step, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) per call of step()."""
    t, c = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps, (time.thread_time() - c) / steps


def median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def settings():
    digits = load(DataConfig("digits"))
    g = torch.Generator().manual_seed(0)
    yield "lenet300 / digits (64 in)", ModelConfig("lenet300"), digits.train.x, digits.train.y
    x = torch.randn(6000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (6000,), generator=g)
    yield "lenet300 / 784 in", ModelConfig("lenet300"), x, y
    yield "conv2 / 1x28x28", ModelConfig("conv2"), x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--eval-size", type=int, default=1000, help="inputs of the MC evaluation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeats} x {args.steps} steps; "
          "each figure wall / CPU")
    print(f"{'setting':<26} {'deterministic ms':>16} {'bayesian ms':>14} {'step ratio':>11}   "
          f"{'MC S=' + str(args.samples) + ' batched ms':>20} {'S passes ms':>14} {'speedup':>11} {'picks':>8}")
    for name, cfg, x, y in settings():
        shape, classes = tuple(x.shape[1:]), 10
        det = models.build(cfg, shape, classes, 0)
        bnet = models.build(ModelConfig(**{**cfg.__dict__, "bayesian": True}), shape, classes, 0)
        steps = {"det": stepper(det, ticket(det), x, y, len(y)), "bayes": stepper(bnet, ticket(bnet), x, y, len(y))}
        for s in steps.values():
            time_steps(s, 5)  # warm-up
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for k, s in steps.items():  # interleaved: contention hits both alike
                times[k].append(time_steps(s, args.steps))
        d, b = median(times["det"]), median(times["bayes"])

        test = Split(x[:args.eval_size], y[:args.eval_size])
        mc = {"batched": lambda: bayes.predict(bnet, test.x, args.samples, batched=True),
              "passes": lambda: bayes.predict(bnet, test.x, args.samples, batched=False)}
        mc_times = {k: [time_steps(f, 1) for _ in range(args.repeats)] for k, f in mc.items()}
        mb, ml = (median(mc_times[k]) for k in mc)
        conv = any(isinstance(layer, bayes.BayesConv2d) for _, layer in bayes.layers(bnet))
        picks = "passes" if conv else "batched"  # engine.bayes.predict's choice on CPU

        def pair(t, scale=1e3, fmt=".2f"):
            return f"{scale * t[0]:{fmt}} / {scale * t[1]:{fmt}}"
        print(f"{name:<26} {pair(d):>16} {pair(b):>14} {pair((b[0] / d[0], b[1] / d[1]), 1):>11}   "
              f"{pair(mb, fmt='.0f'):>20} {pair(ml, fmt='.0f'):>14} {pair((ml[0] / mb[0], ml[1] / mb[1]), 1):>11} "
              f"{picks:>8}")
    print("target: bayesian / deterministic step <= 2.5; speedup = S passes / batched")


if __name__ == "__main__":
    main()
