"""A leaderboard sweep through each executor (engine.executors): wall time, in-process vs local workers.

The sweep is 2 methods x 2 densities x 2 seeds (8 runs, each a dense training plus its ticket and a reinit
control) on digits; each executor trains it into a fresh runs dir, so nothing is reused. We report the wall
time of each (pool start-up included: that is what a user waits for) and the speed-up over in-process.

    python bench/sweep_speed.py [--epochs 2] [--workers 2] [--executors local,processes,dask]

On a 2-core machine 2 workers can at best halve the time, and only when the machine is otherwise idle;
timings on a shared machine are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from engine.compare import compare
from engine.config import RunConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executors", default="local,processes,dask")
    args = ap.parse_args()
    base = RunConfig().replace(**{"train.epochs": args.epochs, "prune.controls": ("reinit",), "device": "cpu"})
    times = {}
    for executor in args.executors.split(","):
        with tempfile.TemporaryDirectory() as runs_dir:
            start = time.perf_counter()
            pool = {} if executor == "local" else {"workers": args.workers}  # (local has no workers to set)
            result = compare(base, ["snip", "random"], [0.2, 0.05], 2, runs_dir=runs_dir, executor=executor, **pool)
            times[executor] = time.perf_counter() - start
            assert result["status"] == "completed" and len(result["rows"]) == 4
        print(f"{executor:<10} {times[executor]:7.1f} s", flush=True)
    if "local" in times:
        print("speed-up over in-process: " + ", ".join(
            f"{e} {times['local'] / t:.2f}x" for e, t in times.items() if e != "local"))


if __name__ == "__main__":
    main()
