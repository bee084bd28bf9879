"""Science check (issue 12, items 3-4): DeepWeightFlow on model zoos, generated tickets, prunability.

    python bench/science_generative.py [--seeds 3] [--members 64] [--hidden 32,32] [--steps 3000]
                                       [--datasets digits,patches] [--parts rebasin,none,ticket]
                                       [--runs-dir bench-runs] [--quick]

Per data set and seed: a dense zoo (`lottery zoo`: MLP `--hidden` (32-32), SGD lr 0.05, 20 epochs,
`--members` nets), then two generations (`lottery generate`, its defaults otherwise): with Git Re-Basin
canonicalisation (to member 0, then MergeMany rounds to the mean) and without, both in PCA coordinates
(members - 1 components, one global scale), 3000 flow steps, RK4 x 100. Printed per generation: the zoo's and the
generated nets' median test accuracy [5-95%], the Gaussian baseline in the same coordinates, the zoo's mean
as one net, diversity (mean pairwise prediction disagreement) and novelty (median nearest-zoo-member distance
next to the zoo's own, share of near copies), and the generated vs zoo nets magnitude-pruned to 20% density
with no retraining. Then generated tickets: an IMP run (rewind iter:50, 6 levels: 28.7% density on digits), a
ticket zoo of 32 retrainings of its last ticket, a flow on it (no canonicalisation: members share mask and start).

Figures: README, "Generated networks (DeepWeightFlow)".

Data sets: `digits` (scikit-learn's 8x8 digits) and `patches`, real photographs at small size: 12x12
grey-scale patches cut from scikit-learn's two bundled sample photographs (china.jpg, flower.jpg), labelled by
which photograph and which quadrant of it they come from (8 classes), written once to an npz (no download).

Why SGD: with Adam (the engine's default) the zoo's members end up far apart even after weight matching (a
16-member probe: matched zoo mean as one net .66-.74, Gaussian .20-.34), with SGD lr 0.05 close (.87 / .57),
as in the issue's prototype. Timings are wall-clock on this machine and noisy under load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import generate as G  # noqa: E402
from engine import zoo as Z  # noqa: E402
from engine.runner import run  # noqa: E402
from engine.settings import config_from_settings  # noqa: E402

ZOO = {"model.model": "mlp", "train.optimizer": "sgd", "train.lr": 0.05, "train.epochs": 20, "device": "cpu"}


def patches_npz(path: Path, size: int = 12, per_class: int = 500, seed: int = 0) -> Path:
    """8 classes of real-photo patches (photograph x quadrant), grey-scale, 80/20 train/test."""
    if path.exists():
        return path
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, img in enumerate(load_sample_images().images):
        grey = img.astype(np.float32).mean(2) / 255.0
        h, w = grey.shape
        for q in range(4):
            top, left = (q // 2) * (h // 2), (q % 2) * (w // 2)
            for _ in range(per_class):
                r = top + rng.integers(0, h // 2 - size)
                c = left + rng.integers(0, w // 2 - size)
                xs.append(grey[r:r + size, c:c + size])
                ys.append(4 * i + q)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])
    return path


def row(name: str, r: dict) -> str:
    a, n, d = r["accuracy"], r["novelty"], r["diversity"]
    pruned = r.get("pruned")
    return (f"{name:<22} zoo {a['zoo']['median']:.3f}  gen {a['generated']['median']:.3f} "
            f"[{a['generated']['p05']:.3f}, {a['generated']['p95']:.3f}]  gauss {a['gaussian']['median']:.3f}  "
            f"mean-net {a['zoo_mean']:.3f}  div zoo/gen {d['zoo']:.3f}/{d['generated']:.3f}  "
            f"NN gen/zoo {n['generated_nn_median']:.2f}/{n['zoo_nn_median']:.2f} copies {n['near_copy_share']:.2f}"
            + (f"  pruned@{pruned['density']:.2f} zoo {pruned['zoo']['median']:.3f} gen {pruned['generated']['median']:.3f}"
               if pruned else "")
            + f"  s train {r['seconds']['train']:.0f} gen {r['seconds']['generate']:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--members", type=int, default=64)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--hidden", default="32,32", help="the zoo's MLP widths (MergeMany pulls a wider zoo together "
                   "further: README)")
    p.add_argument("--datasets", default="digits,patches")
    p.add_argument("--parts", default="rebasin,none,ticket", help="which generations: dense zoo with Re-Basin, "
                   "without canonicalisation, a ticket zoo")
    p.add_argument("--runs-dir", default="bench-runs")
    p.add_argument("--quick", action="store_true", help="8 members, 200 steps, 1 seed: checks the script runs")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.members, args.steps = 1, 8, 200
    torch.set_num_threads(1)  # tiny models: threads only contend
    hidden = tuple(int(w) for w in args.hidden.split(","))
    parts = set(args.parts.split(","))
    runs_dir = Path(args.runs_dir)
    datasets = {"digits": "digits", "patches": "npz:" + str(patches_npz(runs_dir / "data" / "patches.npz"))}
    results: dict[str, list[dict]] = {}
    for name in args.datasets.split(","):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            options = Z.ZooOptions(members=args.members)
            config = config_from_settings({**ZOO, "model.hidden": hidden, "data.dataset": datasets[name], "seed": seed})
            zoo = Z.train_zoo(options, config, runs_dir=runs_dir)
            print(f"[{name} seed {seed}] zoo {zoo['run_id']}: {args.members} members in {time.perf_counter() - t0:.0f} s"
                  f" (stored: {zoo['train_seconds']:.0f} s of training)", flush=True)
            for canon in [c for c in ("rebasin", "none") if c in parts]:
                opts = G.GenerateOptions(canonicalise=canon, pca=args.members - 1, steps=args.steps, seed=seed,
                                         prune_density=0.2 if canon == "rebasin" else 0.0)
                r = G.generate(runs_dir, zoo["run_id"], opts)
                results.setdefault(f"{name} dense {canon}", []).append(r)
                print("  " + row(f"dense, {canon}", r), flush=True)
            if "ticket" not in parts:
                continue
            # generated tickets: a stable ticket (late rewinding), its retrainings as the zoo
            cfg = config_from_settings({**ZOO, "model.hidden": hidden, "data.dataset": datasets[name], "seed": seed,
                                        "prune.levels": 6, "prune.rewind": "iter:50", "prune.controls": ()})
            ticket_run = run(cfg, runs_dir=runs_dir)
            t_opts = Z.ZooOptions(members=max(4, args.members // 2), ticket=ticket_run["run_id"])
            tzoo = Z.train_zoo(t_opts, Z.zoo_config(t_opts, {"seed": seed}, runs_dir=runs_dir), runs_dir=runs_dir)
            r = G.generate(runs_dir, tzoo["run_id"], G.GenerateOptions(pca=t_opts.members - 1, steps=args.steps,
                                                                       seed=seed))
            results.setdefault(f"{name} ticket", []).append(r)
            print(f"  {row('ticket @%.3f' % r['density']['generated'], r)}  mask kept exactly: "
                  f"{r['density']['pruned_entries_zero']}", flush=True)

    print("\nmedian test accuracy over seeds (mean of per-seed medians; range)")
    for key, rs in results.items():
        def agg(f):
            v = [f(r) for r in rs]
            return f"{statistics.fmean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"
        line = (f"{key:<24} zoo {agg(lambda r: r['accuracy']['zoo']['median'])}  generated "
                f"{agg(lambda r: r['accuracy']['generated']['median'])}  gaussian "
                f"{agg(lambda r: r['accuracy']['gaussian']['median'])}  zoo-mean {agg(lambda r: r['accuracy']['zoo_mean'])}"
                f"  gap gen-zoo {agg(lambda r: r['accuracy']['generated']['median'] - r['accuracy']['zoo']['median'])}")
        if "pruned" in rs[0]:
            line += (f"  pruned@0.2 zoo {agg(lambda r: r['pruned']['zoo']['median'])} gen "
                     f"{agg(lambda r: r['pruned']['generated']['median'])}")
        print(line)


if __name__ == "__main__":
    main()
