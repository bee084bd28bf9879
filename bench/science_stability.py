"""Stability, rewinding and early-bird tickets on digits (a science check, not a test).

Frankle, Dziugaite, Roy & Carbin (2020) found that a network is *stable to SGD noise* (two copies
trained from the same weights with different data orders end in one linearly connected minimum: error
barrier <= 2%) only after some training k, except for small nets like LeNet, which are stable at
init; and that IMP finds matching tickets exactly when the sparse network is stable at its rewind point.
You et al. (2020) found that the pruning mask settles long before the weights do (early-bird tickets).
This script checks all three with the public API only (`engine.run`, `engine.analysis.analyze`):

(a) instability vs rewind point k (error barrier, 31 points, test split) for lenet300 and conv2 (width
    0.5), dense (level 0) and the IMP ticket at --ticket-level (9: ~13% density), from m * W_k;
(b) IMP ticket quality vs stability at the same level: rewound to init vs late rewinding to k = K (K:
    the first rewind point > 0 where dense net and ticket are both stable, at least --min-late; or
    --late), each against its reinit control, next to the barrier at k = 0 and k = K;
(c) early-bird tickets at density 0.2 and 0.05: detection epoch, search cost, accuracy vs the IMP
    ticket of the nearest density and vs the early-bird ticket's reinit control.

Training: 30 epochs (630 iterations on digits), Adam 1.2e-3, batch 60, seeds --seeds. Runs and
analyses are stored under --runs-dir and reused, so a rerun only prints the tables.

    python bench/science_stability.py                 # seeds 0,1: ~13 min on 2 shared CPU cores
    python bench/science_stability.py --seeds 0       # one seed: ~7 min
    python bench/science_stability.py --smoke         # ~30 s: 1 seed, 5 epochs, 3 levels, conv2 width 0.25
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import engine
from engine import masks as M
from engine import trainer
from engine.analysis import EarlyBirdTracker, StoredRun, analyze, magnitude_rule, mask_distance
from engine.analysis.common import dense_seed
from engine.methods.imp import imp_output_density
from engine.store import write_json

THRESHOLD = 0.02  # stable when the error barrier is at most 2 percentage points
POINTS = 31


def fmt(values, scale=100.0, digits=1) -> str:
    """mean (+- sd over seeds when there are several)."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f}+-{statistics.stdev(values):.{digits}f}"


class Study:
    def __init__(self, args):
        self.args = args
        self.runs_dir = args.runs_dir
        self.t0 = time.perf_counter()

    def log(self, text: str) -> None:
        print(f"  [{time.perf_counter() - self.t0:6.0f}s] {text}", flush=True)

    def config(self, model: dict, seed: int, **changes) -> engine.RunConfig:
        base = {"data.dataset": "digits", "train.epochs": self.args.epochs, "device": "cpu",
                "prune.controls": ("reinit",), "seed": seed, **model}
        return engine.RunConfig().replace(**base, **changes)

    def run(self, cfg: engine.RunConfig, what: str) -> dict:
        t = time.perf_counter()
        summary = engine.run(cfg, runs_dir=self.runs_dir)
        self.log(f"{what}: {summary['run_id']} {summary['status']} ({time.perf_counter() - t:.0f}s)")
        return summary

    def instability(self, run_id: str, level: int, ks) -> dict:
        """analyses/instability-L{level}.json, reused when it has the same rewind points and points."""
        path = engine.RunStore(self.runs_dir, run_id).analysis_path(f"instability-L{level}")
        if path.exists():
            stored = json.loads(path.read_text())
            if stored["rewind_points"] == sorted(ks) and stored["points"] == POINTS:
                return stored
        t = time.perf_counter()
        result = analyze("instability", self.runs_dir, run_id, level=level, rewind_points=tuple(ks), points=POINTS)
        self.log(f"instability {run_id} L{level} k={list(ks)}: "
                 f"{[round(b, 4) for b in result['barriers']]} ({time.perf_counter() - t:.0f}s)")
        return result


def replay_earlybird(runs_dir: str, run_id: str, cfg: engine.RunConfig) -> dict:
    """The early-bird search of an earlybird run, replayed over the *whole* dense training (the method stops
    at detection, so its record ends there): the same rule, data order and tracker, every epoch's window.
    Stored as RUN_DIR/analyses/earlybird-replay.json (a name of this script's, not the engine's)."""
    store = engine.RunStore(runs_dir, run_id)
    path = store.analysis_path("earlybird-replay")
    if path.exists():
        return json.loads(path.read_text())
    run = StoredRun(runs_dir, run_id, device="cpu")
    rule = magnitude_rule(cfg.prune.density, imp_output_density(cfg.prune), cfg.prune.scope)
    tracker = EarlyBirdTracker(rule, window=5, eps=cfg.prune.earlybird_eps)
    model = run.make_model()
    model.load_state_dict(run.init_weights())
    tracker.update(model, 0.0)
    trainer.train(model, run.data, cfg.train, None, seed=dense_seed(cfg),
                  on_step=tracker.hook(trainer.steps_per_epoch(len(run.data.train), cfg.train)))
    result = {k: v for k, v in tracker.to_dict().items() if k != "distance_matrix"}
    write_json(path, result)
    return result


