"""Tables the views plot, built from run summaries (plain dicts from the engine's run store).

Runs that differ only in their seed form one *experiment*; the views draw their mean and spread.
Nothing here imports a plotting library, so the numbers behind every plot are easy to test.
"""
from __future__ import annotations

import json

import pandas as pd

LEVEL_COLUMNS = ["run_id", "experiment", "seed", "variant", "level", "density", "test_accuracy",
                 "val_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "train_seconds"]


def experiment_of(summary: dict) -> str:
    """A readable label shared by runs that differ only in seed: 'imp lenet300 digits (epochs=20, levels=3)'."""
    pairs = [f"{k}={_short(v)}" for k, v in _settings(summary).items()]
    return _head(summary) + (f" ({', '.join(pairs)})" if pairs else "")


def _head(summary: dict) -> str:
    return f"{summary.get('method')} {summary.get('model')} {summary.get('dataset')}"


def _settings(summary: dict) -> dict:
    """{field: value} of the settings the run changed from the defaults (its stored config), seed and the head's
    method, model and data set left out; sorted by group, then field."""
    cfg = summary.get("config") or {}
    return {k: v for g in sorted(cfg) for k, v in sorted(cfg[g].items() if isinstance(cfg[g], dict) else [(g, cfg[g])])
            if k not in ("seed", "method", "model", "dataset")}


def short_names(summaries: list[dict]) -> dict[str, str]:
    """{experiment: a short name for a legend}: method, model and data set, and the settings in which the
    experiment differs from most runs of those three ('imp lenet300 digits (rewind=lr)' for one of three runs
    of a preset that differ only in their rewind point). The full names (every setting changed from the
    defaults) ran to ~100 characters: a legend of a few runs covered the plot. Two different experiments never
    get one name: where they differ, at least one of them is not the common value, so it names that setting."""
    from collections import Counter

    from engine import RunConfig

    default = {k: v for g, d in RunConfig().to_dict().items() for k, v in (d.items() if isinstance(d, dict) else [(g, d)])}
    groups: dict[str, dict[str, dict]] = {}  # head -> {experiment: its settings}
    for s in summaries:
        groups.setdefault(_head(s), {})[experiment_of(s)] = _settings(s)
    names = {}
    for head, experiments in groups.items():
        keys = sorted({k for pairs in experiments.values() for k in pairs})
        value = {k: [_short(pairs.get(k, default.get(k))) for pairs in experiments.values()] for k in keys}
        # per setting, the value most of these runs have (the default where it is among the most common); none
        # where every run has its own (three runs of init, iter:1 and lr rewinding each name theirs)
        common = {}
        for k, values in value.items():
            counts = Counter(values)
            top = max(counts.values())
            common[k] = None if top == 1 < len(values) else _short(default.get(k)) \
                if counts.get(_short(default.get(k))) == top else counts.most_common(1)[0][0]
        for i, experiment in enumerate(experiments):
            # the rarest values first: what sets this run apart stays in view when a long name is cut short
            differ = sorted((k for k in keys if value[k][i] != common[k]), key=lambda k: value[k].count(value[k][i]))
            shown = ", ".join(f"{k}={value[k][i]}" for k in differ)
            names[experiment] = head + (f" ({shown})" if shown else "")
    return names


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "none"  # (--controls none: 'controls=' read as a value left out)
    return json.dumps(v) if isinstance(v, dict) else str(v)


def level_rows(summaries: list[dict]) -> pd.DataFrame:
    """One row per trained network: the dense net, every ticket level and every control level."""
    rows = []
    for s in summaries:
        exp = experiment_of(s)
        base = {"run_id": s["run_id"], "experiment": exp, "seed": s.get("seed")}
        if s.get("dense"):
            rows.append({**base, "variant": "dense", **s["dense"]})
        for r in s.get("levels", []):
            rows.append({**base, "variant": "ticket", **r})
        for name, control_rows in (s.get("controls") or {}).items():
            for r in control_rows:
                rows.append({**base, "variant": name, **r})
    if not rows:
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    return pd.DataFrame(rows)[LEVEL_COLUMNS]


def seed_bands(levels: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, std, min, max of `value` over seeds for each (experiment, variant, level)."""
    cols = ["experiment", "variant", "level", "density", "mean", "std", "lo", "hi", "seeds"]
    if levels.empty:
        return pd.DataFrame(columns=cols)
    g = levels.groupby(["experiment", "variant", "level"], sort=True)
    out = g.agg(density=("density", "mean"), mean=(value, "mean"), std=(value, "std"), lo=(value, "min"),
                hi=(value, "max"), seeds=("seed", "nunique")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out[cols]


def layer_rows(summary: dict) -> pd.DataFrame:
    """Per-layer density of every ticket level of one run (level 0 = dense)."""
    rows = []
    for r in ([summary["dense"]] if summary.get("dense") else []) + summary.get("levels", []):
        for layer, d in r["layers"].items():
            rows.append({"level": str(r["level"]), "layer": layer, "density": d})
    return pd.DataFrame(rows, columns=["level", "layer", "density"])


def runs_table(summaries: list[dict], notes: dict[str, str] | None = None) -> pd.DataFrame:
    """The run browser's rows; `notes`: {run id: what the run is for} (see `comparison_notes`). Densities and
    accuracies in %, as `lottery list` and the app's plots give them."""
    notes = notes or {}
    rows = []
    for s in summaries:
        levels = s.get("levels") or []
        last = levels[-1] if levels else s.get("dense") or {}
        rows.append({"run_id": s["run_id"], "note": notes.get(s["run_id"], ""), "status": s.get("status"),
                     "method": s.get("method"), "model": s.get("model"), "dataset": s.get("dataset"),
                     "seed": s.get("seed"), "levels": len(levels), "last density (%)": _percent(last.get("density")),
                     "last test acc (%)": _percent(last.get("test_accuracy")),
                     "dense test acc (%)": _percent((s.get("dense") or {}).get("test_accuracy")),
                     "updated": s.get("updated")})
    return pd.DataFrame(rows, columns=["run_id", "note", "status", "method", "model", "dataset", "seed", "levels",
                                       "last density (%)", "last test acc (%)", "dense test acc (%)", "updated"])


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 2)


def comparison_notes(runs_dir, summaries: list[dict]) -> dict[str, str]:
    """{run id: note} of the runs another run trained to compare against (its method's `companion`: a bayes-imp
    run trains the deterministic IMP run of its settings first, its own run in the store, listed with no word of
    why otherwise)."""
    from engine.errors import LotteryError
    from engine.store import RunStore

    from . import engine_import

    if engine_import.current is not None and not engine_import.current.ready():
        return {}  # (the methods' specs import torch: not on a served page's event loop; the app refreshes the
        # table once the engine is in)
    from engine.registry import METHODS

    listed, specs = {s["run_id"] for s in summaries}, dict(METHODS.items())
    for_runs: dict[tuple[str, str], list[str]] = {}
    for s in summaries:
        spec = specs.get(s.get("method"))
        if spec is None or spec.companion is None:
            continue
        try:
            other = spec.companion(RunStore(runs_dir, s["run_id"]))
        except (OSError, LotteryError):  # deleted or damaged since listed: no note, the run is still listed
            continue
        if other is not None and other[0] in listed:
            for_runs.setdefault(other, []).append(s["run_id"])
    return {run_id: f"{what} for {', '.join(ids)}" for (run_id, what), ids in for_runs.items()}


def reach_rows(runs_dir, summaries: list[dict], threshold: float = 0.95) -> pd.DataFrame:
    """First evaluated iteration at which each training's validation accuracy reached `threshold`.

    On small data sets the early-stopping iteration sits near the end for every network (validation
    loss keeps creeping down), while the time to a fixed accuracy separates winning tickets from
    their controls clearly; it is read from each run's metrics.jsonl.
    """
    from engine.store import RunStore

    rows = []
    for s in summaries:
        metrics = RunStore(runs_dir, s["run_id"]).metrics()
        density = {(r["variant"], r["level"]): r["density"] for r in metrics if r.get("type") == "level"}
        first: dict = {}
        for r in metrics:
            key = (r.get("variant"), r.get("level"))
            if r.get("type") == "eval" and r["val_accuracy"] >= threshold and key not in first:
                first[key] = r["iteration"]
        for (variant, level), d in density.items():
            rows.append({"run_id": s["run_id"], "experiment": experiment_of(s), "seed": s.get("seed"),
                         "variant": "dense" if level == 0 else variant, "level": level, "density": d,
                         "iterations_to_threshold": first.get((variant, level))})
    return pd.DataFrame(rows, columns=["run_id", "experiment", "seed", "variant", "level", "density",
                                       "iterations_to_threshold"])
