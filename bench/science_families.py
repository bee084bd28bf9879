"""Ticket families on digits: do the published findings show up? (a science check, not a test)

(a) layer collapse: magnitude-at-init vs SynFlow, global scope, at extreme densities: per-layer density
    and test accuracy (Tanaka et al. 2020: magnitude empties a layer, SynFlow never does);
(b) pruning at init vs its layerwise-shuffled mask (Frankle et al. 2021: shuffling barely hurts PaI
    tickets) next to IMP's ticket, whose shuffle does hurt;
(c) CTS vs IMP with late rewinding at >= 95% sparsity: test accuracy and search time (Arora & Teuscher:
    CTS matches or beats LTR at a fraction of the cost), on lenet300 and on conv2 (width 0.5);
(d) Edge-Popup accuracy vs width: a supermask over frozen signed-constant weights at density 0.5 vs the
    trained dense net of the same width (Ramanujan et al. 2020: the gap shrinks as width grows).

Every run goes through `engine.run` and is stored under --runs-dir, so a rerun only prints the tables.

    python bench/science_families.py              # 2 seeds, about 10 min on 2 shared CPU cores
    python bench/science_families.py --smoke      # one seed, 3 epochs: ~1 min
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

import engine

REWIND = "iter:52"  # 2 epochs of digits (26 steps per epoch): the late-rewinding point for IMP and CTS


def fmt(values, scale=100.0) -> str:
    values = [v * scale for v in values]
    sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.1f}{sd}"


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = engine.RunConfig(device="cpu").replace(**{"train.epochs": args.epochs})

    def run(self, seed: int, **changes) -> dict:
        return engine.run(self.base.replace(seed=seed, **changes), runs_dir=self.args.runs_dir)

    def seeds(self):
        return range(self.args.seeds)


def layer_collapse(b: Bench) -> None:
    print("\n(a) layer collapse, global scope: test accuracy % and each layer's density")
    for density in (0.01, 0.002):
        for method in ("magnitude", "synflow"):
            runs = [b.run(s, **{"prune.method": method, "prune.scope": "global", "prune.density": density,
                                "prune.controls": ()}) for s in b.seeds()]
            layers = runs[0]["levels"][0]["layers"]
            print(f"  density {density:<6} {method:<10} {fmt([r['levels'][0]['test_accuracy'] for r in runs]):>12}   "
                  + "  ".join(f"{n.split('.weight')[0]} {100 * d:.2f}%" for n, d in layers.items()))


def shuffle_check(b: Bench) -> None:
    print("\n(b) sanity: ticket vs its layerwise-shuffled mask (same per-layer counts, same start), test accuracy %")
    for method, extra in (("snip", {}), ("synflow", {}), ("imp", {"prune.levels": 13})):
        for density in ((0.2, 0.05) if method != "imp" else (None,)):
            changes = {"prune.method": method, "prune.controls": ("shuffle",), **extra}
            if density is not None:
                changes["prune.density"] = density
            runs = [b.run(s, **changes) for s in b.seeds()]
            last = [r["levels"][-1] for r in runs]
            shuffled = [r["controls"]["shuffle"][-1]["test_accuracy"] for r in runs]
            delta = [s - t["test_accuracy"] for s, t in zip(shuffled, last)]
            print(f"  {method:<8} density {last[0]['density']:.4f}: ticket {fmt([t['test_accuracy'] for t in last])}, "
                  f"shuffled {fmt(shuffled)}, delta {fmt(delta)} points")


def cts_vs_imp(b: Bench) -> None:
    print(f"\n(c) CTS vs IMP with late rewinding ({REWIND}), global scope: test accuracy % and search seconds")
    from engine.compare import search_cost
    for model in ("lenet300", "conv2"):
        extra = {"model.model": model} | ({"model.width": 0.5} if model == "conv2" else {})
        imp = [b.run(s, **extra, **{"prune.method": "imp", "prune.scope": "global", "prune.rewind": REWIND,
                                    "prune.levels": b.args.imp_levels, "prune.controls": ()}) for s in b.seeds()]
        for level in (b.args.imp_levels - 4, b.args.imp_levels):
            rows = [r["levels"][level - 1] for r in imp]
            density = rows[0]["density"]
            cost = [search_cost(r, row, b.args.runs_dir)[1] for r, row in zip(imp, rows)]
            cts = [b.run(s, **extra, **{"prune.method": "cts", "prune.scope": "global", "prune.rewind": REWIND,
                                        "prune.density": round(density, 6), "prune.controls": ()}) for s in b.seeds()]
            cts_cost = [search_cost(r, r["levels"][0], b.args.runs_dir)[1] for r in cts]
            print(f"  {model:<8} density {density:.4f}: IMP {fmt([r['test_accuracy'] for r in rows])} "
                  f"(search {statistics.fmean(cost):.1f} s)   CTS {fmt([r['levels'][0]['test_accuracy'] for r in cts])} "
                  f"(search {statistics.fmean(cts_cost):.1f} s)")


def edgepopup_width(b: Bench) -> None:
    print("\n(d) Edge-Popup (density 0.5, signed-constant weights) vs the trained dense net, by width; test accuracy %")
    for width in b.args.widths:
        runs = [b.run(s, **{"prune.method": "edgepopup", "prune.density": 0.5, "model.width": width,
                            "model.init": "signed_constant"}) for s in b.seeds()]
        ticket = [r["levels"][0]["test_accuracy"] for r in runs]
        dense = [r["dense"]["test_accuracy"] for r in runs]
        gap = [d - t for d, t in zip(dense, ticket)]
        print(f"  width {width:<5} hidden {round(300 * width)}-{round(100 * width)}: supermask {fmt(ticket)}, "
              f"dense {fmt(dense)}, gap {fmt(gap)} points")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imp-levels", type=int, default=17, help="IMP levels for (c): 17 global levels ~ 2.3%% density")
    ap.add_argument("--widths", type=lambda t: [float(w) for w in t.split(",")], default=[0.125, 0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--runs-dir", default=tempfile.gettempdir() + "/lottery-science-families")
    ap.add_argument("--smoke", action="store_true", help="1 seed, 3 epochs, fewer levels and widths")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.imp_levels, args.widths = 1, 3, 14, [0.25, 1.0]
    torch.set_num_threads(1)
    b = Bench(args)
    print(f"lenet300/digits unless noted, {args.epochs} epochs, seeds 0..{args.seeds - 1}")
    layer_collapse(b)
    shuffle_check(b)
    cts_vs_imp(b)
    edgepopup_width(b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
