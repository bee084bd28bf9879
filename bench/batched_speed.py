"""Side-by-side training (`--batched auto`, engine.batched) vs one after another (engine.trainer): a script.

Two cases on digits, each member with its own init, mask and data order, the engine's default training (Adam,
batch 60), the same members trained both ways in one process, interleaved, after a warm-up:

  level    a ticket at 20% density with its 2 controls (reinit: same mask, fresh init; random: a random mask
           with the same per-layer counts, the ticket's init), what `lottery run` trains per level
  8 seeds  the tickets of 8 seeds (own init, own 20% magnitude mask, own data order), a leaderboard cell

for `lenet300` (grouped bmm) and `conv4` (vmap over functional_call). We print the median (and best) seconds
of --repeats, the ratio one-after-another / batched and the largest weight gap between the two ways.
Targets (issue 16, this 2-core CPU): >= 2x for the lenet300 level, >= 3x for 8 lenet300 seeds. `conv4` is
reported, not targeted: on CPU `--batched auto` trains convolutions one by one (engine.batched.auto_reason).

and, end to end, `lottery compare`'s path: snip at 20% with 8 seeds (each: dense net, ticket, reinit and random
controls) with `--batched auto` (the cell's seeds side by side, engine.side_by_side) vs `--batched off`, fresh
run stores each time.

    python bench/batched_speed.py [--repeats 3] [--epochs 2] [--threads 1|1,2] [--models lenet300,conv4] [--compare]

Timings on a shared machine are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine import batched, masks as M, models, trainer
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load
from engine.seeding import generator
from zoo_speed import cpu_ratio, interleaved  # bench/ is on the path when run as a script


def ticket_mask(net, density: float = 0.2) -> M.Mask:
    ones = M.ones(net)
    return M.prune_step(M.magnitude_scores(net, ones), ones, 1 - density, 1 - density, "layerwise",
                        M.output_layer(net))


def level_members(mc: ModelConfig, data) -> list[batched.Member]:
    """The ticket and its reinit and random controls, as engine.runner builds them."""
    net = models.build(mc, data.input_shape, data.num_classes, 0)
    init, mask = net.state_dict(), ticket_mask(net)
    fresh = models.build(mc, data.input_shape, data.num_classes, 1).state_dict()
    return [batched.Member(init, mask, seed=10), batched.Member(fresh, mask, seed=11),
            batched.Member(init, M.random_like(mask, generator(0, "random", 1)), seed=12)]


def seed_members(mc: ModelConfig, data, k: int = 8) -> list[batched.Member]:
    nets = [models.build(mc, data.input_shape, data.num_classes, s) for s in range(k)]
    return [batched.Member(n.state_dict(), ticket_mask(n), seed=100 + s) for s, n in enumerate(nets)]


def one_after_another(mc, data, cfg, ms) -> list[dict]:
    out = []
    for m in ms:
        net = models.build(mc, data.input_shape, data.num_classes, 0)
        net.load_state_dict(m.init)
        M.apply(net, m.mask)
        trainer.train(net, data, cfg, m.mask, seed=m.seed)
        out.append(net.state_dict())
    return out


def together(mc, data, cfg, ms) -> dict:
    net = models.build(mc, data.input_shape, data.num_classes, 0)
    return batched.train_batched(net, data, cfg, ms).weights


def measure(name: str, mc: ModelConfig, ms, data, cfg, repeats: int, target: float | None) -> dict[str, float]:
    alone, stacked = one_after_another(mc, data, cfg, ms), together(mc, data, cfg, ms)  # warm-up, and a check
    gap = max(float((alone[i][n] - stacked[n][i]).abs().max()) for i in range(len(ms)) for n in stacked)
    cpu = {}
    times = interleaved({"one after another": one_after_another, "batched": together}, (mc, data, cfg, ms), repeats,
                        cpu)
    med = {label: statistics.median(v) for label, v in times.items()}
    ratio = med["one after another"] / med["batched"]
    verdict = f"target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}" if target else "no target"
    print(f"{name:<28} one after another {med['one after another']:6.2f} s (best {min(times['one after another']):.2f})"
          f"  batched {med['batched']:6.2f} s (best {min(times['batched']):.2f})  ratio {ratio:4.1f}x ({verdict};"
          f" {cpu_ratio(cpu, 'one after another', 'batched')}); max weight gap {gap:.1e}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1", help="torch CPU threads (default 1: a shared machine stalls OpenMP "
                    "threads; tests and the bench of issue 12 use 1 too); several (1,2): each case at each count, then "
                    "each way at its own best count against the other's")
    ap.add_argument("--models", default="lenet300,conv4")
    ap.add_argument("--compare", action="store_true", help="also time lottery compare's 8 seeds end to end")
    args = ap.parse_args()
    data = load(DataConfig("digits"))
    cfg = TrainConfig(epochs=args.epochs)
    found: dict[tuple, dict[int, dict[str, float]]] = {}  # (case, target) -> threads -> way -> median seconds
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        print(f"digits, Adam, batch {cfg.batch_size}, {args.epochs} epochs, {torch.get_num_threads()} thread(s)")
        for model in args.models.split(","):
            mc = ModelConfig(model=model)
            lenet = model == "lenet300"
            for case, ms, target in ((f"{model} level (ticket + 2)", level_members(mc, data), 2 if lenet else None),
                                     (f"{model} 8 seeds", seed_members(mc, data), 3 if lenet else None)):
                found.setdefault((case, target), {})[threads] = measure(case, mc, ms, data, cfg, args.repeats, target)
    if "," in args.threads:
        print("each way at its best thread count:")
        for (case, target), by_threads in found.items():
            best = {way: min((med[way], t) for t, med in by_threads.items())
                    for way in ("one after another", "batched")}
            ratio = best["one after another"][0] / best["batched"][0]
            verdict = f"target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}" if target else "no target"
            print(f"{case:<28} one after another {best['one after another'][0]:6.2f} s ({best['one after another'][1]} "
                  f"thread(s))  batched {best['batched'][0]:6.2f} s ({best['batched'][1]} thread(s))  ratio "
                  f"{ratio:4.1f}x ({verdict})")
    if args.compare:
        compare_end_to_end(args.epochs, args.repeats)


def compare_end_to_end(epochs: int, repeats: int) -> None:
    import shutil
    import tempfile

    from engine import RunConfig
    from engine.compare import compare

    times = {"off": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms up
            for mode in ("off", "auto"):
                runs = f"{tmp}/{mode}"
                shutil.rmtree(runs, ignore_errors=True)
                base = RunConfig().replace(**{"train.epochs": epochs, "prune.controls": ("reinit", "random"),
                                              "train.batched": mode, "device": "cpu"})
                t = time.perf_counter()
                compare(base, ["snip"], [0.2], 8, runs_dir=runs)
                if r:
                    times[mode].append(time.perf_counter() - t)
    med = {mode: statistics.median(v) for mode, v in times.items()}
    print(f"{'compare snip, 8 seeds':<28} --batched off {med['off']:6.2f} s  auto {med['auto']:6.2f} s  "
          f"ratio {med['off'] / med['auto']:4.1f}x (target >= 3x: {'met' if med['off'] / med['auto'] >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
