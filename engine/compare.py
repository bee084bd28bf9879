"""The leaderboard: every method on the same model, data and training budget, at the same densities.

`compare(base, methods, densities, seeds)` runs (or reuses, via the run store) one run per method and
seed — IMP once to the lowest density, reading the level nearest each target; the other methods once
per density — and tabulates test accuracy (mean, std over seeds), the search cost before the ticket's
own training (training steps and seconds), and the deltas of the controls trained beside each ticket.
"""
from __future__ import annotations

import math
import statistics

from .config import PruneConfig, RunConfig, config_from_settings
from .errors import ConfigError
from .registry import METHODS
from .runner import run


def _config(base: RunConfig | dict, method: str, seed: int, density: float | None, levels: int | None) -> RunConfig:
    """`base` is a RunConfig or {setting path: value} (the CLI's flags, validated per method here, so a
    scope only some methods allow, such as erk, applies to those and the others keep their default)."""
    changes = {"prune.method": method, "seed": seed}
    if density is not None:
        changes["prune.density"] = density
    if levels is not None:
        changes["prune.levels"] = levels
    values = dict(base) if isinstance(base, dict) else {}
    scope = base.prune.scope if isinstance(base, RunConfig) else values.get("prune.scope", PruneConfig.scope)
    scopes = getattr(METHODS.get(method, "methods"), "scopes", ("layerwise", "global"))
    if scope in ("layerwise", "global", "erk") and scope not in scopes:  # a valid scope this method lacks
        changes["prune.scope"] = scopes[0]
    if isinstance(base, RunConfig):
        return base.replace(**changes)
    return config_from_settings({**values, **changes})


def _row(summary: dict, level: dict, search_steps: int, search_seconds: float) -> dict:
    controls = {name: next((r for r in rows if r["level"] == level["level"]), None)
                for name, rows in summary["controls"].items()}
    return {"run_id": summary["run_id"], "density": level["density"], "test_accuracy": level["test_accuracy"],
            "search_steps": search_steps, "search_seconds": round(search_seconds, 3),
            "control_deltas": {n: r["test_accuracy"] - level["test_accuracy"] for n, r in controls.items() if r}}


def compare(base: RunConfig, methods: list[str], densities: list[float], seeds: int, *, runs_dir,
            on_event=None, cancel=None) -> dict:
    for m in methods:
        METHODS.get(m, "methods")
    if not densities or any(not 0 < d < 1 for d in densities):
        raise ConfigError("densities", densities, "must be one or more numbers in (0, 1)")
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("seeds", seeds, "must be a positive integer")
    raw: dict[tuple[str, float], list[dict]] = {}
    for method in methods:
        for seed in range(seeds):
            if method == "imp":  # one run down to the lowest density; each target reads its nearest level
                fraction = _config(base, method, seed, None, None).prune.prune_fraction
                levels = min(100, math.ceil(math.log(min(densities)) / math.log(1 - fraction)))
                summaries = [run(_config(base, method, seed, None, levels), on_event, cancel, runs_dir=runs_dir)]
            else:
                summaries = [run(_config(base, method, seed, d, None), on_event, cancel, runs_dir=runs_dir)
                             for d in densities]
            if any(s["status"] != "completed" for s in summaries):
                return {"status": "cancelled", "rows": []}
            for d, s in zip(densities, summaries * len(densities) if method == "imp" else summaries):
                level = min(s["levels"], key=lambda lv: abs(lv["density"] - d))
                raw.setdefault((method, d), []).append(_row(s, level, *_search_cost(s, level, runs_dir)))
    rows = []
    for (method, d), entries in raw.items():
        accs = [e["test_accuracy"] for e in entries]
        names = sorted({n for e in entries for n in e["control_deltas"]})
        rows.append({
            "method": method, "target_density": d,
            "density": statistics.fmean(e["density"] for e in entries),
            "test_accuracy_mean": statistics.fmean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seeds": len(accs),
            "search_steps": statistics.fmean(e["search_steps"] for e in entries),
            "search_seconds": statistics.fmean(e["search_seconds"] for e in entries),
            "control_deltas": {n: statistics.fmean(e["control_deltas"][n] for e in entries if n in e["control_deltas"])
                               for n in names},
            "runs": sorted({e["run_id"] for e in entries}),
        })
    first = _config(base, methods[0], 0, None, None)
    return {"status": "completed", "model": first.model.model, "dataset": first.data.dataset, "seeds": seeds,
            "densities": densities, "methods": methods, "rows": rows}


def _search_cost(summary: dict, level: dict, runs_dir) -> tuple[int, float]:
    """(training steps, seconds) spent finding `level`'s mask, before the ticket's own training.

    IMP: the dense net and every earlier level; one-shot: the dense net; early-bird: the dense search up to
    detection; mask searches (cs, cts): their stored search record; strong tickets: their score training,
    which is the whole search; pruning at initialisation: none (scoring a batch is not training)."""
    from .analysis.common import analysis_path
    from .store import RunStore, read_json

    method = summary["method"]
    store = RunStore(runs_dir, summary["run_id"])
    trainings = [summary["dense"]] + [lv for lv in summary["levels"] if lv["level"] < level["level"]]
    if method == "imp":
        return sum(t["iterations"] - t["start_step"] for t in trainings), sum(t["train_seconds"] for t in trainings)
    if method == "oneshot":
        return summary["dense"]["iterations"], summary["dense"]["train_seconds"]
    if getattr(METHODS.get(method, "method"), "untrained_ticket", False):
        return level["iterations"], level["train_seconds"]
    if analysis_path(store, "search").exists():
        search = read_json(analysis_path(store, "search"))
        return search["steps"], search["seconds"]
    if method == "earlybird":
        search = read_json(analysis_path(store, "earlybird"))
        per_epoch = summary["dense"]["iterations"] / search["epochs_total"]
        epochs = search["epochs"][-1]  # the search stopped at detection (or ran to the end)
        return round(epochs * per_epoch), summary["dense"]["train_seconds"] * epochs / search["epochs_total"]
    return 0, 0.0


def format_table(result: dict) -> str:
    lines = [f"leaderboard: {result['model']} on {result['dataset']}, {result['seeds']} seed(s); test accuracy "
             "mean ± std, search cost before the ticket's own training, control − ticket deltas (points)"]
    lines.append(f"{'method':<10} {'target':>7} {'density':>8} {'test acc':>15} {'search steps':>13} "
                 f"{'search s':>9}  controls")
    for r in sorted(result["rows"], key=lambda r: (-r["target_density"], -r["test_accuracy_mean"])):
        deltas = "  ".join(f"{n} {100 * v:+.2f}" for n, v in r["control_deltas"].items())
        lines.append(f"{r['method']:<10} {r['target_density']:>7.3f} {r['density']:>8.4f} "
                     f"{100 * r['test_accuracy_mean']:>7.2f} ± {100 * r['test_accuracy_std']:>5.2f} "
                     f"{r['search_steps']:>13.0f} {r['search_seconds']:>9.2f}  {deltas}")
    return "\n".join(lines)
