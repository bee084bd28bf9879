"""Analyses of tickets and runs: why a ticket works, not only whether it does.

- interpolation: loss/error along the line between two weight sets, error barriers (BatchNorm-aware);
- instability: barrier between two differently-ordered trainings from a run's rewind point W_k, per k;
- persistence: neural persistence (Rieck et al. 2019) of every layer and level, with gudhi;
- earlybird_tracker: the early-bird tracker (mask distances over epochs), its pruning rules, and the
  earlybird-replay analysis;
- sanity: every registered control trained beside chosen ticket levels, as accuracy deltas.

Each module registers its analysis (`engine.registry.ANALYSES`: options, compute, text format); every
module of this package is imported on the registry's first lookup, so adding one = a module here (+ its
plot in the explorer). Results of stored runs go to
RUN_DIR/analyses/NAME.json (`RunStore.save_analysis`).
"""
import importlib
import pkgutil
import re

from ..errors import ConfigError
from ..registry import ANALYSES
from ..settings import build
from . import lota_tasks  # noqa: F401  (registers lota-tasks: LoTA's forgetting and merging)
from .common import AnalysisProgress, AnalysisReady, StoredRun, save_analysis
from .earlybird_tracker import (EarlyBirdFound, EarlyBirdTracker, bn_l1_penalty, channel_rule, magnitude_rule,
                        mask_distance, run_earlybird)
from .instability import DEFAULT_REWIND_POINTS, STABLE_THRESHOLD, instability, parse_rewind_points, rewind_weights
from .interpolation import error_barrier, interpolate, loss_barrier, recompute_bn_stats, run_barrier
from .persistence import layer_persistence, network_persistence, run_persistence
from .sanity import run_sanity

for _module in pkgutil.iter_modules(__path__):  # every module registers its analysis: a new one needs no line here
    importlib.import_module(f"{__name__}.{_module.name}")


def computable() -> list[str]:
    """The analyses `lottery analyze` and the app offer (records only methods write are left out)."""
    return [name for name, spec in ANALYSES.items() if spec.compute is not None]


def analyze(name: str, runs_dir, run_id: str, options=None, *, on_event=None, cancel=None, **values) -> dict:
    """Run the analysis `name` on a stored run and store it (the CLI's and the explorer's one entry point).

    `options` is the analysis's options dataclass, or give its fields as keywords (`level=2`); keywords that
    are not its fields are ignored, so one form may pass the same values to every analysis."""
    if name not in computable():
        raise ConfigError("analysis", name, f"allowed: {', '.join(computable())}")
    spec = ANALYSES.get(name, "analysis")
    if options is None and spec.options is not None:
        fields = {s for s in spec.options.__dataclass_fields__}
        options = build(spec.options, {k: v for k, v in values.items() if k in fields and v is not None})
    try:
        return spec.compute(runs_dir, run_id, options, on_event=on_event, cancel=cancel)
    except ConfigError as e:
        if e.field != "RUN_ID" or re.search(rf"\b{re.escape(name)}\b", e.allowed):  # (not "zoo_barriers")
            raise
        # a refusal of this run (a zoo, a method the analysis does not apply to): say which analysis refused it
        raise ConfigError(e.field, e.value, f"{name} cannot analyse it: {e.allowed}") from None


__all__ = ["analyze", "computable", "AnalysisProgress", "AnalysisReady", "StoredRun", "save_analysis",
           "EarlyBirdFound", "EarlyBirdTracker", "bn_l1_penalty", "channel_rule", "magnitude_rule",
           "mask_distance", "run_earlybird", "DEFAULT_REWIND_POINTS", "STABLE_THRESHOLD", "instability",
           "parse_rewind_points", "rewind_weights", "interpolate", "run_barrier", "error_barrier", "loss_barrier",
           "recompute_bn_stats", "layer_persistence", "network_persistence", "run_persistence", "run_sanity"]
