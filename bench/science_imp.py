"""Do winning tickets show up for lenet300 on digits? (a science check, not a test)

Runs IMP through the public API, `engine.run`, for several seeds and settings, then prints mean +- std
over seeds of test accuracy (final and at the early-stopping iteration) and of the early-stopping
iteration itself, for the dense net, the IMP tickets and their controls, at the levels nearest
50%, 20%, 10% and 5% density. A winning ticket should beat its `reinit` control: learn faster (earlier
early stop) and/or reach higher accuracy at the same density.

    python bench/science_imp.py                     # all settings, seeds 0,1,2, 14 levels (~15-20 min)
    python bench/science_imp.py --settings init     # just the Frankle & Carbin setting
    python bench/science_imp.py --smoke             # <1 minute: 1 seed, 10 epochs, init only

Runs are stored under --runs-dir and resumed, so rerunning only prints the tables.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import engine

# name -> (config changes, controls). The first is Frankle & Carbin's: layerwise 20% (output 10%)
# per level, rewind to init. The others are the usual suspects for making tickets easier to find.
SETTINGS = {
    "init": ({}, ("reinit", "random")),
    "late-rewind": ({"prune.rewind": "iter:50"}, ("reinit", "random")),  # ~3% of training, ~2.4 epochs
    "global": ({"prune.scope": "global"}, ("reinit",)),
    "30-epochs": ({"train.epochs": 30}, ("reinit",)),
    "10-epochs": ({"train.epochs": 10}, ("reinit", "random")),  # a short budget rewards fast learners
}
TARGETS = (0.5, 0.2, 0.1, 0.05)
METRICS = (("test_accuracy", "final acc %", 100), ("early_stop_test_accuracy", "acc@ES %", 100),
           ("early_stop_iteration", "ES iter", 1), ("iter_to_95", "it->95%val", 1))
SPEED_BAR = 0.95  # validation accuracy that defines "has learned" for it->95%val


def add_learning_speed(summary, runs_dir):
    """Add `iter_to_95` to every row: the first evaluated iteration with val accuracy >= SPEED_BAR
    (the last iteration if never). The early-stopping iteration (minimum val loss) saturates near the
    end of training on digits, because val loss keeps creeping down long after accuracy has settled."""
    first = {}
    for p in engine.RunStore(runs_dir, summary["run_id"]).metrics():
        if p.get("type") == "eval":
            key = (p["variant"], p["level"])
            if key not in first or first[key][0] is None:
                first[key] = (p["iteration"] if p["val_accuracy"] >= SPEED_BAR else None, p["iteration"])
    rows = [("ticket", r) for r in [summary["dense"], *summary["levels"]]]
    rows += [(v, r) for v, rs in summary["controls"].items() for r in rs]
    for variant, r in rows:
        reached, last = first[(variant, r["level"])]
        r["iter_to_95"] = last if reached is None else reached


def ms(values, scale) -> str:
    values = [v * scale for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.1f} +-{sd:5.1f}"


def run_setting(name, changes, controls, seeds, levels, runs_dir, extra):
    summaries = []
    for seed in seeds:
        cfg = engine.RunConfig().replace(**{"data.dataset": "digits", "model.model": "lenet300",
                                            "prune.method": "imp", "prune.levels": levels,
                                            "prune.controls": controls, "seed": seed, "device": "cpu",
                                            **changes, **extra})
        t0 = time.perf_counter()
        summaries.append(engine.run(cfg, runs_dir=runs_dir))
        add_learning_speed(summaries[-1], runs_dir)
        print(f"  [{name}] seed {seed}: {summaries[-1]['run_id']} {summaries[-1]['status']} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return summaries


def table(name, summaries, controls):
    levels = summaries[0]["levels"]
    # Densities are the same for every seed (the masks' counts are deterministic); pick the nearest level.
    picks = []
    for target in TARGETS:
        lvl = min(levels, key=lambda r: abs(r["density"] - target))
        if lvl["level"] not in [p[1] for p in picks]:
            picks.append((target, lvl["level"], lvl["density"]))

    def rows(variant, level):
        if variant == "dense":
            return [s["dense"] for s in summaries]
        src = (lambda s: s["levels"]) if variant == "ticket" else (lambda s: s["controls"][variant])
        return [next(r for r in src(s) if r["level"] == level) for s in summaries]

    print(f"\n== {name}: mean +- std over {len(summaries)} seed(s); ES = early stop (min val loss)")
    head = "".join(f"{label:>16}" for _, label, _ in METRICS)
    print(f"{'target':>7} {'level':>5} {'density':>8}  {'variant':<8}{head}")
    variants = [("dense", 0, 1.0, None)] + [(v, lvl, d, t) for t, lvl, d in picks for v in ("ticket", *controls)]
    last = None
    for variant, level, density, target in variants:
        rs = rows(variant, level)
        cells = "".join(f"{ms([r[k] for r in rs], scale):>16}" for k, _, scale in METRICS)
        lead = f"{'':>7} {'':>5} {'':>8}" if level == last else \
            f"{'-' if target is None else f'{target:.0%}':>7} {level:>5} {density:>8.3f}"
        print(f"{lead}  {variant:<8}{cells}")
        last = level


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma separated")
    ap.add_argument("--levels", type=int, default=14, help="IMP levels (14: ~5%% density)")
    ap.add_argument("--runs-dir", default="/tmp/lte-science-runs")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--smoke", action="store_true", help="1 seed, 10 epochs, init setting only")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a tiny MLP: one core is as fast, and leaves the other to another process

    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.settings.split(",")
    levels, extra = args.levels, {}
    if args.smoke:
        seeds, names, extra = seeds[:1], ["init"], {"train.epochs": 10}
    t0 = time.perf_counter()
    results = {}
    for name in names:
        changes, controls = SETTINGS[name]
        results[name] = (run_setting(name, changes, controls, seeds, levels, args.runs_dir, extra), controls)
    for name, (summaries, controls) in results.items():
        table(name, summaries, controls)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
