"""The instability analysis: the batched path (engine.batched, BN statistics on a fixed subset) vs today's
path before it (each copy trained alone, BN statistics on the whole training split): a script.

One stored run (a BatchNorm ResNet-20 on `digits` by default, or --preset stability-story for the issue's
case), then, in the same process, interleaved, --repeats times:

  reference  instability(..., batched=False, bn_examples=<whole split>)   # the path before issue 17
  batched    instability(..., batched=True,  bn_examples=--bn-examples)   # the default now
  batched, whole split                                                     # the batching alone

We print each path's median seconds, the ratio reference / batched, and the barriers of each path (the
subset's measured effect on the barrier is the difference between the last two rows).

    python bench/instability_speed.py [--repeats 1] [--points 0,5,10] [--width 0.25] [--epochs 2]
    python bench/instability_speed.py --preset stability-story --points 0,20,100   # the issue's case: long

Timings on a shared machine are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import engine
from engine.analysis import instability


def stored_run(cfg: engine.RunConfig, runs_dir: str) -> str:
    """Train only the dense level (level 0) of `cfg` and keep it: what instability at level 0 needs."""
    stop = threading.Event()
    try:
        engine.run(cfg.replace(**{"prune.levels": 1, "prune.controls": ()}), runs_dir=runs_dir,
                   on_event=lambda e: getattr(e, "kind", "") == "LevelDone" and stop.set(), cancel=stop)
    except engine.RunCancelled:
        pass
    return cfg.replace(**{"prune.levels": 1, "prune.controls": ()}).run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", help="a run preset (engine.presets) instead of the small default case")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--points", default="0,5,10", help="rewind points k")
    ap.add_argument("--curve", type=int, default=11, help="interpolation points")
    ap.add_argument("--bn-examples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.preset:
        from engine.presets import preset_config
        cfg = preset_config(args.preset)
    else:
        cfg = engine.RunConfig().replace(**{
            "model.model": "resnet20", "model.width": args.width, "train.optimizer": "sgd", "train.lr": 0.1,
            "train.momentum": 0.9, "train.batch_size": 64, "train.epochs": args.epochs, "device": "cpu"})
    ks = [int(k) for k in args.points.split(",")]
    with tempfile.TemporaryDirectory() as runs_dir:
        t = time.perf_counter()
        run_id = stored_run(cfg, runs_dir)
        print(f"dense run {run_id}: {time.perf_counter() - t:.1f} s")
        ways = {"reference (one by one, whole split)": dict(batched=False, bn_examples=10 ** 9),
                f"batched, BN subset {args.bn_examples}": dict(batched=True, bn_examples=args.bn_examples),
                "batched, whole split": dict(batched=True, bn_examples=10 ** 9)}
        seconds = {w: [] for w in ways}
        barriers = {}
        for _ in range(args.repeats):
            for way, kw in ways.items():
                t = time.perf_counter()
                r = instability(run_id, runs_dir, rewind_points=ks, points=args.curve, **kw)
                seconds[way].append(time.perf_counter() - t)
                barriers[way] = r["barriers"]
    ref = statistics.median(seconds[next(iter(ways))])
    print(f"{cfg.model.model} width {cfg.model.width} on {cfg.data.dataset}, {cfg.train.epochs} epochs, k={ks}, "
          f"{args.curve} interpolation points, median of {args.repeats}")
    for way in ways:
        med = statistics.median(seconds[way])
        print(f"  {way:<40} {med:8.1f} s  x{ref / med:5.2f}  barriers {[round(b, 4) for b in barriers[way]]}")


if __name__ == "__main__":
    main()
