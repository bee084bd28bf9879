"""LoTA's two-task experiments on a stored `lota` run: `lottery analyze RUN_ID lota-tasks [--other pydoc-modules]`.

Task A is the run's dataset, task B `--other`; both use the run's model, seed, training settings and
--density. Stored as analyses/lota-tasks.json:
- sequential: A then B, LoTA (B's sparse task vector restricted to the complement of A's mask) vs dense
  fine-tuning both times; task A's test accuracy before and after B (forgetting) and B's;
- merge: encoder = base + lam (tau_A + tau_B), lam searched on validation over the same grid for sparse
  (LoTA) and dense task vectors; each task read with its own fine-tuned head.
The work is in engine.methods.lota (`sequential`, `fine_tune`, `merge`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import RunConfig, option, validate
from ..errors import ConfigError
from ..formatting import pct
from ..registry import ANALYSES, AnalysisSpec
from .common import AnalysisProgress, analysable_store, save_analysis


STEPS = 9  # what run_lota_tasks reports progress over: 7 fine-tunes and 2 merges


@dataclass(frozen=True)
class LotaTasksOptions:
    other: str = option("pydoc-modules", "lota-tasks: task B, a text dataset other than the run's")

    def __post_init__(self):
        validate(self)


def run_lota_tasks(runs_dir: str | os.PathLike, run_id: str, options: LotaTasksOptions, on_event=None,
                   cancel=None) -> dict:
    import torch

    from .. import data as data_mod
    from .. import models
    from ..methods import lota

    store = analysable_store(runs_dir, run_id)
    config = RunConfig.from_dict(store.config())
    if not lota.made_by_lota(config):
        raise ConfigError("RUN_ID", run_id, f"is a run of method {config.prune.method}: lota-tasks analyses lota runs")
    if options.other == config.data.dataset:
        raise ConfigError("other", options.other, "must differ from the run's dataset")
    data_a = data_mod.load(config.data)
    try:  # validated (a text task, same tokenizer) and loaded (a text: file that is not there)
        data_b = data_mod.load(config.replace(**{"data.dataset": options.other}).data)
    except ConfigError as e:  # named for the flag the user typed, not the config field behind it
        raise ConfigError("other", options.other, e.allowed) from None
    model_a = models.build(config.model, data_a.input_shape, data_a.num_classes, config.seed)
    model_b = lota.with_encoder(models.build(config.model, data_b.input_shape, data_b.num_classes, config.seed + 1),
                                lota.encoder_state(model_a))  # the same base encoder, B's own head
    density, seed, train = config.prune.density, config.seed, config.train

    # nine steps, reported as each starts: the seven fine-tunes (each a full training, minutes on MiniLM) and the
    # two merges; every fine-tune also stops at its next step on cancel
    steps = [0]

    def progress(what: str) -> None:
        if cancel is not None and cancel.is_set():
            from ..errors import RunCancelled
            raise RunCancelled("cancelled")
        if on_event is not None:
            on_event(AnalysisProgress(run_id, "lota-tasks", steps[0], STEPS, what))
        steps[0] += 1

    def step(phase: str):
        return lambda what: progress(f"{phase}: {what}")

    watch = {"seed": seed, "cancel": cancel}
    with torch.random.fork_rng(devices=[]):
        # task A's dense and LoTA fine-tunes (and task B's dense one, LoTA's calibration) are trained once and
        # shared by both experiments: the same seeded trainings, so the same numbers, in 7 trainings, not 11
        dense_a = lota.fine_tune(model_a, data_a, train, None, on_training=step("task A"), **watch)
        lota_a = lota.fine_tune(model_a, data_a, train, density, calibrated=dense_a.model, on_training=step("task A"),
                                **watch)
        sequential = lota.sequential(model_a, data_a, model_b, data_b, train, density, dense_a=dense_a, lota_a=lota_a,
                                     on_training=step("sequential"), **watch)
        dense_b = lota.fine_tune(model_b, data_b, train, None, on_training=step("task B alone"), **watch)
        progress("merging dense task vectors")
        merge = {"dense": lota.merge(model_a, dense_a.model, data_a, dense_b.model, data_b)}
        lota_b = lota.fine_tune(model_b, data_b, train, density, calibrated=dense_b.model,
                                on_training=step("task B alone"), **watch)
        progress("merging lota task vectors")
        merge["lota"] = lota.merge(model_a, lota_a.model, data_a, lota_b.model, data_b)
    result = {"analysis": "lota-tasks", "run_id": run_id, "task_a": config.data.dataset, "task_b": options.other,
              "density": density, "seed": seed, "sequential": sequential, "merge": merge}
    save_analysis(store, "lota-tasks", result, on_event)
    return result


def format_lota_tasks(name: str, a: dict) -> str:
    lines = [f"{name}: task A {a['task_a']}, task B {a['task_b']}, LoTA density {a['density']:.0%}"]
    for kind in ("dense", "lota"):
        s, m = a["sequential"][kind], a["merge"][kind]
        lines.append(f"  {kind:5s} A before B {pct(s['a_before']).strip()}, after {pct(s['a_after']).strip()} "
                     f"(forgetting {100 * s['forgetting']:+.2f}), B {pct(s['b']).strip()}; merged (scale "
                     f"{m['scale']}) A {pct(m['a']).strip()}, B {pct(m['b']).strip()}")
    return "\n".join(lines)


ANALYSES.register("lota-tasks", "LoTA on two tasks: forgetting in sequential training and merging of task vectors, "
                  "vs dense (lota runs)")(
    AnalysisSpec(format_lota_tasks, options=LotaTasksOptions,
                 compute=lambda runs_dir, run_id, o, on_event=None, cancel=None: run_lota_tasks(
                     runs_dir, run_id, o, on_event=on_event, cancel=cancel)))
