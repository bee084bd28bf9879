"""Science check (issue 12, item 2): does Git Re-Basin's matched barrier shrink with width? (a script)

    python bench/science_rebasin.py [--widths 32,128,512] [--pairs 3] [--epochs 20] [--datasets digits,patches]
                                    [--model mlp|conv2|conv4|conv6] [--runs-dir bench-runs] [--quick]

Per data set and width w: a dense zoo (`lottery zoo`) of 2 x --pairs MLPs w-w (each its own init and data
order: independent seeds), SGD lr 0.05 (as bench/science_generative.py, whose zoos DeepWeightFlow learns
from), then `engine.zoo.zoo_barriers`: for the disjoint pairs (0, 1), (2, 3), ... the test-error and test-loss
barrier on the straight line between the two nets, naive and after weight matching (engine.rebasin),
11 points. Printed: mean [min, max] over the pairs, and whether the matched barrier falls as width grows.
With `--model conv2` (4, 6) the widths are --width multipliers of Conv-2/4/6 instead (e.g. 0.25,0.5,1).

Reference (Ainsworth et al. 2023; the issue's throwaway prototype on digits): width 32 .58 -> .03,
128 .11 -> .011, 512 .09 -> .002 (naive -> matched error barrier).

Data sets: `digits` and `patches` - real photographs at small size, 12x12 grey-scale patches cut from
scikit-learn's two bundled sample photographs, 8 classes (photograph x quadrant); the npz is built by
bench/science_generative.py's `patches_npz` (one real-image data set for items 2-4 of the issue).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import zoo as Z  # noqa: E402
from science_generative import patches_npz  # noqa: E402

TRAIN = {"train.optimizer": "sgd", "train.lr": 0.05, "device": "cpu"}


def spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,128,512")
    ap.add_argument("--pairs", type=int, default=3, help="independent pairs of nets per width (2x this many seeds)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--datasets", default="digits,patches")
    ap.add_argument("--model", default="mlp", choices=["mlp", "conv2", "conv4", "conv6"])
    ap.add_argument("--runs-dir", default="bench-runs")
    ap.add_argument("--quick", action="store_true", help="smoke setting: widths 16,64, 1 pair, 2 epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    widths = [16, 64] if args.quick else [float(w) for w in args.widths.split(",")]
    if args.model == "mlp":
        widths = [int(w) for w in widths]
    pairs, epochs = (1, 2) if args.quick else (args.pairs, args.epochs)
    runs_dir = Path(args.runs_dir)
    sources = {"digits": "digits", "patches": "npz:" + str(patches_npz(runs_dir / "data" / "patches.npz"))}
    print(f"{'MLP w-w' if args.model == 'mlp' else args.model + ' x width'}, SGD lr {TRAIN['train.lr']}, {epochs} epochs, {pairs} pairs (= {2 * pairs} seeds) per width; "
          "error/loss barriers on the test split, mean [min, max] over pairs")
    print(f"{'data':<8} {'width':>5}  {'zoo test acc':>12}  {'error barrier naive':>25}  {'matched':>25}  "
          f"{'loss barrier naive':>25}  {'matched':>25}  {'s':>5}")
    for name in args.datasets.split(","):
        matched_by_width = []
        for w in widths:
            t0 = time.perf_counter()
            options = Z.ZooOptions(members=2 * pairs)
            shape = {"model.hidden": (w, w)} if args.model == "mlp" else {"model.width": w}
            config = Z.zoo_config(options, {**TRAIN, "data.dataset": sources[name], "model.model": args.model,
                                            **shape, "train.epochs": epochs}, runs_dir=runs_dir)
            summary = Z.train_zoo(options, config, runs_dir=runs_dir)
            r = Z.zoo_barriers(runs_dir, summary["run_id"], pairs=pairs, points=11)
            rows = r["pairs"]
            matched_by_width.append(statistics.fmean(p["matched_error_barrier"] for p in rows))
            print(f"{name:<8} {w:>5g}  {summary['test_accuracy']['median']:>12.3f}  "
                  f"{spread([p['naive_error_barrier'] for p in rows]):>25}  "
                  f"{spread([p['matched_error_barrier'] for p in rows]):>25}  "
                  f"{spread([p['naive_loss_barrier'] for p in rows]):>25}  "
                  f"{spread([p['matched_loss_barrier'] for p in rows]):>25}  {time.perf_counter() - t0:>5.0f}")
        falls = all(b <= a for a, b in zip(matched_by_width, matched_by_width[1:]))
        print(f"{name}: matched error barrier by width {[round(b, 4) for b in matched_by_width]} -> "
              f"{'shrinks with width' if falls else 'does NOT shrink monotonically with width'}")


if __name__ == "__main__":
    main()
