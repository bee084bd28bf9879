"""Science check (issue 15, item 7): Bayesian IMP criteria compared on accuracy, NLL and calibration.

    python bench/science_bayes.py [--seeds 3] [--datasets digits,patches] [--epochs 10] [--out FILE] [--quick]

Per data set and seed: a mean-field Gaussian LeNet-300-100 (`--bayesian`, the run defaults: prior N(0, 1),
sigma_0 = 1e-3, rho lr 1e-2, Adam 1.2e-3 for the means, batch 60, 10 epochs, 16 MC samples) is trained dense,
then pruned by each criterion (|mu|, sigma, SNR, mu-then-sigma, random: engine.methods.bayes_imp.prune_step,
the method's own code) level by level to hidden-layer densities 0.5 / 0.2 / 0.1 / 0.05 (layerwise; the output
layer loses 10% per level, as IMP's default), rewinding mu and rho of the survivors to theta_0 and retraining
each level. Beside them: the deterministic LeNet of the same seed pruned by |w| on the same schedule (IMP),
and `transplant` (the Bayesian net trained under the deterministic ticket's masks). Reported per density: test
accuracy, NLL and ECE (15 bins) of the MC predictive, mean +- std over seeds.

Data sets: `digits` (scikit-learn's 8x8 digits) and `patches` (12x12 grey patches of scikit-learn's two
bundled photographs, 8 classes, bench/science_generative.py's `patches_npz`, built offline once).
Timings depend on the machine's load; the figures do not (CPU runs repeat exactly).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import bayes, models, trainer  # noqa: E402
from engine import masks as M  # noqa: E402
from engine.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from engine.data import load  # noqa: E402
from engine.methods.bayes_imp import CRITERIA, prune_step  # noqa: E402
from engine.seeding import derive_seed, generator  # noqa: E402
from science_generative import patches_npz  # noqa: E402

DENSITIES = (0.5, 0.2, 0.1, 0.05)
OUTPUT_FRACTION = 0.1


def train_level(model_cfg, data, train_cfg, init, mask, seed, level):
    model = models.build(model_cfg, data.input_shape, data.num_classes, seed)
    model.load_state_dict(init)
    if mask is not None:
        M.apply(model, mask)
    trainer.train(model, data, train_cfg, mask, seed=derive_seed(seed, "train", level))
    m = bayes.evaluate(model, data.test)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return weights, {k: m[k] for k in ("accuracy", "nll", "ece")}


IMP_LEVELS = {3: 0.5, 7: 0.2, 10: 0.1, 13: 0.05}  # --schedule imp: 20% per level, 0.8^L nearest the targets


def chain(model_cfg, data, train_cfg, init, dense_weights, seed, criterion=None, masks=None, schedule="direct"):
    """IMP down DENSITIES by `criterion` (or along the given `masks`); {density: metrics}, and the masks.

    schedule "direct": one level per target density (pruning 50/60/50/50% of the survivors); "imp": 20% per
    level for 13 levels, reporting levels 3/7/10/13 (densities 0.51/0.21/0.107/0.055) under the targets."""
    probe = models.build(model_cfg, data.input_shape, data.num_classes, seed)
    out_name = M.output_layer(probe)
    mask, weights, current = M.ones(probe), dense_weights, 1.0
    results, used = {}, []
    steps = [(lv, 0.8 ** lv) for lv in range(1, 14)] if schedule == "imp" else list(enumerate(DENSITIES, start=1))
    for level, target in steps:
        if masks is not None:
            mask = masks[level - 1]
        else:
            cfg = SimpleNamespace(prune_fraction=1 - target / current, output_fraction=OUTPUT_FRACTION,
                                  scope="layerwise")
            mask = prune_step(criterion, weights, mask, cfg, out_name, generator(seed, "bayes-random", level))
        used.append(mask)
        current = target
        weights, metrics = train_level(model_cfg, data, train_cfg, init, mask, seed, level)
        if schedule == "direct":
            results[target] = metrics
        elif level in IMP_LEVELS:
            results[IMP_LEVELS[level]] = {**metrics, "density": 0.8 ** level}
    return results, used


def one_seed(dataset: str, seed: int, train_cfg: TrainConfig, criteria=CRITERIA, schedule="direct") -> dict:
    """Every criterion's chain for one seed; with the direct schedule also deterministic IMP and transplant."""
    data = load(DataConfig(dataset))
    det_cfg, bay_cfg = ModelConfig(), ModelConfig(bayesian=True)
    out = {}
    if schedule == "direct":
        det_init = models.build(det_cfg, data.input_shape, data.num_classes, seed).state_dict()
        det_dense, out["dense deterministic"] = train_level(det_cfg, data, train_cfg, det_init, None, seed, 0)
        out["deterministic IMP"], det_masks = chain(det_cfg, data, train_cfg, det_init, det_dense, seed, "mu")
    init = models.build(bay_cfg, data.input_shape, data.num_classes, seed).state_dict()
    dense, out["dense bayesian"] = train_level(bay_cfg, data, train_cfg, init, None, seed, 0)
    for criterion in criteria:
        out[criterion], _ = chain(bay_cfg, data, train_cfg, init, dense, seed, criterion, schedule=schedule)
    if schedule == "direct":
        out["transplant"], _ = chain(bay_cfg, data, train_cfg, init, dense, seed, masks=det_masks)
    return out