def relative_detection(replay: dict, density: float, eps: float) -> float | None:
    """First epoch whose full window has every distance below eps x 2 x density, i.e. under eps of the
    largest distance two masks of this density can have (about: under eps of the kept weights changed)."""
    for epoch, distances in zip(replay["epochs"], replay["recent_distances"]):
        if len(distances) == replay["window"] - 1 and max(distances) < eps * 2 * density:
            return epoch
    return None


def barrier_at(result: dict, k: int) -> float | None:
    """The error barrier at rewind point k, None where k was not measured (a --late outside the points)."""
    points = result["rewind_points"]
    return result["barriers"][points.index(k)] if k in points else None


def level_row(summary: dict, level: int, variant: str = "ticket") -> dict:
    if variant == "ticket":
        rows = [summary["dense"], *summary["levels"]]
    else:
        rows = summary["controls"][variant]
    return next(r for r in rows if r["level"] == level)


def choose_late(dense: list[dict], ticket: list[dict], ks: list[int], minimum: int) -> int:
    """The first k > 0 (at least `minimum`) where the mean barrier of dense net and ticket are both stable;
    the last rewind point if they never are."""
    for k in ks:
        if k <= 0 or k < minimum:
            continue
        if all(statistics.mean(barrier_at(r, k) for r in rs) <= THRESHOLD for rs in (dense, ticket)):
            return k
    return ks[-1]


# ---------------------------------------------------------------- tables
def table_a(name: str, dense: list[dict], ticket: list[dict], ks: list[int], density: float) -> None:
    print(f"\n(a) {name}: error barrier (%) between two data orders trained from m * W_k "
          f"(* = stable, <= {THRESHOLD:.0%}); mean{'+-sd' if len(dense) > 1 else ''} over {len(dense)} seed(s)")
    print(f"{'net':<22}" + "".join(f"{'k=' + str(k):>13}" for k in ks))
    for label, rs in (("dense (L0)", dense), (f"IMP ticket d={density:.3f}", ticket)):
        cells = []
        for k in ks:
            values = [barrier_at(r, k) for r in rs]
            cells.append(fmt(values, digits=2) + ("*" if statistics.mean(values) <= THRESHOLD else " "))
        print(f"{label:<22}" + "".join(f"{c:>13}" for c in cells))
        accs = ["/".join(f"{100 * a:.1f}" for a in (statistics.mean(r["endpoint_test_accuracy"][i][j] for r in rs)
                                                     for j in (0, 1)))
                for i in range(len(ks))]
        print(f"{'  endpoint test acc %':<22}" + "".join(f"{a:>13}" for a in accs))


def table_b(name: str, rows: list[tuple], K: int) -> None:
    print(f"\n(b) {name}: IMP tickets at the same level, rewound to init vs late; test accuracy % "
          f"(final / at early stop), error barrier % at the rewind point")
    print(f"{'variant':<24}{'density':>8}{'ticket':>12}{'reinit':>12}{'ticket-reinit':>15}{'ticket@ES':>12}"
          f"{'reinit@ES':>12}{'barrier@0':>12}{f'barrier@{K}':>12}")
    for label, density, t, r, tes, res, b0, bk in rows:
        delta = [a - b for a, b in zip(t, r)] if r else None
        print(f"{label:<24}{density:>8.3f}{fmt(t):>12}{fmt(r) if r else '-':>12}"
              f"{fmt(delta) if delta else '-':>15}{fmt(tes):>12}{fmt(res) if res else '-':>12}"
              f"{fmt(b0, digits=2) if b0 else '-':>12}{fmt(bk, digits=2) if bk else '-':>12}")


