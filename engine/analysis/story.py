"""The stability story (issue 17): rewinding to init vs late rewinding vs learning-rate rewinding, each IMP
ticket's accuracy beside its reinit control and beside the instability of the ticket at its own rewind point.

    run_story(runs_dir, "stability-story", seeds=(0, 1, 2))   # trains and analyses what is not stored yet
    story_groups(runs_dir)                                     # {label: run ids} of the stories in a store
    story_rows(runs_dir, run_ids)                              # one row per (run, level): the table to plot

A story is the runs of one setting (a preset, with any overrides) that differ only in `prune.rewind` and the
seed. For each it stores:
- the dense network's instability at the story's rewind points (`instability-L0` of the late-rewinding run:
  0, K and 5K, K its rewind iteration) -- is the dense net unstable at init and stable by K?
- each ticket level's instability at the ticket's own rewind point (`instability-L{level}`; k = 0 for
  `init`, K for `iter:K`): the paper's claim is that IMP finds matching tickets exactly where this is <= 2%.
  Learning-rate rewinding restarts from *trained* weights with a fresh schedule, which is not a point W_k of
  one training, so its tickets have no such instability (shown as missing, never invented).
"""
from __future__ import annotations

import json
import os

from ..config import RunConfig
from ..errors import LotteryError, RunCancelled
from ..store import RunStore, list_runs
from .instability import STABLE_THRESHOLD, instability

REWIND_ORDER = ("init", "iter", "lr")
# a ticket is *matching* when its test accuracy is within this of the dense net's (1 point), as README's table and
# bench/science_stability_story.py count it and the Stability tab draws it
MATCH_MARGIN = 0.01


def story_configs(preset: str = "stability-story", seed: int = 0, **overrides) -> dict[str, RunConfig]:
    """{rewind: RunConfig} of the preset at `seed` for rewinding to init, to its iter:K and to the LR schedule.

    The preset names K (`prune.rewind` "iter:K"); overrides are setting paths ({"train.epochs": 2})."""
    from ..presets import preset_config

    base = preset_config(preset, seed=seed, **overrides)
    late = base.prune.rewind if base.prune.rewind.startswith("iter:") else "iter:20"
    return {r: base.replace(**{"prune.rewind": r}) for r in ("init", late, "lr")}


def dense_points(cfg: RunConfig, total: int) -> list[int]:
    """The dense net's rewind points: 0, K and 5K (K of the late-rewinding config), those below `total`."""
    k = cfg.prune.rewind_point.iteration or 20
    return sorted({p for p in (0, k, 5 * k) if p < total})


def own_point(cfg: RunConfig) -> int | None:
    """The rewind point a ticket of `cfg` restarts from (None: learning-rate rewinding, no W_k)."""
    r = cfg.prune.rewind_point
    return {"init": 0, "iter": r.iteration}.get(r.kind)


def _analysed(store: RunStore, level: int, points: list[int]) -> bool:
    path = store.analysis_path(f"instability-L{level}")
    return path.exists() and json.loads(path.read_text()).get("rewind_points") == points


def run_story(runs_dir: str | os.PathLike, preset: str = "stability-story", seeds=(0,), *, ticket_levels=None,
              points: int = 11, on_event=None, cancel=None, **overrides) -> list[str]:
    """Train the story's runs and measure their instabilities; what is stored already is reused.

    `ticket_levels`: the levels whose ticket instability is measured (None: every level; () none: each is
    two more trainings per level). Returns the run ids, seed by seed, in the order init, iter:K, lr."""
    from .. import runner, trainer
    from .common import StoredRun

    ids = []
    for seed in seeds:
        for rewind, cfg in story_configs(preset, seed, **overrides).items():
            if runner.run(cfg, runs_dir=runs_dir, on_event=on_event, cancel=cancel)["status"] == "cancelled":
                # (a cancelled run returns, not raises): the story stops with it, what is stored is kept
                raise RunCancelled(f"the story was stopped during run {cfg.run_id}; what it stored is kept, and "
                                   "running the story again resumes it")
            ids.append(cfg.run_id)
            store = RunStore(runs_dir, cfg.run_id)
            run = StoredRun(runs_dir, cfg.run_id)
            total = trainer.total_steps(len(run.data.train), cfg.train)
            if cfg.prune.rewind_point.kind == "iter":
                ks = dense_points(cfg, total)
                if not _analysed(store, 0, ks):
                    instability(cfg.run_id, runs_dir, ks, level=0, points=points, on_event=on_event, cancel=cancel)
            k = own_point(cfg)
            if k is None or k >= total:
                continue
            levels = [r["level"] for r in store.records("ticket") if r["level"] > 0]
            for level in levels if ticket_levels is None else [v for v in levels if v in ticket_levels]:
                if not _analysed(store, level, [k]):
                    instability(cfg.run_id, runs_dir, [k], level=level, points=points, on_event=on_event,
                                cancel=cancel)
    return ids


