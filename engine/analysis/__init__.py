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
from .instability import DEFAULT_REWIND_POINTS, STABLE_THRESHOLD, instability, rewind_weights
from .interpolation import error_barrier, interpolate, loss_barrier, recompute_bn_stats, run_barrier
from .persistence import layer_persistence, network_persistence, run_persistence
from .sanity import run_sanity

__all__ = ["AnalysisProgress", "AnalysisReady", "StoredRun", "analysis_path", "save_analysis",
           "EarlyBirdFound", "EarlyBirdTracker", "bn_l1_penalty", "channel_rule", "magnitude_rule",
           "mask_distance", "run_earlybird", "DEFAULT_REWIND_POINTS", "STABLE_THRESHOLD", "instability", "rewind_weights",
           "interpolate", "run_barrier", "error_barrier", "loss_barrier", "recompute_bn_stats", "layer_persistence",
           "network_persistence", "run_persistence", "run_sanity"]
