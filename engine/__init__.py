"""Lottery Ticket Explorer engine: configs, data, models, masks, training, methods, run store.

    import engine
    summary = engine.run(engine.RunConfig(), on_event=print)

The engine never imports a UI library; the explorer reads what it writes and emits.
"""
from . import methods, models  # noqa: F401  (fill the registries)
from .config import DataConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from .errors import ConfigError, DataUnavailable, LotteryError, RunCancelled
from .runner import DEFAULT_RUNS_DIR, run
from .store import RunStore, list_runs

__all__ = ["run", "RunConfig", "DataConfig", "ModelConfig", "TrainConfig", "PruneConfig", "ConfigError",
           "DataUnavailable", "LotteryError", "RunCancelled", "RunStore", "list_runs", "DEFAULT_RUNS_DIR"]
