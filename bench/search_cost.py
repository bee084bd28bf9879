"""What does each ticket-finding method cost? (a benchmark, not a test)

Runs the leaderboard (`engine.compare`) on lenet300/digits at one final density and prints, per method,
the search cost before the ticket's own training as ratios to one dense training of the same run
(training steps and wall-clock seconds, both measured in this run), the total including the ticket's
own training, and the ticket's test accuracy. IMP reads the level nearest the density.

    python bench/search_cost.py [--density 0.05] [--seeds 1] [--runs-dir /tmp/lottery-bench-cost] [--json]

Pruning at initialisation scores a batch, which is not counted as training (cost 0); strong tickets
(edgepopup, biprop) are never trained after their search, so their total is the search.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

import engine
from engine.compare import compare
from engine.registry import METHODS

METHODS_ALL = ["imp", "oneshot", "earlybird", "snip", "grasp", "synflow", "magnitude", "random", "rigl", "set",
               "cs", "cts", "edgepopup", "biprop"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS_ALL))
    ap.add_argument("--runs-dir", default=tempfile.gettempdir() + "/lottery-bench-cost")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    base = engine.RunConfig(device="cpu")
    result = compare(base, methods, [args.density], args.seeds, runs_dir=args.runs_dir)
    rows = []
    for r in result["rows"]:
        summaries = [engine.RunStore(args.runs_dir, rid).summary() for rid in r["runs"]]
        dense_steps = statistics.fmean(s["dense"]["iterations"] for s in summaries)
        dense_s = statistics.fmean(s["dense"]["train_seconds"] for s in summaries)
        ticket = [next(lv for lv in s["levels"] if abs(lv["density"] - r["density"]) < 0.02) for s in summaries]
        untrained = not METHODS.get(r["method"], "method").trains_controls  # a strong ticket: never trained
        own_steps = 0 if untrained else statistics.fmean(t["iterations"] - t["start_step"] for t in ticket)
        own_s = 0 if untrained else statistics.fmean(t["train_seconds"] for t in ticket)
        rows.append({"method": r["method"], "density": r["density"], "test_accuracy": r["test_accuracy_mean"],
                     "search_steps_ratio": r["search_steps"] / dense_steps, "search_seconds_ratio": r["search_seconds"] / dense_s,
                     "total_steps_ratio": (r["search_steps"] + own_steps) / dense_steps,
                     "total_seconds_ratio": (r["search_seconds"] + own_s) / dense_s,
                     "search_seconds": r["search_seconds"], "dense_seconds": dense_s})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"search cost at density {args.density} on lenet300/digits, {args.seeds} seed(s), {args.threads} thread(s); "
          "ratios to one dense training of the same run")
    print(f"{'method':<10} {'density':>8} {'test acc':>8} {'search steps':>13} {'search time':>12} "
          f"{'total steps':>12} {'total time':>11}")
    for r in sorted(rows, key=lambda r: r["total_seconds_ratio"]):
        print(f"{r['method']:<10} {r['density']:>8.4f} {100 * r['test_accuracy']:>7.2f}% {r['search_steps_ratio']:>12.2f}x "
              f"{r['search_seconds_ratio']:>11.2f}x {r['total_steps_ratio']:>11.2f}x {r['total_seconds_ratio']:>10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
