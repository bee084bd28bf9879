"""How much does engine.trainer.train cost over a hand-written PyTorch loop? (a script, not a test)

One IMP level of lenet300 on digits at ~20% density, default TrainConfig (Adam 1.2e-3, batch 60,
70 epochs -> the engine's own step count). Every variant trains a fresh copy of the same masked
start weights on the same in-memory tensors, in one process, interleaved, after a warm-up; we
report the median of --repeats.

    python bench/trainer_overhead.py [--repeats 5] [--threads 1] [--profile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from engine import masks as M
from engine import models, trainer
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load


def setup():
    data = load(DataConfig("digits"))
    model = models.build(ModelConfig("lenet300"), data.input_shape, data.num_classes, seed=0)
    # A real ticket level: magnitude-prune the init to 20% per hidden layer (the output layer where
    # IMP would leave it at that density, ~0.9^7), and zero the pruned weights.
    mask = M.prune_to_density(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.2, 0.9 ** 7,
                              "layerwise", M.output_layer(model))
    M.apply(model, mask)
    return data, model, mask


def run_engine(model, data, cfg, mask):
    trainer.train(model, data, cfg, mask, seed=0)


def run_plain(model, data, cfg, mask, evaluate=False, fused=False):
    """The loop a PyTorch user would write: new permutation per epoch, forward, loss, backward, step.

    With torch's default (unfused) Adam, or with the fused Adam the engine uses: the engine picked
    fused because unfused Adam's sqrt() is ~5x slower on the exact zeros that pruned weights keep in
    the second moments, so the fused baseline isolates the engine's own overhead."""
    x, y = data.train.x, data.train.y
    bs, per_epoch = cfg.batch_size, trainer.steps_per_epoch(len(y), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y))
        for b in range(per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if evaluate:  # what the engine also does once per epoch (early-stopping iteration)
            trainer.evaluate(model, data.val)
            trainer.evaluate(model, data.test)


def run_dataloader(model, data, cfg, mask):
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=cfg.batch_size,
                        shuffle=True, drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


VARIANTS = {
    "engine trainer.train": run_engine,
    "plain loop": run_plain,
    "plain loop, fused Adam": lambda *a: run_plain(*a, fused=True),
    "plain loop + eval/epoch": lambda *a: run_plain(*a, evaluate=True),
    "plain fused Adam + eval": lambda *a: run_plain(*a, evaluate=True, fused=True),
    "DataLoader loop": run_dataloader,
}


def timed(fn, model, data, cfg, mask) -> float:
    m = copy.deepcopy(model)  # same start weights for every variant and repeat
    t0 = time.perf_counter()
    fn(m, data, cfg, mask)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    # One thread by default: a 64-300-100-10 net gains nothing from intra-op threads, and on a shared
    # 2-core machine two OpenMP threads stall badly whenever another process holds a core.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    ap.add_argument("--profile", action="store_true", help="cProfile one engine level afterwards")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data, model, mask = setup()
    cfg = TrainConfig(epochs=args.epochs)
    steps = trainer.total_steps(len(data.train), cfg)
    print(f"lenet300/digits: {len(data.train)} train examples, batch {cfg.batch_size}, {cfg.epochs} epochs "
          f"= {steps} steps/level, density {M.density(mask):.3f}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    warm = TrainConfig(epochs=2)  # warm-up: allocator, kernels, lazy imports
    for fn in VARIANTS.values():
        timed(fn, model, data, warm, mask)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for name, fn in VARIANTS.items():
            times[name].append(timed(fn, model, data, cfg, mask))

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'variant':<26}{'s/level (median)':>18}{'min':>8}{'max':>8}{'us/step':>9}")
    for name, t in times.items():
        print(f"{name:<26}{med[name]:>18.3f}{min(t):>8.3f}{max(t):>8.3f}{1e6 * med[name] / steps:>9.0f}")
    e = med["engine trainer.train"]
    print(f"\nengine / plain            {e / med['plain loop']:.3f}   (target <= 1.15)")
    print(f"engine / plain + eval     {e / med['plain loop + eval/epoch']:.3f}")
    print(f"engine / DataLoader       {e / med['DataLoader loop']:.3f}")
    print(f"engine / plain fused Adam {e / med['plain loop, fused Adam']:.3f}   (same optimizer kernel)")
    print(f"engine / plain fused+eval {e / med['plain fused Adam + eval']:.3f}   (same kernel, same evaluations: "
          "what masking and bookkeeping cost)")

    if args.profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        run_engine(copy.deepcopy(model), data, cfg, mask)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
