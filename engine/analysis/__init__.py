"""Analyses of tickets and runs: why a ticket works, not only whether it does.

- interpolation: loss/error along the line between two weight sets, error barriers (BatchNorm-aware);
- instability: barrier between two differently-ordered trainings from a run's rewind point W_k, per k;
- persistence: neural persistence (Rieck et al. 2019) of every layer and level, with gudhi;
- earlybird: the early-bird tracker (mask distances over epochs) and its pruning rules;
- sanity: every registered control trained beside chosen ticket levels, as accuracy deltas.

Results of stored runs go to RUN_DIR/analyses/NAME.json (`common.save_analysis`).
"""
from .common import AnalysisProgress, AnalysisReady, StoredRun, analysis_path, save_analysis
from .earlybird import (EarlyBirdFound, EarlyBirdTracker, bn_l1_penalty, channel_rule, magnitude_rule,
                        mask_distance, run_earlybird)
from .instability import DEFAULT_REWIND_POINTS, STABLE_THRESHOLD, instability, parse_rewind_points, rewind_weights
from .interpolation import error_barrier, interpolate, loss_barrier, recompute_bn_stats, run_barrier
from .persistence import layer_persistence, network_persistence, run_persistence
from .sanity import run_sanity

ANALYSES = ("barrier", "instability", "persistence", "earlybird", "sanity")


def analyze(name: str, runs_dir, run_id: str, *, level: int | None = None, against: str | None = None,
            points: int = 31, rewind_points=DEFAULT_REWIND_POINTS, density: float | None = None, eps: float = 0.1,
            on_event=None, cancel=None) -> dict:
    """Run one of ANALYSES on a stored run and store it (the CLI's and the explorer's one entry point)."""
    if name == "barrier":
        return run_barrier(runs_dir, run_id, level, against, points, on_event=on_event)
    if name == "instability":
        return instability(run_id, runs_dir, rewind_points, level or 0, points, on_event=on_event, cancel=cancel)
    if name == "persistence":
        return run_persistence(runs_dir, run_id, on_event=on_event)
    if name == "earlybird":
        return run_earlybird(runs_dir, run_id, density, eps=eps, on_event=on_event, cancel=cancel)
    if name == "sanity":
        return run_sanity(runs_dir, run_id, None if level is None else [level], on_event=on_event, cancel=cancel)
    from ..errors import ConfigError
    raise ConfigError("analysis", name, f"allowed: {', '.join(ANALYSES)}")


__all__ = ["ANALYSES", "analyze", "AnalysisProgress", "AnalysisReady", "StoredRun", "analysis_path", "save_analysis",
           "EarlyBirdFound", "EarlyBirdTracker", "bn_l1_penalty", "channel_rule", "magnitude_rule",
           "mask_distance", "run_earlybird", "DEFAULT_REWIND_POINTS", "STABLE_THRESHOLD", "instability", "parse_rewind_points", "rewind_weights",
           "interpolate", "run_barrier", "error_barrier", "loss_barrier", "recompute_bn_stats", "layer_persistence",
           "network_persistence", "run_persistence", "run_sanity"]
