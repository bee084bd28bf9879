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
    cfg = {g: dict(v) if isinstance(v, dict) else v for g, v in (summary.get("config") or {}).items()}
    cfg.pop("seed", None)
    pairs = [f"{k}={_short(v)}" for g in sorted(cfg) for k, v in sorted(
        cfg[g].items() if isinstance(cfg[g], dict) else [(g, cfg[g])])
        if k not in ("method", "model", "dataset")]
    head = f"{summary.get('method')} {summary.get('model')} {summary.get('dataset')}"
    return head + (f" ({', '.join(pairs)})" if pairs else "")


def _short(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else json.dumps(v) if isinstance(v, dict) else str(v)


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


def runs_table(summaries: list[dict]) -> pd.DataFrame:
    """The run browser's rows."""
    rows = []
    for s in summaries:
        levels = s.get("levels") or []
        last = levels[-1] if levels else s.get("dense") or {}
        rows.append({"run_id": s["run_id"], "status": s.get("status"), "method": s.get("method"),
                     "model": s.get("model"), "dataset": s.get("dataset"), "seed": s.get("seed"),
                     "levels": len(levels), "last density": last.get("density"),
                     "last test acc": last.get("test_accuracy"),
                     "dense test acc": (s.get("dense") or {}).get("test_accuracy"),
                     "updated": s.get("updated")})
    return pd.DataFrame(rows, columns=["run_id", "status", "method", "model", "dataset", "seed", "levels",
                                       "last density", "last test acc", "dense test acc", "updated"])


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
