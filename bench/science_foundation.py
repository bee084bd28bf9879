"""Science check for foundation-model tickets on MiniLM: task hardness (a linear probe), the BERT-ticket
transfer matrix and LoTA's forgetting and merging, over >= 3 seeds, with the seed papers' claims checked.

    python bench/science_foundation.py [--seeds 3] [--out bench-runs/science_foundation.json] [--probe-only]

Sized for ~15 min on 2 quiet cores (measured: 947 s on ONE thread of a quiet 2-core machine, plus the one-off
MLM head warm-up, 161 s), so it is SMALL (say so when quoting it): pre-trained MiniLM (6 layers, H = 384;
`--model bert-tiny` pre-trains the tiny BERT on pydoc-mlm first, far weaker), sequences of
32 tokens, batch 16, Adam lr 2e-4, evaluation only at the end of each fine-tune; task A = pydoc-topics
(12-way, 2 epochs = 20 steps), task B = pydoc-modules (24-way, 1 epoch = 32 steps); the MLM objective on a
640-sentence slice of pydoc-mlm's training split (1 epoch of batch 32 = 20 steps; its 512-sentence test
slice scores it). The per-seed task parts run first and every finished part is saved to --out: a rerun
continues, and --report-only summarises a partial run. IMP has ONE pruning round to 50% of the prunable weights (the paper: 10% of the original
per level, many levels), rewinding to the pre-trained weights; the MLM ticket comes from seed 0 only (the
task tickets and every fine-tune from each seed). Dense fine-tunes are computed once per (task, seed) and
shared by the transfer matrix and LoTA: 13 fine-tunes a seed, 2 more for the MLM ticket, 4 MLM trainings.
It trains with the engine's trainer and masks (engine.trainer, engine.masks, engine.methods.lota) directly
instead of stored runs: stored `transfer` runs would repeat each dense fine-tune per cell.

Parts and claims (Chen et al. 2020; Panda et al. 2024):
 0. Task hardness: a linear probe (logistic regression, scikit-learn) on frozen MiniLM mean-pooled features;
    a task a probe nearly solves cannot separate tickets.
 1. IMP tickets of the pre-trained weights beat a random mask with the same per-layer densities and one-shot
    magnitude pruning of the pre-trained weights (MLM, seed 0; task A, all seeds).
 2. Transfer: the MLM ticket matches dense on each downstream task ("matching" = mean test accuracy at least
    the dense mean minus one dense std over seeds); a task's ticket transfers worse than the MLM ticket.
 3. LoTA (density 10%): task B trained on the complement of task A's mask forgets less of A than dense
    sequential fine-tuning; sparse task vectors merge (same scaling search on validation) better than dense
    task arithmetic.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from engine import masks as M
from engine import text, trainer, transformer
from engine.config import DataConfig, TrainConfig
from engine.data import Dataset, Split, load
from engine.methods import lota
from engine.store import load_tensors, save_tensors

A, B, MLM = "pydoc-topics", "pydoc-modules", "pydoc-mlm"
MODEL = "minilm"  # or --model bert-tiny, pre-trained here on pydoc-mlm first (`pretrain_tiny`)
NEVER = 10 ** 6  # eval_every: evaluate once, at the end of each fine-tune


def mean_std(xs):
    xs = list(xs)
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(ms) -> str:
    return f"{ms[0]:.3f} +- {ms[1]:.3f}"


PRETRAINED: dict = {}  # --model bert-tiny: the state its MLM pre-training ended at (`pretrain_tiny`)


def data_sets(args) -> dict:
    tokenizer = text.model_tokenizer(MODEL)
    out = {t: load(DataConfig(dataset=t, tokenizer=tokenizer, max_length=args.length)) for t in (A, B, MLM)}
    out["corpus"] = out[MLM]
    m = out[MLM]
    cut = lambda s, n: Split(s.x[:n], s.y[:n])  # noqa: E731 - slices of the fixed, shuffled splits
    out[MLM] = Dataset(m.name, cut(m.train, args.mlm_train), cut(m.val, 256), cut(m.test, 512), m.input_shape,
                       m.num_classes)
    return out


def base_model(task: str, data: Dataset, seed: int):
    """MiniLM's pre-trained encoder with `task`'s head drawn from `seed` (the MLM head: the warmed-up one)."""
    model = transformer.build_text_model(MODEL, data.input_shape, data.num_classes)
    model.init_from_seed(torch.Generator().manual_seed(seed))
    if PRETRAINED:  # the tiny encoder pre-trained here (and, for the MLM, its head)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in PRETRAINED and (n.startswith("bert.") or task == MLM):
                    p.copy_(PRETRAINED[n])
    return model


def pretrain_tiny(data: dict, args, path: Path) -> None:
    """bert-tiny is random: pre-train it on the whole pydoc-mlm training split (MLM, --pretrain-steps of batch 32,
    Adam 1e-3, seed 12345) once, stored at `path`, so that "rewinding to the pre-trained weights" means what
    it does for MiniLM. The downstream tasks' test sentences are not in that split."""
    if not path.exists():
        d = data["corpus"]
        model = transformer.build_text_model(MODEL, d.input_shape, d.num_classes)
        model.init_from_seed(torch.Generator().manual_seed(12345))
        per_epoch = len(d.train) // 32
        cfg = TrainConfig(batch_size=32, lr=1e-3, epochs=max(1, round(args.pretrain_steps / per_epoch)),
                          eval_every=NEVER)
        t0 = time.perf_counter()
        r = trainer.train(model, d, cfg, None, seed=12345)
        print(f"  pre-trained bert-tiny: {r.iterations} MLM steps, test accuracy {r.final['test_accuracy']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        save_tensors(path, dict(model.named_parameters()))
    PRETRAINED.update(load_tensors(path))


def fit(model, data: Dataset, cfg: TrainConfig, mask: M.Mask | None, seed: int) -> float:
    """Train `model` in place from its weights with `mask` (pruned entries zeroed, no updates); test accuracy."""
    if mask is not None:
        M.apply(model, mask)
    return trainer.train(model, data, cfg, mask, seed=seed).final["test_accuracy"]


def clone(model):
    import copy
    return copy.deepcopy(model)


def imp_mask(trained, density: float) -> M.Mask:
    """One round of global magnitude pruning of the fine-tuned prunable weights to `density`."""
    full = M.ones(trained)
    return M.keep_global(M.magnitude_scores(trained, full), full, round(density * M.total(full)))


def controls(base, ticket: M.Mask, seed: int) -> dict:
    """The two controls' masks: random with the ticket's per-layer counts; one-shot global magnitude of the
    pre-trained weights keeping as many (the registered `random` and `start-magnitude` controls' rules)."""
    full = M.ones(base)
    return {"random": M.random_like(ticket, torch.Generator().manual_seed(1000 + seed)),
            "one-shot": M.keep_global(M.magnitude_scores(base, full), full, M.kept(ticket))}


# ---------------------------------------------------------------- part 0: task hardness
def probe(data: dict, args) -> dict:
    """Logistic regression on frozen, mean-pooled MiniLM features (train + val -> test) per downstream task."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out = {}
    for task in (A, B):
        d = data[task]
        model = base_model(task, d, 0).eval()

        @torch.inference_mode()
        def features(x):
            h = model.hidden(x)
            keep = (x != model.pad_id).unsqueeze(-1).to(h.dtype)
            return ((h * keep).sum(1) / keep.sum(1)).numpy()

        x_tr = features(torch.cat([d.train.x, d.val.x]))
        y_tr = torch.cat([d.train.y, d.val.y]).numpy()
        scale = StandardScaler().fit(x_tr)
        clf = LogisticRegression(max_iter=3000, C=args.probe_c).fit(scale.transform(x_tr), y_tr)
        acc = float(clf.score(scale.transform(features(d.test.x)), d.test.y.numpy()))
        out[task] = {"classes": d.num_classes, "train": len(y_tr), "test": len(d.test), "probe": acc,
                     "chance": 1 / d.num_classes}
        print(f"  linear probe {task}: {d.num_classes} classes, {len(y_tr)} train / {len(d.test)} test, "
              f"accuracy {acc:.3f} (chance {1 / d.num_classes:.3f})", flush=True)
    return out


# ---------------------------------------------------------------- part 1: the MLM ticket (seed 0)
def mlm_ticket(data: dict, args) -> tuple[M.Mask, dict]:
    d, cfg = data[MLM], TrainConfig(batch_size=32, lr=args.lr, epochs=1, eval_every=NEVER)
    base = base_model(MLM, d, 0)
    t0 = time.perf_counter()
    out = {"before": trainer.evaluate(base, d.test)[1]}
    dense = clone(base)
    out["dense"] = fit(dense, d, cfg, None, 0)
    ticket = imp_mask(dense, args.imp_density)
    out["imp"] = fit(clone(base), d, cfg, ticket, 0)
    for name, mask in controls(base, ticket, 0).items():
        out[name] = fit(clone(base), d, cfg, mask, 0)
    print(f"  MLM (seed 0, {time.perf_counter() - t0:.0f} s): pre-trained + warmed head {out['before']:.3f}; "
          f"dense {out['dense']:.3f}; IMP {args.imp_density:.0%} {out['imp']:.3f}; random {out['random']:.3f}; "
          f"one-shot {out['one-shot']:.3f}", flush=True)
    return ticket, out


# ---------------------------------------------------------------- parts 1-3 per seed
def task_configs(args) -> dict:
    return {A: TrainConfig(batch_size=args.batch, lr=args.lr, epochs=args.epochs_a, eval_every=NEVER),
            B: TrainConfig(batch_size=args.batch, lr=args.lr, epochs=args.epochs_b, eval_every=NEVER)}


def one_seed(seed: int, data: dict, args, on_result) -> dict:
    """Everything of one seed but the MLM ticket's cells (`mlm_cells`, run once the MLM ticket exists). Each
    fine-tune's accuracy goes to `on_result(key, accuracy)` as soon as it is known (saved: a run cut short still
    reports), task A's ticket and its controls first."""
    cfg = task_configs(args)
    t0 = time.perf_counter()
    base = {t: base_model(t, data[t], seed) for t in (A, B)}
    dense = {t: clone(base[t]) for t in (A, B)}
    acc = {}

    def tune(source, target, model, mask):
        t = time.perf_counter()
        acc[(source, target)] = fit(model, data[target], cfg[target], mask, seed)
        on_result(f"{source}->{target}", acc[(source, target)])
        print(f"    seed {seed} {source} -> {target}: {acc[(source, target)]:.3f} ({time.perf_counter() - t:.0f} s)",
              flush=True)

    tune("dense", A, dense[A], None)
    tickets = {A: imp_mask(dense[A], args.imp_density)}
    tune(A, A, clone(base[A]), tickets[A])
    for name, mask in controls(base[A], tickets[A], seed).items():
        tune(name, A, clone(base[A]), mask)
    tune("dense", B, dense[B], None)
    tickets[B] = imp_mask(dense[B], args.imp_density)
    for source, target in ((B, B), (A, B), (B, A)):  # the rest of the transfer matrix between the tasks
        tune(source, target, clone(base[target]), tickets[source])
    # LoTA, calibrated by the dense fine-tunes above
    sparse = {t: lota.fine_tune(base[t], data[t], cfg[t], args.lota_density, seed=seed, calibrated=dense[t])
              for t in (A, B)}
    seq = lota.sequential(base[A], data[A], base[B], data[B], cfg[A], args.lota_density, seed=seed, cfg_b=cfg[B],
                          dense_a=lota.TaskResult(dense[A], None), lota_a=sparse[A])
    merged = {"dense": lota.merge(base[A], dense[A], data[A], dense[B], data[B]),
              "lota": lota.merge(base[A], sparse[A].model, data[A], sparse[B].model, data[B])}
    row = {"seed": seed, "seconds": time.perf_counter() - t0,
           "accuracy": {f"{s}->{t}": v for (s, t), v in acc.items()}, "sequential": seq, "merge": merged}
    print(f"  seed {seed} ({row['seconds']:.0f} s): " + ", ".join(f"{k} {v:.3f}" for k, v in row["accuracy"].items())
          + f"\n    sequential {json.dumps(seq)}\n    merge {json.dumps(merged)}", flush=True)
    return row


