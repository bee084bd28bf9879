"""What does a Bayesian net cost over its deterministic twin? (a script, not a test)

1. One training step (forward, cross-entropy + KL / N, backward, masked gradients, Adam step: what
   engine.trainer.train does per step) of `--bayesian` vs the deterministic net, same architecture, same
   ~20%-density ticket mask, same batch, in one process, interleaved, median of --repeats. Target: <= 2.5x.
2. Monte-Carlo evaluation of S samples batched into one forward pass (engine.bayes.predict) vs S passes.

    python bench/bayes_speed.py [--repeats 5] [--steps 100] [--threads 1] [--samples 16]

Settings: lenet300 on digits (64 inputs, batch 60: the default run), lenet300 at MNIST's 784 inputs (random
data), conv2 on 1x28x28 (random data). Timings on a shared machine are noisy: compare ratios.
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


def time_steps(step, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeats} x {args.steps} steps")
    print(f"{'setting':<28} {'deterministic ms':>16} {'bayesian ms':>12} {'ratio':>6}   "
          f"{'MC S=' + str(args.samples) + ' batched ms':>18} {'S passes ms':>12} {'speedup':>8}")
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
        d, b = statistics.median(times["det"]), statistics.median(times["bayes"])

        test = Split(x[:1000], y[:1000])
        batched, looped = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            bayes.predict(bnet, test.x, args.samples)
            batched.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(args.samples):
                bayes.predict(bnet, test.x, 1)
            looped.append(time.perf_counter() - t)
        mb, ml = statistics.median(batched), statistics.median(looped)
        print(f"{name:<28} {1e3 * d:16.3f} {1e3 * b:12.3f} {b / d:6.2f}   {1e3 * mb:18.1f} {1e3 * ml:12.1f} "
              f"{ml / mb:8.2f}")
    print("target: bayesian / deterministic step <= 2.5")


if __name__ == "__main__":
    main()
