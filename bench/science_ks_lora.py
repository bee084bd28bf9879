"""Science check for issue 14: KS-Lottery on a task with a known answer and on a natural task, and
Partial-LoRA's masking rules at equal budgets.

    python bench/science_ks_lora.py                 # MiniLM (offline): NOT run to completion on 2 cores yet
    python bench/science_ks_lora.py --model bert-tiny --epochs 6   # ~2 min per KS task, ~2.5 min for LoRA

Measured so far (2 shared cores, under contention): a 25-step MiniLM fine-tune took ~500 s, so the MiniLM
default (10 epochs, 5 K values x 4 rankings, 2 tasks, 3 LoRA seeds) is far beyond the 15-minute demo budget
here: lower --epochs and --top-k, or run it on a bigger machine. One MiniLM KS run measured (seed 0, 2 epochs, K = 16,
pydoc-topics-expanded, 551 s): embedding fine-tune 0.469, head alone 0.281; KS top-16 0.406 (67% of the gain
recovered, precision 0.62 vs the known set), L2 change 0.385 (56%, 0.56), most frequent 0.302 (11%, 0.06),
random 0.250 (-17%, 0.00); KS recall of the known set 0.31 / 0.62 / 0.81 / 1.00 at K = 8 / 16 / 32 / 64; no
token significant after BH at 0.05. On bert-tiny (H = 32, random weights) KS fails: precision 0.06 vs L2 0.31. On bert-tiny (random weights) the
Partial-LoRA rules all stay at chance (1/12) at 6 epochs: no conclusion about ratios vs entries at that scale.

Questions (stated, then measured; the answer is whatever the numbers say at this scale):
1. Does the KS ranking find the known tokens (pydoc-topics-expanded's [unusedN] rows) better than the largest
   L2 change and random tokens? (precision/recall at each K)
2. How much of the full-embedding fine-tune's gain (over the head alone) do the top-K tokens recover, on the
   known-answer task and on pydoc-topics?
3. Partial-LoRA: at equal trainable budgets, does the per-layer ratio matter more than which entries are kept?
   (random at subspace ratios vs random at a uniform ratio vs magnitude at subspace ratios; dense ranks 4/8/16)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import engine  # noqa: E402
from engine import transformer  # noqa: E402
from engine.config import DataConfig, TrainConfig  # noqa: E402
from engine.methods import ks_lottery as ks  # noqa: E402
from engine.methods import partial_lora as pl  # noqa: E402


def ks_part(model: str, dataset: str, epochs: int, top_k: tuple, seed: int, runs: str) -> dict:
    cfg = engine.RunConfig().replace(**{"data.dataset": dataset, "model.model": model, "train.epochs": epochs,
                                        "train.batch_size": 32, "prune.method": "ks-lottery",
                                        "prune.scope": "global", "prune.ks_top_k": top_k, "seed": seed,
                                        "device": "cpu"})
    s = engine.run(cfg, runs_dir=runs)
    return json.loads(engine.store.RunStore(runs, s["run_id"]).analysis_path(ks.RECORD).read_text())


def print_ks(name: str, r: dict) -> None:
    print(f"\n== KS-Lottery on {name}: full-embedding fine-tune {r['embedding_test_accuracy']:.3f}, head alone "
          f"{r['head_only_test_accuracy']:.3f}, all weights {r['dense_test_accuracy']:.3f}; "
          f"{len(r['significant'])} tokens significant (BH, alpha {r['alpha']})")
    for row in r["levels"]:
        cells = []
        for v in ("ticket", *ks.BASELINES):
            c = row.get(v)
            if c is None:
                continue
            rec = "  n/a" if c.get("recovered") is None else f"{c['recovered']:5.0%}"
            pr = f" P {c['precision']:.2f} R {c['recall']:.2f}" if "precision" in c else ""
            cells.append(f"{'ks' if v == 'ticket' else v}: acc {c['test_accuracy']:.3f} rec {rec}{pr}")
        print(f"K={row['k']:4d} | " + " | ".join(cells))
    if r.get("known_recall"):
        curve = r["known_recall"]
        print("KS recall of the known set at K = 8/16/32/64:",
              " ".join(f"{curve[k - 1]['recall']:.2f}" for k in (8, 16, 32, 64) if k <= len(curve)))


def lora_part(model_name: str, epochs: int, seeds: int, rank: int) -> list[dict]:
    data = engine.data.load(DataConfig(dataset="pydoc-topics", tokenizer="minilm", max_length=32))
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=1e-3)
    rows = []
    for seed in range(seeds):
        model = transformer.build_text_model(model_name, data.input_shape, data.num_classes)
        model.init_from_seed(torch.Generator().manual_seed(seed))
        for row in pl.compare_rules(model, data, cfg, rank=rank, seed=seed):
            rows.append({**row, "seed": seed})
    print(f"\n== Partial-LoRA on pydoc-topics ({model_name}, {seeds} seeds, rank {rank} for the masked rules)")
    for rule in dict.fromkeys(r["rule"] for r in rows):
        sel = [r for r in rows if r["rule"] == rule]
        accs = [r["test_accuracy"] for r in sel]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{rule:20s} trainable {sel[0]['trainable']:8d}  test acc {statistics.mean(accs):.3f} +- {spread:.3f}")
    ratios = next(r["layers"] for r in rows if r["rule"] == "random-subspace")
    print("subspace ratios per layer:", " ".join(f"{v:.2f}" for v in ratios.values()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--top-k", default="4,8,16,32,64")
    args = ap.parse_args()
    top_k = tuple(int(k) for k in args.top_k.split(","))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        for dataset in ("pydoc-topics-expanded", "pydoc-topics"):
            print_ks(dataset, ks_part(args.model, dataset, args.epochs, top_k, 0, runs))
    lora_part(args.model, args.epochs, args.seeds, args.rank)
    print(f"\n({time.perf_counter() - t0:.0f} s on this machine; timings noisy when the CPU is shared)")


if __name__ == "__main__":
    main()