def table_c(rows: list[dict]) -> None:
    print("\n(c) early-bird tickets (magnitude mask at --density, window 5, eps 0.1) vs IMP; test accuracy %")
    print(f"{'model':<12}{'target':>7}{'density':>8}{'detect ep':>10}{'search/full':>12}{'ticket':>11}"
          f"{'reinit':>11}{'IMP (level, dens)':>24}{'overlap end':>13}{'d@detect':>12}{'max d':>7}{'rel detect':>11}")
    for r in rows:
        imp = f"{fmt(r['imp_acc'])} (L{r['imp_level']}, {r['imp_density']:.3f})"
        detect = "/".join("-" if e is None else f"{e:g}" for e in r["detected"])
        rel = "/".join("-" if e is None else f"{e:g}" for e in r["rel_detected"])
        cost = fmt([(e if e is not None else r["epochs"]) / r["epochs"] for e in r["detected"]], digits=0) + "%"
        print(f"{r['model']:<12}{r['target']:>7.2f}{r['density']:>8.3f}{detect:>10}{cost:>12}{fmt(r['acc']):>11}"
              f"{fmt(r['reinit']):>11}{imp:>24}{fmt(r['overlap'], digits=1):>13}"
              f"{fmt(r['d_detect'], digits=2):>12}{200 * r['density']:>7.1f}{rel:>11}")
    print("  search/full: epochs of dense training until detection / full training epochs.\n"
          "  overlap end: % of the early-bird mask's kept weights that the magnitude mask of the fully trained\n"
          "  dense net also keeps. d@detect: largest normalised Hamming distance (%) in the window at detection.\n"
          "  max d: the largest distance (%) two masks of this density can have (2 x density); near eps = 10%\n"
          "  the test passes as soon as the window is full unless nearly all kept weights change.\n"
          "  rel detect: detection epoch (per seed) on a replay of the whole dense training with eps scaled to\n"
          "  the density (all distances below 10% of 2 x density, i.e. under ~10% of the kept weights changed);\n"
          "  '-' = never within the training.")