def table(results: list[dict]) -> str:
    def cell(values):
        return f"{statistics.mean(values):.3f}+-{statistics.pstdev(values):.3f}" if values else "-"

    lines = []
    rows = [k for k in ("deterministic IMP", *CRITERIA, "transplant") if k in results[0]]
    for dense in [k for k in ("dense deterministic", "dense bayesian") if k in results[0]]:
        lines.append(f"  {dense:<20} " + "  ".join(f"{k} {cell([r[dense][k] for r in results])}"
                                                   for k in ("accuracy", "nll", "ece")))
    lines.append(f"  {'density':<20} " + "".join(f"{d:>36}" for d in DENSITIES))
    for row in rows:
        for k in ("accuracy", "nll", "ece"):
            lines.append(f"  {row + ' ' + k:<20} " + "".join(
                f"{cell([r[row][d][k] for r in results]):>36}" for d in DENSITIES))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", default="digits,patches")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default="bench-runs/science_bayes.json")
    ap.add_argument("--criteria", default=",".join(CRITERIA))
    ap.add_argument("--schedule", choices=["direct", "imp"], default="direct",
                    help="direct: one level per target density; imp: 20%% per level (13 levels), where "
                         "mu-then-sigma's 2k candidates are a real subset (at 50%% per level they are every weight)")
    ap.add_argument("--seed-list", default=None, help="seeds to run, comma separated (default: 0..seeds-1)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, digits: a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.datasets, args.epochs = 1, "digits", 2
    sources = {"digits": "digits", "patches": "npz:" + str(patches_npz(Path("bench-runs") / "data" / "patches.npz"))}
    report = {}
    for name in args.datasets.split(","):
        # evaluate once, at the end: the figures are the final weights' (MC evaluation costs S forward passes)
        steps = trainer.total_steps(len(load(DataConfig(sources[name])).train), TrainConfig(epochs=args.epochs))
        train_cfg = TrainConfig(epochs=args.epochs, eval_every=steps)
        t = time.perf_counter()
        results = []
        seeds = [int(x) for x in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
        for seed in seeds:
            results.append(one_seed(sources[name], seed, train_cfg, args.criteria.split(","), args.schedule))
            print(f"{name} seed {seed} done ({time.perf_counter() - t:.0f} s)", flush=True)
        report[name] = results
        print(f"\n{name}: test accuracy / NLL / ECE (15 bins) of the MC predictive (16 samples), mean+-std over "
              f"{len(results)} seed(s); density = hidden layers' ({args.schedule} schedule)\n" + table(results), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"densities": DENSITIES, "schedule": args.schedule, "results": report},
                                         indent=1))
    print(f"\nstored in {args.out}")


if __name__ == "__main__":
    main()