def mlm_cells(seed: int, data: dict, mlm_mask: M.Mask, args) -> dict:
    """The MLM ticket fine-tuned on each downstream task from seed `seed`'s start."""
    cfg = task_configs(args)
    out = {f"{MLM}->{t}": fit(base_model(t, data[t], seed), data[t], cfg[t], mlm_mask, seed) for t in (A, B)}
    print(f"  seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()), flush=True)
    return out


# ---------------------------------------------------------------- summary and verdicts
def summarise(rows: list[dict]) -> dict:
    keys = set.intersection(*(set(r["accuracy"]) for r in rows))  # MLM cells: once the MLM part ran
    acc = {k: mean_std(r["accuracy"][k] for r in rows) for k in sorted(keys)}
    cells = []
    for source in (MLM, A, B):
        for target in (A, B):
            if f"{source}->{target}" not in acc:
                continue
            t, d = acc[f"{source}->{target}"], acc[f"dense->{target}"]
            cells.append({"source": source, "target": target, "ticket": t, "dense": d, "matching": t[0] >= d[0] - d[1]})
    lo = {}
    for kind in ("dense", "lota"):
        lo[kind] = {"forgetting": mean_std(r["sequential"][kind]["forgetting"] for r in rows),
                    "a_before": mean_std(r["sequential"][kind]["a_before"] for r in rows),
                    "a_after": mean_std(r["sequential"][kind]["a_after"] for r in rows),
                    "b_after_a": mean_std(r["sequential"][kind]["b"] for r in rows),
                    "merged_a": mean_std(r["merge"][kind]["a"] for r in rows),
                    "merged_b": mean_std(r["merge"][kind]["b"] for r in rows),
                    "alone_a": mean_std(r["merge"][kind]["a_alone"] for r in rows),
                    "alone_b": mean_std(r["merge"][kind]["b_alone"] for r in rows)}
    return {"accuracy": acc, "cells": cells, "lota": lo}


def verdicts(s: dict, mlm: dict) -> list[str]:
    holds = lambda ok: "holds" if ok else "does NOT hold"  # noqa: E731
    acc, out = s["accuracy"], []
    if mlm:
        out.append(f"MLM IMP ticket beats random and one-shot pre-trained magnitude (seed 0): "
                   f"{holds(mlm['imp'] > max(mlm['random'], mlm['one-shot']))} "
                   f"(IMP {mlm['imp']:.3f}, random {mlm['random']:.3f}, one-shot {mlm['one-shot']:.3f})")
    else:
        out.append("MLM ticket: not measured in this run")
    imp, rnd, one = acc[f"{A}->{A}"], acc[f"random->{A}"], acc[f"one-shot->{A}"]
    out.append(f"Task-A IMP ticket beats its controls on average: {holds(imp[0] > max(rnd[0], one[0]))} "
               f"(IMP {fmt(imp)}, random {fmt(rnd)}, one-shot {fmt(one)})")
    cells = {(c["source"], c["target"]): c for c in s["cells"]}
    for target in (A, B) if (MLM, A) in cells else ():
        c = cells[(MLM, target)]
        out.append(f"MLM ticket matches dense on {target}: {holds(c['matching'])} "
                   f"({fmt(c['ticket'])} vs dense {fmt(c['dense'])})")
    for source, target in ((A, B), (B, A)) if (MLM, A) in cells else ():
        c, m = cells[(source, target)], cells[(MLM, target)]
        out.append(f"{source} ticket transfers to {target} worse than the MLM ticket: "
                   f"{holds(c['ticket'][0] < m['ticket'][0])} ({fmt(c['ticket'])} vs {fmt(m['ticket'])})")
    lo = s["lota"]
    out.append(f"LoTA forgets less of task A than dense sequential fine-tuning: "
               f"{holds(lo['lota']['forgetting'][0] < lo['dense']['forgetting'][0])} "
               f"({fmt(lo['lota']['forgetting'])} vs {fmt(lo['dense']['forgetting'])})")
    lm = (lo["lota"]["merged_a"][0] + lo["lota"]["merged_b"][0]) / 2
    dm = (lo["dense"]["merged_a"][0] + lo["dense"]["merged_b"][0]) / 2
    out.append(f"Sparse task vectors merge better than dense task arithmetic (mean over both tasks): "
               f"{holds(lm > dm)} ({lm:.3f} vs {dm:.3f})")
    return out


def report(s: dict, args) -> None:
    print("\nTransfer matrix (test accuracy, mean +- std over seeds; IMP tickets at "
          f"{args.imp_density:.0%} density; dense beside):")
    for c in s["cells"]:
        print(f"  {c['source']:>13s} ticket -> {c['target']:<13s} {fmt(c['ticket'])}   dense {fmt(c['dense'])}   "
              f"{'matching' if c['matching'] else 'not matching'}")
    print(f"\nLoTA (density {args.lota_density:.0%}) vs dense, mean +- std over seeds:")
    for kind, r in s["lota"].items():
        print(f"  {kind:5s} A before B {fmt(r['a_before'])}, after {fmt(r['a_after'])} (forgetting "
              f"{fmt(r['forgetting'])}); B {fmt(r['b_after_a'])}; merged A {fmt(r['merged_a'])} (alone "
              f"{fmt(r['alone_a'])}), merged B {fmt(r['merged_b'])} (alone {fmt(r['alone_b'])})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="bench-runs/science_foundation.json")
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs-a", type=int, default=2)
    ap.add_argument("--epochs-b", type=int, default=1)
    ap.add_argument("--mlm-train", type=int, default=640, help="pydoc-mlm training sentences used")
    ap.add_argument("--imp-density", type=float, default=0.5, help="the IMP tickets' density (one round)")
    ap.add_argument("--lota-density", type=float, default=0.1)
    ap.add_argument("--probe-c", type=float, default=1.0, help="the probe's inverse L2 strength")
    ap.add_argument("--model", default="minilm", help="minilm; bert-tiny for a smoke run of the pipeline")
    ap.add_argument("--pretrain-steps", type=int, default=1000, help="bert-tiny: its MLM pre-training steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is much faster "
                    "on an oversubscribed machine)")
    ap.add_argument("--probe-only", action="store_true", help="part 0 only (a minute)")
    ap.add_argument("--skip-mlm", action="store_true", help="no MLM ticket (it needs the MLM head's warm-up)")
    ap.add_argument("--report-only", action="store_true", help="summarise what --out holds (a partial run too)")
    args = ap.parse_args()
    global MODEL
    MODEL = args.model
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print(f"science_foundation: {MODEL}, {args.seeds} seeds, L = {args.length}, batch {args.batch}, lr {args.lr}, "
          f"A {args.epochs_a} epochs, B {args.epochs_b}; torch threads {torch.get_num_threads()}", flush=True)
    data = data_sets(args)
    out, mask_path = Path(args.out), Path(args.out).with_suffix(".mlm-mask.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    setting = {k: v for k, v in vars(args).items() if k not in ("probe_only", "skip_mlm", "report_only", "threads")}
    result = {"args": setting}
    if out.exists() and json.loads(out.read_text())["args"] == setting:  # rerun: finished parts are kept
        result = json.loads(out.read_text())
        print(f"  resuming {out}: {len(result.get('rows', []))} seeds done", flush=True)

    def save():
        out.write_text(json.dumps(result, indent=1, default=str))

    if MODEL == "bert-tiny":
        pretrain_tiny(data, args, out.with_suffix(".tiny-pretrained.safetensors"))

    if "probe" not in result:
        result["probe"] = probe(data, args)
        save()
    if not args.probe_only and not args.report_only:
        result.setdefault("rows", [])
        for seed in range(len(result["rows"]), args.seeds):  # the task parts first (LoTA needs no MLM head)
            partial = result["unfinished_seed"] = {"seed": seed}  # for the record: a rerun starts it again

            def on_result(key, accuracy):
                partial[key] = accuracy
                save()

            result["rows"].append(one_seed(seed, data, args, on_result))
            result.pop("unfinished_seed")
            save()
        if not args.skip_mlm:
            if "mlm" not in result or not mask_path.exists():
                mask, result["mlm"] = mlm_ticket(data, args)
                save_tensors(mask_path, mask)
                save()
            mask = {n: m.bool() for n, m in load_tensors(mask_path).items()}
            for row in result["rows"]:
                if f"{MLM}->{A}" not in row["accuracy"]:
                    row["accuracy"].update(mlm_cells(row["seed"], data, mask, args))
                    save()
    if result.get("rows"):
        s = result["summary"] = summarise(result["rows"])
        print(f"\n{len(result['rows'])} seed(s) measured")
        report(s, args)
        result["verdicts"] = verdicts(s, result.get("mlm"))
        print("\nClaims at this scale:\n" + "\n".join("  " + v for v in result["verdicts"]))
    result["seconds"] = time.perf_counter() - t0  # this invocation's (a resumed run: the rest only)
    save()
    print(f"\ntotal {result['seconds']:.0f} s (2-core CPU; on a shared machine slower); results in {args.out}")


if __name__ == "__main__":
    main()
