"""Tickets follow stability (issue 17, item 2): a science check on the stability-story preset, not a test.

Frankle, Dziugaite, Roy & Carbin (2020): IMP finds matching tickets (as accurate as the dense net) exactly
when the sparse network is stable at its rewind point (two copies trained from m * W_k with different data
orders end within a 2% error barrier of each other). On the preset, whose dense net is unstable at init and
stable by k = K, this runs IMP with `--rewind init`, `--rewind iter:K` and `--rewind lr`, each level beside its
reinit control, and measures the instability of each ticket at its own rewind point (k = 0 for init, K for
iter:K; LR rewinding restarts from trained weights, so it has no W_k and no such instability). It prints, per
rewind and level: density, ticket and reinit test accuracy (mean +- sd over seeds), the ticket's barrier, and
whether the ticket is matching (within --match points of the dense net) and stable (barrier <= 2%).

Everything goes through engine.analysis.story (what the app's Stability tab and notebook 09 use); runs and
analyses are stored under --runs-dir and reused, so a rerun only prints the table.

    python bench/science_stability_story.py                         # 3 seeds, 8 levels of 20%: hours on 2 CPU cores
    python bench/science_stability_story.py --levels 2 --prune-fraction 0.6 --seeds 0   # what fits in an hour
    python bench/science_stability_story.py --smoke                 # seconds: mechanics only
"""
from __future__ import annotations

import argparse
import statistics
import time

from engine.analysis import story
from science_stability import fmt  # mean +- sd over seeds, in points (bench/ is on the path when run as a script)

THRESHOLD = story.STABLE_THRESHOLD


def table(rows: list[dict], match: float) -> list[str]:
    dense = [r["test_accuracy"] for r in rows if r["variant"] == "dense" and r["rewind_kind"] == "init"]
    ref = statistics.mean(dense)
    out = [f"dense net: test accuracy {fmt(dense)}% over {len(dense)} seed(s); matching = within {match:g} points",
           f"{'rewind':<8} {'level':>5} {'density':>8} {'ticket %':>11} {'reinit %':>11} {'barrier %':>10} "
           f"{'matching':>9} {'stable':>7}"]
    tickets = [r for r in rows if r["variant"] == "ticket"]
    for rewind in dict.fromkeys(r["rewind"] for r in tickets):
        for level in sorted({r["level"] for r in tickets if r["rewind"] == rewind}):
            t = [r for r in tickets if r["rewind"] == rewind and r["level"] == level]
            c = [r for r in rows if r["variant"] == "reinit" and r["rewind"] == rewind and r["level"] == level]
            acc = statistics.mean(r["test_accuracy"] for r in t)
            barriers = [r["barrier"] for r in t if r["barrier"] is not None]
            stable = "-" if not barriers else ("yes" if statistics.median(barriers) <= THRESHOLD else "no")
            out.append(f"{rewind:<8} {level:>5} {statistics.mean(r['density'] for r in t):>8.3f} "
                       f"{fmt([r['test_accuracy'] for r in t]):>11} {fmt([r['test_accuracy'] for r in c]):>11} "
                       f"{fmt(barriers):>10} {'yes' if acc >= ref - match / 100 else 'no':>9} {stable:>7}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="stability-story")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--levels", type=int, default=8, help="IMP levels (8 of 20%%: 83%% sparsity)")
    ap.add_argument("--prune-fraction", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--ticket-levels", help="levels whose ticket instability is measured (default: all)")
    ap.add_argument("--points", type=int, default=11, help="interpolation points")
    ap.add_argument("--match", type=float, default=100 * story.MATCH_MARGIN,
                    help="matching: within this many points of the dense net (default: the Stability tab's)")
    ap.add_argument("--runs-dir", default="bench-runs/stability-story")
    ap.add_argument("--smoke", action="store_true", help="lenet300, 1 epoch, 2 levels: mechanics only")
    args = ap.parse_args()
    overrides = {"prune.levels": args.levels, "prune.prune_fraction": args.prune_fraction,
                 "prune.controls": ("reinit",), "device": "cpu"}
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.smoke:
        overrides.update({"model.model": "lenet300", "train.epochs": 1, "train.batch_size": 128, "prune.levels": 2,
                          "prune.rewind": "iter:1"})
        seeds = seeds[:1]
    levels = None if args.ticket_levels is None else [int(v) for v in args.ticket_levels.split(",")]
    t0 = time.perf_counter()
    rows = []
    for seed in seeds:  # seed by seed, so an interrupted bench still has whole seeds to print
        ids = story.run_story(args.runs_dir, args.preset, (seed,), ticket_levels=levels, points=args.points,
                              **overrides)
        rows += story.story_rows(args.runs_dir, ids)
        records = story.dense_instability(args.runs_dir, ids)
        for r in records:
            print(f"seed {seed}: dense barrier " + ", ".join(f"k={k}: {100 * b:.2f}%" for k, b in
                                                             zip(r["rewind_points"], r["barriers"])), flush=True)
        print(f"  [{time.perf_counter() - t0:.0f} s] seed {seed} done", flush=True)
    print(f"\n{args.preset} with {overrides}, seeds {seeds}")
    print("\n".join(table(rows, args.match)))


if __name__ == "__main__":
    main()