# ---------------------------------------------------------------- the study
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1", help="comma separated")
    ap.add_argument("--runs-dir", default="/tmp/lte-stability")
    ap.add_argument("--models", default="lenet300,conv2")
    ap.add_argument("--conv-width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--levels", type=int, default=13, help="IMP levels of the init-rewound run (13: ~5.5%% "
                    "density, for the early-bird comparison at 0.05)")
    ap.add_argument("--ticket-level", type=int, default=9, help="IMP level studied in (a) and (b) (9: ~13%%)")
    ap.add_argument("--rewind-points", default="0,10,25,50,100,200")
    ap.add_argument("--late", type=int, default=None, help="late rewinding iteration K (default: from (a))")
    ap.add_argument("--min-late", type=int, default=50, help="smallest K chosen from (a)")
    ap.add_argument("--densities", default="0.2,0.05", help="early-bird target densities")
    ap.add_argument("--smoke", action="store_true", help="5 epochs, 3 levels, k=0,10,50, conv2 width 0.25")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.smoke:
        args.epochs, args.levels, args.ticket_level = 5, 3, 2
        args.rewind_points, args.conv_width, args.min_late = "0,10,50", 0.25, 10
        args.seeds = args.seeds.split(",")[0]
    torch.set_num_threads(args.threads)

    seeds = [int(s) for s in args.seeds.split(",")]
    ks = sorted(int(k) for k in args.rewind_points.split(","))
    densities = [float(d) for d in args.densities.split(",")]
    models = {"lenet300": {"model.model": "lenet300"},
              "conv2": {"model.model": "conv2", "model.width": args.conv_width}}
    study = Study(args)
    print(f"digits, {args.epochs} epochs, seeds {seeds}, IMP 20%/level (output 10%), ticket level "
          f"{args.ticket_level}, rewind points {ks}, torch {torch.__version__} with {torch.get_num_threads()} "
          f"thread(s); runs in {args.runs_dir}", flush=True)

    results = {}
    for name in args.models.split(","):
        model = models[name]
        label = name + (f" w{args.conv_width:g}" if name == "conv2" else "")
        print(f"\n== {label}", flush=True)
        # (a) IMP rewound to init, then instability of its dense net and of its ticket level
        init_runs, dense_inst, ticket_inst = [], [], []
        for seed in seeds:
            s = study.run(study.config(model, seed, **{"prune.levels": args.levels}), f"IMP init seed {seed}")
            init_runs.append(s)
            dense_inst.append(study.instability(s["run_id"], 0, ks))
            ticket_inst.append(study.instability(s["run_id"], args.ticket_level, ks))
        K = args.late if args.late is not None else choose_late(dense_inst, ticket_inst, ks, args.min_late)
        study.log(f"late rewinding point K = {K}")
        # (b) IMP with late rewinding to K, to the same level; instability of its ticket at 0 and K
        late_runs, late_inst = [], []
        for seed in seeds:
            s = study.run(study.config(model, seed, **{"prune.levels": args.ticket_level, "prune.rewind": f"iter:{K}"}),
                          f"IMP iter:{K} seed {seed}")
            late_runs.append(s)
            late_inst.append(study.instability(s["run_id"], args.ticket_level, sorted({0, K})))
        # (c) early-bird at each density
        eb_rows = []
        for target in densities:
            accs, reinits, detected, overlaps, d_detect, imp_acc, eb_density = [], [], [], [], [], [], None
            rel_detected = []
            imp_level = None
            for seed, init_run in zip(seeds, init_runs):
                cfg = study.config(model, seed, **{"prune.method": "earlybird", "prune.density": target})
                s = study.run(cfg, f"earlybird d={target} seed {seed}")
                store = engine.RunStore(args.runs_dir, s["run_id"])
                eb = json.loads(store.analysis_path("earlybird").read_text())
                ticket = s["levels"][0]
                eb_density = ticket["density"]
                accs.append(ticket["test_accuracy"])
                reinits.append(s["controls"]["reinit"][0]["test_accuracy"])
                detected.append(eb["detected_epoch"])
                if eb["detected_epoch"] is not None:
                    i = eb["epochs"].index(eb["detected_epoch"])
                    d_detect.append(max(eb["recent_distances"][i]))
                # the magnitude mask of the fully trained dense net (level 0) at the same target
                mask, _ = store.load_level("ticket", 1)
                dense_model = StoredRun(args.runs_dir, s["run_id"], device="cpu").make_model()
                _, dense_weights = store.load_level("ticket", 0)
                dense_model.load_state_dict(dense_weights)
                final = magnitude_rule(target, imp_output_density(cfg.prune), cfg.prune.scope)(dense_model)
                # keys in the model's order: the store returns tensors sorted by name, and mask_distance
                # (like every flattening of a mask) compares masks position by position in key order
                mask = {n: mask[n] for n in final}
                overlaps.append(M.kept({n: mask[n] & final[n] for n in mask}) / M.kept(mask))
                study.log(f"  detected at epoch {eb['detected_epoch']}, distance to end-of-training mask "
                          f"{mask_distance(mask, final):.4f}")
                replay = replay_earlybird(args.runs_dir, s["run_id"], cfg)
                if replay["detected_epoch"] != eb["detected_epoch"]:
                    study.log(f"  NOTE: the replay detects at epoch {replay['detected_epoch']}, the run at "
                              f"{eb['detected_epoch']}")
                rel_detected.append(relative_detection(replay, eb_density, cfg.prune.earlybird_eps))
                # the init-rewound IMP ticket nearest in density
                imp = min(init_run["levels"], key=lambda r: abs(r["density"] - eb_density))
                imp_level, imp_density = imp["level"], imp["density"]
                imp_acc.append(imp["test_accuracy"])
            eb_rows.append({"model": label, "target": target, "density": eb_density, "detected": detected,
                            "epochs": args.epochs, "acc": accs, "reinit": reinits, "imp_acc": imp_acc,
                            "imp_level": imp_level, "imp_density": imp_density, "overlap": overlaps,
                            "d_detect": d_detect, "rel_detected": rel_detected})
        results[label] = (init_runs, dense_inst, ticket_inst, K, late_runs, late_inst, eb_rows)

    # ------------------------------------------------------------ tables
    print(f"\n\n==================== results ({time.perf_counter() - study.t0:.0f}s) ====================")
    L = args.ticket_level
    for label, (init_runs, dense_inst, ticket_inst, K, late_runs, late_inst, _) in results.items():
        table_a(label, dense_inst, ticket_inst, ks, ticket_inst[0]["density"])
    for label, (init_runs, dense_inst, ticket_inst, K, late_runs, late_inst, _) in results.items():
        dense = [s["dense"] for s in init_runs]
        t_init = [level_row(s, L) for s in init_runs]
        r_init = [level_row(s, L, "reinit") for s in init_runs]
        t_late = [level_row(s, L) for s in late_runs]
        r_late = [level_row(s, L, "reinit") for s in late_runs]

        def acc(rows, key="test_accuracy"):
            return [r[key] for r in rows]

        table_b(label, [
            ("dense", 1.0, acc(dense), None, acc(dense, "early_stop_test_accuracy"), None,
             [barrier_at(r, 0) for r in dense_inst], [barrier_at(r, K) for r in dense_inst]),
            ("IMP rewind init (k=0)", t_init[0]["density"], acc(t_init), acc(r_init),
             acc(t_init, "early_stop_test_accuracy"), acc(r_init, "early_stop_test_accuracy"),
             [barrier_at(r, 0) for r in ticket_inst], [barrier_at(r, K) for r in ticket_inst]),
            (f"IMP rewind iter:{K}", t_late[0]["density"], acc(t_late), acc(r_late),
             acc(t_late, "early_stop_test_accuracy"), acc(r_late, "early_stop_test_accuracy"),
             [barrier_at(r, 0) for r in late_inst], [barrier_at(r, K) for r in late_inst]),
        ], K)
        print(f"  barrier@{K}: every row's mask trained from W_{K} (the init-rewound ticket's mask too); barrier@0 "
              f"of the iter:{K} row: its mask from W_0")
    table_c([row for *_, eb_rows in results.values() for row in eb_rows])
    print(f"\ntotal {time.perf_counter() - study.t0:.0f}s")


if __name__ == "__main__":
    main()