def _story_key(config: dict) -> str:
    """The setting of a run without its rewind point and seed: runs with one key form one story."""
    c = json.loads(json.dumps(config))
    c["prune"].pop("rewind", None)
    c.pop("seed", None)
    c.pop("device", None)
    return json.dumps(c, sort_keys=True)


def story_groups(runs_dir: str | os.PathLike) -> dict[str, list[str]]:
    """{label: run ids} for every setting stored with runs of two or more rewind kinds, newest first."""
    groups: dict[str, list[dict]] = {}
    for s in list_runs(runs_dir):
        if s.get("status") == "unreadable":
            continue
        try:
            c = RunStore(runs_dir, s["run_id"]).config()  # the whole config (the summary's has non-defaults)
        except LotteryError:  # an unreadable run is the store's problem; stories are made of the readable ones
            continue
        if not isinstance(c.get("prune"), dict) or "rewind" not in c["prune"]:  # a zoo, not a ticket run
            continue
        groups.setdefault(_story_key(c), []).append({**s, "config": c})
    out = {}
    for members in groups.values():
        kinds = {m["config"]["prune"]["rewind"].split(":")[0] for m in members}
        if len(kinds) < 2:
            continue
        c = members[0]["config"]
        t = c["train"]
        label = (f"{c['model']['model']} x{c['model']['width']:g} on {c['data']['dataset']}, {t['optimizer']} lr "
                 f"{t['lr']:g}, batch {t['batch_size']}, {t['epochs']} epochs ({len(members)} runs)")
        out[label] = [m["run_id"] for m in members]
    return out


def story_rows(runs_dir: str | os.PathLike, run_ids) -> list[dict]:
    """One row per (run, level, variant): rewind, seed, level, density, test accuracy, and for tickets the
    instability barrier at the ticket's own rewind point (None when not measured or not defined)."""
    rows = []
    for run_id in run_ids:
        store = RunStore(runs_dir, run_id)
        try:
            summary = store.summary() or {}
            cfg = RunConfig.from_dict(store.config())
            analyses = store.analyses()
        except LotteryError:  # a damaged run (StoreDamaged) is listed as such by the browser; the story skips it
            continue
        k = own_point(cfg)
        base = {"run_id": run_id, "rewind": cfg.prune.rewind, "rewind_kind": cfg.prune.rewind_point.kind,
                "seed": cfg.seed}
        dense = summary.get("dense")
        if dense:
            rows.append({**base, "variant": "dense", "level": 0, "density": dense["density"],
                         "test_accuracy": dense["test_accuracy"], "barrier": None})
        for variant, records in [("ticket", summary.get("levels") or []),
                                 *((summary.get("controls") or {}).items())]:
            for r in records:
                barrier = None
                a = analyses.get(f"instability-L{r['level']}")
                if variant == "ticket" and a and k is not None and a.get("rewind_points") == [k]:
                    barrier = a["barriers"][0]
                rows.append({**base, "variant": variant, "level": r["level"], "density": r["density"],
                             "test_accuracy": r["test_accuracy"], "barrier": barrier})
    return rows


def dense_instability(runs_dir: str | os.PathLike, run_ids) -> list[dict]:
    """The dense-net instability records (`instability-L0` with more than one rewind point) of the runs."""
    out = []
    for run_id in run_ids:
        store = RunStore(runs_dir, run_id)
        try:
            a = store.analyses().get("instability-L0")
            if a and len(a.get("rewind_points", [])) > 1:
                out.append({**a, "seed": RunConfig.from_dict(store.config()).seed})
        except LotteryError:  # damaged: skipped, as in story_rows
            continue
    return out


__all__ = ["MATCH_MARGIN", "STABLE_THRESHOLD", "dense_instability", "dense_points", "own_point", "run_story", "story_configs",
           "story_groups", "story_rows"]
