"""Sizes users bring: `lottery run` on an `npz:` data set of 60,000 x 784, memory and steps/s.

    python bench/scale_npz.py                 # makes bench-runs/scale/digits60k.npz once, then measures
    python bench/scale_npz.py --rows 6000     # a smaller file (a quick look)

The data set is made reproducibly from scikit-learn's bundled digits (no download): the `digits28` images
(28x28, augmented) tiled to 60,000 training and 10,000 test rows of 28 x 28 = 784 features, plus Gaussian
noise from a fixed seed, stored as float32 (`make_npz`; the worst case for memory, where the file's arrays
are as large as the tensors trained on).

Measured, in this one process, after a warm-up run on `digits` (torch's own first-use allocations are not
the data's):
  load     peak RSS added while `engine.data.load` reads the file, over the data set's tensor size (x and y of
           train, validation and test as trained on: float32 x, int64 y); target <= 2x
  run      peak RSS added during a whole `engine.run` (load, dense training, a pruning level), same ratio
  steps/s  training steps per second of `lenet300` and `conv2` (batch 60) indexing into the 60k tensors
           (steps 2..N of a training, stopped before its first evaluation)
Peak RSS is the kernel's high-water mark (VmHWM), reset before each measurement through
/proc/self/clear_refs (Linux).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run from a checkout: import the engine from the repo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISE = 0.1
SEED = 0


def make_npz(path: str | os.PathLike, rows: int = 60_000, test_rows: int = 10_000, seed: int = SEED) -> Path:
    """Write an npz of `rows` training and `test_rows` test examples of 28 x 28 (float32, labels int64) made
    from digits28 by tiling and noise; the same file for the same arguments."""
    from engine.config import DataConfig
    from engine.registry import DATASETS

    x_tr, x_te, y_tr, y_te = DATASETS.get("digits28", "data.dataset")(DataConfig(dataset="digits28"))[:4]
    rng = np.random.default_rng(seed)

    def tiled(x, y, n):
        idx = np.arange(n) % len(y)
        out = x.reshape(len(x), 28, 28)[idx].astype(np.float32)  # N x 28 x 28: lenet300 and the convs take it
        out += rng.standard_normal(out.shape, dtype=np.float32) * NOISE  # in place: no second copy
        return out, y[idx].astype(np.int64)

    xtr, ytr = tiled(x_tr, y_tr, rows)
    xte, yte = tiled(x_te, y_te, test_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    os.replace(f.name, path)
    return path


def tensor_bytes(data) -> int:
    """The data set's tensor size: x and y of every split, as trained on."""
    return sum(t.element_size() * t.nelement() for s in (data.train, data.val, data.test) for t in (s.x, s.y))


def _rss(field: str) -> int:
    """VmRSS or VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak-RSS mark to the current RSS; returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss("VmRSS")


def step_rate(model, data, cfg, steps: int) -> float:
    """Training steps per second of `engine.trainer.train` on `data`, over steps 2..`steps` (the first one
    warms up; the run is stopped before its first evaluation)."""
    from engine.errors import RunCancelled
    from engine import trainer

    times = []

    class Stop:  # trainer.train asks every step, after the optimizer step
        def is_set(self):
            times.append(time.perf_counter())
            return len(times) >= steps

    try:
        trainer.train(model, data, cfg, None, seed=0, cancel=Stop())
    except RunCancelled:
        pass
    return (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60_000, help="training rows of the made data set")
    ap.add_argument("--dir", default="bench-runs/scale", help="where the npz and the runs go")
    ap.add_argument("--steps", type=int, default=300, help="timed steps of lenet300 (conv2: a tenth)")
    # one: on a shared, busy machine two OpenMP threads stall (lenet300 here: 10 steps/s with 2, 200 with 1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()

    import torch

    import engine
    from engine import data as data_mod
    from engine import models

    torch.set_num_threads(args.threads)
    path = Path(args.dir) / f"digits{args.rows // 1000}k.npz"
    if not path.exists():
        t0 = time.perf_counter()
        make_npz(path, rows=args.rows)
        print(f"made {path} in {time.perf_counter() - t0:.1f}s")
    dataset = f"npz:{path}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"file {path.stat().st_size / 2**20:.0f} MiB")

    with tempfile.TemporaryDirectory() as runs:  # warm-up: torch's first-use allocations are not the data's
        engine.run(engine.RunConfig().replace(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": (),
                                                 "device": "cpu"}), runs_dir=runs)

    base = _reset_peak()
    data = data_mod.load(engine.RunConfig().replace(**{"data.dataset": dataset}).data)
    size = tensor_bytes(data)
    load_peak = _rss("VmHWM") - base
    print(f"data set: train {tuple(data.train.x.shape)}, val {len(data.val)}, test {len(data.test)}; "
          f"tensors {size / 2**20:.0f} MiB")
    print(f"load: peak RSS +{load_peak / 2**20:.0f} MiB = {load_peak / size:.2f}x the tensors (target <= 2x)")

    rows = []
    for model, steps in (("lenet300", args.steps), ("conv2", max(5, args.steps // 10))):
        cfg = engine.RunConfig().replace(**{"data.dataset": dataset, "model.model": model, "device": "cpu"})
        net = models.build(cfg.model, data.input_shape, data.num_classes, cfg.seed)
        rows.append((model, steps, step_rate(net, data, cfg.train, steps)))
    del data, net

    with tempfile.TemporaryDirectory() as runs:
        base = _reset_peak()
        cfg = engine.RunConfig().replace(**{"data.dataset": dataset, "train.epochs": 1, "prune.levels": 1,
                                            "prune.controls": (), "device": "cpu"})
        engine.run(cfg, runs_dir=runs)
        run_peak = _rss("VmHWM") - base
    print(f"run (lenet300, dense + 1 level): peak RSS +{run_peak / 2**20:.0f} MiB = {run_peak / size:.2f}x "
          "the tensors (target <= 2x)")
    print("\nmodel     steps/s  (batch 60 from the 60k tensors; steps 2..N of a training, no evaluation)")
    for model, steps, rate in rows:
        print(f"{model:9s} {rate:8.1f}  (N = {steps})")


if __name__ == "__main__":
    main()
