"""Science check for foundation-model tickets on MiniLM: the BERT-ticket transfer matrix and LoTA's forgetting
and merging, over >= 3 seeds, with the seed papers' claims stated and checked.

    python bench/science_foundation.py [--seeds 3] [--runs-dir bench-runs] [--quick]

Claims checked (Chen et al. 2020; Panda et al. 2024):
 1. IMP tickets of the pre-trained weights (rewinding to them) match the dense fine-tune at moderate sparsity,
    and beat a random mask with the same per-layer densities and one-shot magnitude pruning of the
    pre-trained weights (on the MLM task and on task A).
 2. Transfer: the MLM ticket transfers to the downstream tasks (matches dense on each); a task's ticket
    transfers worse to the other task. "Matching" = mean test accuracy within one std (over seeds) of dense.
 3. LoTA: training task B on the complement of task A's sparse mask forgets less of task A than dense
    sequential fine-tuning; sparse task vectors merge with less interference than dense task arithmetic
    (same scaling search on validation).
Tasks: A = pydoc-topics (12-way), B = pydoc-modules (24-way); MLM = pydoc-mlm. Every ticket is a stored run
(`engine.run`: rerunning resumes), so the transfer cells are ordinary `transfer` runs and the explorer's
"Foundation models" tab draws the same matrix. Budget (the defaults): IMP 2 levels of 25% of the original
weights (density 75%, 50%) instead of the paper's 10% steps; the MLM ticket from seed 0 only, one epoch of
pydoc-mlm per level. `--quick` shrinks everything to a smoke run (bert-tiny, which is NOT pre-trained: its
numbers test the pipeline, not the claims).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import engine
from engine.config import DataConfig
from engine.methods import lota
from engine.methods.bert import transfer_matrix
from engine import transformer

A, B, MLM = "pydoc-topics", "pydoc-modules", "pydoc-mlm"


def config(dataset: str, seed: int, args, **changes) -> engine.RunConfig:
    epochs = {A: args.epochs_a, B: args.epochs_b, MLM: 1}[dataset]
    base = {"data.dataset": dataset, "model.model": args.model, "train.batch_size": 32 if dataset == MLM else 16,
            "train.lr": 1e-4 if dataset == MLM else 5e-5, "train.epochs": epochs, "prune.method": "bert-imp",
            "prune.scope": "global", "prune.levels": args.levels, "prune.prune_fraction": args.fraction,
            "prune.controls": (), "seed": seed, "device": "cpu"}
    return engine.RunConfig().replace(**{**base, **changes})


def run(cfg, args) -> dict:
    t = time.perf_counter()
    s = engine.run(cfg, runs_dir=args.runs_dir)
    print(f"  {s['run_id']}: {time.perf_counter() - t:.0f} s", flush=True)
    return s


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def transfer_part(args) -> dict:
    controls = ("random", "start-magnitude")
    mlm = run(config(MLM, 0, args, **{"prune.controls": () if args.quick else controls}), args)
    print(f"MLM (seed 0): dense {mlm['dense']['test_accuracy']:.3f}; "
          + "; ".join(f"IMP {lv['density']:.0%} {lv['test_accuracy']:.3f}"
                      + "".join(f", {c} {mlm['controls'][c][i]['test_accuracy']:.3f}" for c in mlm["controls"])
                      for i, lv in enumerate(mlm["levels"])), flush=True)
    mlm_dir = str(Path(args.runs_dir) / mlm["run_id"])
    summaries = [mlm]
    for seed in range(args.seeds):
        tickets = {task: run(config(task, seed, args, **({"prune.controls": controls} if task == A else {})), args)
                   for task in (A, B)}
        summaries += tickets.values()
        for source, target in ((MLM, A), (MLM, B), (A, B), (B, A)):
            src = mlm_dir if source == MLM else str(Path(args.runs_dir) / tickets[source]["run_id"])
            summaries.append(run(config(target, seed, args, **{"prune.method": "transfer", "prune.mask_from": src,
                                                             "prune.levels": 14, "prune.prune_fraction": 0.2}),
                                 args))
    matrix = transfer_matrix(summaries, args.runs_dir)
    print("\nTransfer matrix (test accuracy at the last level's density; mean +- std over seeds; dense beside):")
    for cell in matrix["cells"]:
        print(f"  {cell['source']:>14s} ticket -> {cell['target']:<14s} {cell['ticket_mean']:.3f} +- "
              f"{cell['ticket_std']:.3f}   dense {cell['dense_mean']:.3f} +- {cell['dense_std']:.3f}   "
              f"{'matching' if cell['matching'] else 'not matching'} (n={cell['n']})")
    a_runs = [s for s in summaries if s["dataset"] == A and s["method"] == "bert-imp"]
    controls_a = {c: mean_std([s["controls"][c][-1]["test_accuracy"] for s in a_runs]) for c in controls}
    imp_a = mean_std([s["levels"][-1]["test_accuracy"] for s in a_runs])
    print(f"Task A controls at the last level: IMP {imp_a[0]:.3f} +- {imp_a[1]:.3f}; "
          + "; ".join(f"{c} {m:.3f} +- {sd:.3f}" for c, (m, sd) in controls_a.items()))
    return {"matrix": matrix, "mlm": mlm, "controls_a": controls_a, "imp_a": imp_a}


def lota_part(args) -> dict:
    data = {t: engine.data.load(DataConfig(dataset=t, tokenizer="minilm", max_length=32)) for t in (A, B)}
    cfg = {t: config(t, 0, args).train for t in (A, B)}
    rows = []
    for seed in range(args.seeds):
        models = {}
        for t, d in data.items():
            m = transformer.build_text_model(args.model, d.input_shape, d.num_classes)
            m.init_from_seed(torch.Generator().manual_seed(seed))
            models[t] = m
        t0 = time.perf_counter()
        seq = lota.sequential(models[A], data[A], models[B], data[B], cfg[A], args.density, seed=seed,
                              cfg_b=cfg[B])
        merged = {}
        for kind, density in (("dense", None), ("lota", args.density)):
            ta = lota.fine_tune(models[A], data[A], cfg[A], density, seed=seed)
            tb = lota.fine_tune(models[B], data[B], cfg[B], density, seed=seed)
            merged[kind] = lota.merge(models[A], ta.model, data[A], tb.model, data[B])
        rows.append({"seed": seed, "sequential": seq, "merge": merged})
        print(f"  LoTA seed {seed}: {time.perf_counter() - t0:.0f} s  sequential {json.dumps(seq)}  merge "
              f"{json.dumps(merged)}", flush=True)
    out = {}
    for kind in ("dense", "lota"):
        out[kind] = {"forgetting": mean_std([r["sequential"][kind]["forgetting"] for r in rows]),
                     "b_after_a": mean_std([r["sequential"][kind]["b"] for r in rows]),
                     "merged_a": mean_std([r["merge"][kind]["a"] for r in rows]),
                     "merged_b": mean_std([r["merge"][kind]["b"] for r in rows]),
                     "alone_a": mean_std([r["merge"][kind]["a_alone"] for r in rows]),
                     "alone_b": mean_std([r["merge"][kind]["b_alone"] for r in rows])}
    print("\nLoTA (density %.0f%%) vs dense, mean +- std over %d seeds:" % (100 * args.density, args.seeds))
    for kind, r in out.items():
        print(f"  {kind:5s} forgetting of A {r['forgetting'][0]:+.3f} +- {r['forgetting'][1]:.3f}; B after A "
              f"{r['b_after_a'][0]:.3f}; merged A {r['merged_a'][0]:.3f} (alone {r['alone_a'][0]:.3f}), merged B "
              f"{r['merged_b'][0]:.3f} (alone {r['alone_b'][0]:.3f})")
    return {"rows": rows, "summary": out}


def verdicts(tr: dict, lo: dict) -> list[str]:
    cells = {(c["source"], c["target"]): c for c in tr["matrix"]["cells"]}
    out = []
    mlm = tr["mlm"]
    last = mlm["levels"][-1]
    if mlm["controls"]:
        beats = all(last["test_accuracy"] > mlm["controls"][c][-1]["test_accuracy"] for c in mlm["controls"])
        out.append(f"MLM IMP ticket at {last['density']:.0%} beats random and one-shot pre-trained magnitude: "
                   f"{'holds' if beats else 'does not hold'} (seed 0)")
    imp_a, ctrl = tr["imp_a"][0], tr["controls_a"]
    out.append(f"Task A IMP ticket beats its controls on average: "
               f"{'holds' if all(imp_a > m for m, _ in ctrl.values()) else 'does not hold'}")
    for target in (A, B):
        c = cells.get((MLM, target))
        if c:
            out.append(f"MLM ticket matches dense on {target}: {'holds' if c['matching'] else 'does not hold'}")
    for source, target in ((A, B), (B, A)):
        c, m = cells.get((source, target)), cells.get((MLM, target))
        if c and m:
            worse = c["ticket_mean"] < m["ticket_mean"]
            out.append(f"{source} ticket transfers to {target} worse than the MLM ticket: "
                       f"{'holds' if worse else 'does not hold'} ({c['ticket_mean']:.3f} vs {m['ticket_mean']:.3f})")
    s = lo["summary"]
    out.append(f"LoTA forgets less than dense sequential fine-tuning: "
               f"{'holds' if s['lota']['forgetting'][0] < s['dense']['forgetting'][0] else 'does not hold'} "
               f"({s['lota']['forgetting'][0]:+.3f} vs {s['dense']['forgetting'][0]:+.3f})")
    lm = (s["lota"]["merged_a"][0] + s["lota"]["merged_b"][0]) / 2
    dm = (s["dense"]["merged_a"][0] + s["dense"]["merged_b"][0]) / 2
    out.append(f"Sparse task vectors merge better than dense task arithmetic (mean of both tasks): "
               f"{'holds' if lm > dm else 'does not hold'} ({lm:.3f} vs {dm:.3f})")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs-dir", default="bench-runs")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--epochs-a", type=int, default=5)
    ap.add_argument("--epochs-b", type=int, default=2)
    ap.add_argument("--density", type=float, default=0.1, help="LoTA's density")
    ap.add_argument("--quick", action="store_true", help="bert-tiny, 1 epoch, 1 level, no MLM controls: a smoke run")
    ap.add_argument("--skip-transfer", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.model, args.levels, args.fraction, args.epochs_a, args.epochs_b = "bert-tiny", 1, 0.5, 1, 1
    t0 = time.perf_counter()
    print(f"science_foundation: {args.model}, {args.seeds} seeds, IMP {args.levels} x {args.fraction:.0%} of the "
          f"original, LoTA density {args.density}; torch threads {torch.get_num_threads()}", flush=True)
    tr = None if args.skip_transfer else transfer_part(args)
    lo = lota_part(args)
    if tr is not None:
        print("\nClaims at this scale:")
        for line in verdicts(tr, lo):
            print("  " + line)
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s (2-core CPU; shared machines are slower)")


if __name__ == "__main__":
    main()
