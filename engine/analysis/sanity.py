"""Sanity checks for a ticket (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why are
We Missing the Mark?"; Su et al. 2020): does the ticket's accuracy come from *which* weights it keeps
and *what values* they start from, or only from how many it keeps per layer?

Every registered control (engine.methods.controls: reinit, random, shuffle, inverted, which keep the ticket's
per-layer counts, and those other modules register, e.g. start-magnitude, which keeps its total) is trained
for the chosen ticket levels exactly as the run trains its own controls, through the runner's context, so
the controls the run already trained are reused and new ones are stored beside them. The result is a table
of accuracy deltas (control - ticket) per level.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import RunConfig, option, validate
from ..errors import ConfigError
from ..formatting import pct
from ..registry import ANALYSES, CONTROLS, METHODS, AnalysisSpec
from .common import AnalysisProgress, analysable_store, no_controls, save_analysis


def run_sanity(runs_dir: str | os.PathLike, run_id: str, levels: list[int] | None = None, on_event=None,
               cancel=None) -> dict:
    """Train every control for `levels` (default: all ticket levels) and store analyses/sanity.json."""
    from ..runner import open_context  # late: the runner imports the methods, which import the registry

    # (a user's own module: else it opened a run of the config's registry model beside it)
    store = analysable_store(runs_dir, run_id)
    config = RunConfig.from_dict(store.config())
    spec = METHODS.get(config.prune.method, "prune.method")
    if not spec.trains_controls:
        raise ConfigError("RUN_ID", run_id, f"sanity trains controls beside tickets, and {no_controls(config.prune.method)}")
    done = [r["level"] for r in store.records("ticket") if r["level"] > 0]
    levels = done if levels is None else levels
    bad = [lv for lv in levels if lv not in done]
    if bad or not levels:
        # (one bad level, as `--level L` types it, is named alone, not as a list)
        raise ConfigError("level", bad[0] if len(bad) == 1 else bad or levels,
                          f"completed ticket levels of this run: {done}")
    ctx = open_context(config, runs_dir=runs_dir, on_event=on_event, cancel=cancel)
    store.lock()
    try:
        rows = []
        for i, level in enumerate(levels):
            mask, _ = store.load_level("ticket", level, ctx.device)
            if spec.starts_from_init:
                start, start_step = ctx.init_weights, 0  # pruning at init: tickets start at theta_0
            else:
                start, start_step = ctx.rewind(store.load_level("ticket", level - 1, ctx.device)[1])
            ticket = store.level_record("ticket", level)
            row = {"level": level, "density": ticket["density"], "ticket": ticket["test_accuracy"]}
            for name in CONTROLS.names():
                c_mask, c_start, c_step = CONTROLS.get(name, "control")(ctx, level, mask, start, start_step)
                trained = ctx.train_variant(name, level, c_mask, c_start, c_step)
                row[name] = trained.record["test_accuracy"]
                row[f"{name}_delta"] = trained.record["test_accuracy"] - ticket["test_accuracy"]
            rows.append(row)
            if on_event is not None:
                on_event(AnalysisProgress(run_id, "sanity", i + 1, len(levels), f"level {level} done"))
    finally:
        store.unlock()
    result = {"analysis": "sanity", "run_id": run_id, "controls": CONTROLS.names(), "rows": rows}
    save_analysis(store, "sanity", result, on_event)
    return result


@dataclass(frozen=True)
class SanityOptions:
    level: int | None = option(None, "ticket level (default: every completed level)", lo=1)

    def __post_init__(self):
        validate(self)


def format_sanity(name: str, a: dict) -> str:
    lines = [f"{name}: test accuracy of each control minus the ticket's"]
    for r in a["rows"]:
        lines.append(f"  level {r['level']} ({pct(r['density']).strip()}): ticket {pct(r['ticket']).strip()}  " +
                     "  ".join(f"{c} {100 * r[c + '_delta']:+.2f}" for c in a["controls"]))
    return "\n".join(lines)


ANALYSES.register("sanity", "every registered control trained beside chosen ticket levels, as accuracy deltas")(
    AnalysisSpec(format_sanity, options=SanityOptions,
                 compute=lambda runs_dir, run_id, o, on_event=None, cancel=None: run_sanity(
                     runs_dir, run_id, None if o.level is None else [o.level], on_event=on_event, cancel=cancel)))
