"""Structured tickets on lenet300 / digits: what each pattern costs in accuracy and buys in CPU time.
(a science check, not a test)

At matched densities of the hidden layers (N:M fixes its own: 2:4 = 50%, 1:4 = 25%, 1:8 = 12.5%), one-shot
magnitude tickets (trained dense net pruned once, rewound to theta_0, retrained; the output layer at the
IMP-equivalent density, the same for every pattern) in four patterns:
  unstructured  single weights;
  channel       whole neurons, ranked by the l1 norm of their rows;
  nm            N:M along the input dimension;
  refill        the unstructured mask coarsened to dense neurons (IMP-Refill: nnz / fan-in neurons).
Prints test accuracy (mean +- std over seeds) beside the CPU latency of seed 0's ticket in the kernel that
its pattern can use (CSR for unstructured, the physically smaller net for channel and refill, 2:4 for 2:4 and
CSR for other N:M, which no kernel takes), against the dense net in the same process (engine.probe; 2:4
kernels need CUDA: "unavailable" here). A channel ticket's FLOPs fall faster than its density: removing a
neuron also removes the next layer's weights that read it.

    python bench/science_structured.py                  # seeds 0,1,2, 10 epochs (~2 minutes on 2 cores)
    python bench/science_structured.py --seeds 0 --epochs 3

Runs are stored under --runs-dir and reused, so rerunning only re-measures and prints.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import engine
from engine import probe

DENSITIES = {0.5: "2:4", 0.25: "1:4", 0.125: "1:8"}
PATTERNS = {  # name -> (config changes given the density and its N:M, the kernel its latency is read from)
    "unstructured": (lambda d, nm: {"prune.density": d}, lambda nm: "csr"),
    "channel": (lambda d, nm: {"prune.density": d, "prune.pattern": "channel"}, lambda nm: "channel"),
    "nm": (lambda d, nm: {"prune.pattern": "nm", "prune.nm": nm}, lambda nm: "2:4" if nm == "2:4" else "csr"),
    "refill": (lambda d, nm: {"prune.density": d, "prune.refill": "refill"}, lambda nm: "channel"),
}
BATCHES = (1, 256)


def run(pattern: str, density: float, seed: int, epochs: int, runs_dir: str) -> dict:
    changes, _ = PATTERNS[pattern]
    cfg = engine.RunConfig().replace(**{"prune.method": "oneshot", "prune.controls": (), "train.epochs": epochs,
                                        "seed": seed, "device": "cpu", **changes(density, DENSITIES[density])})
    return engine.run(cfg, runs_dir=runs_dir)


def latency(summary: dict, runs_dir: str, min_time: float) -> tuple[dict, str]:
    """{(pattern, batch): row} of every probe row of this ticket, and the device."""
    result = probe.probe_run(runs_dir, summary["run_id"], batches=BATCHES, min_run_time=min_time)
    return {(r["pattern"], r["batch"]): r for r in result["rows"]}, result["device"]


def cell(row) -> str:
    if not row["available"]:
        return "unavailable"
    return f"{row['median_ms']:.4f} ({row['speedup']:.2f}x)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma separated")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per latency row")
    ap.add_argument("--runs-dir", default="/tmp/lte-science-structured")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a tiny MLP, and a shared machine: one core measures steadily
    seeds = [int(s) for s in args.seeds.split(",")]

    t0 = time.perf_counter()
    results = {}
    for density in DENSITIES:
        for pattern in PATTERNS:
            results[pattern, density] = [run(pattern, density, seed, args.epochs, args.runs_dir) for seed in seeds]
            print(f"  trained {pattern} at {density:.1%}: {len(seeds)} seed(s)", flush=True)
    dense_acc = [s["dense"]["test_accuracy"] for s in results["unstructured", 0.5]]

    print(f"\nlenet300 on digits, one-shot tickets, {args.epochs} epochs, test accuracy mean +- std over seeds "
          f"{args.seeds}; latency of seed {seeds[0]}'s ticket, ms (speedup vs dense)")
    print(f"dense: {100 * statistics.mean(dense_acc):.2f} +- {100 * _sd(dense_acc):.2f}")
    head = "".join(f"{f'batch {b}':>22}" for b in BATCHES)
    print(f"{'density':>8} {'pattern':<13} {'test acc %':>14} {'kernel':>8} {'params':>8} {'theory':>7}{head}")
    measured = {}
    for (pattern, density), summaries in results.items():
        acc = [s["levels"][0]["test_accuracy"] for s in summaries]
        kernel = PATTERNS[pattern][1](DENSITIES[density])
        rows, device = measured[pattern, density] = latency(summaries[0], args.runs_dir, args.min_time)
        first = rows[kernel, BATCHES[0]]
        theory = "-" if first["theoretical_speedup"] is None else f"{first['theoretical_speedup']:.2f}x"
        print(f"{summaries[0]['levels'][0]['density']:>8.1%} {pattern:<13} "
              f"{100 * statistics.mean(acc):>7.2f} +-{100 * _sd(acc):>5.2f} {kernel:>8} "
              f"{first['params'] or '-':>8} {theory:>7}" + "".join(f"{cell(rows[kernel, b]):>22}" for b in BATCHES))
    rows, device = measured["nm", 0.5]
    print(f"dense net: {rows['dense', BATCHES[0]]['params']} params, " +
          ", ".join(f"batch {b} {rows['dense', b]['median_ms']:.4f} ms" for b in BATCHES) + " (beside the 2:4 ticket)")
    print(f"device: {device}; 2:4: {rows['2:4', BATCHES[0]]['reason'] or 'available'}")
    print(f"total {time.perf_counter() - t0:.0f}s")


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
