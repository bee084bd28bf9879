"""Lottery Ticket Explorer engine: configs, data, models, masks, training, methods, run store.

    import engine
    summary = engine.run(engine.RunConfig(), on_event=print)

The engine never imports a UI library; the explorer reads what it writes and emits.

The names below are imported on first use (PEP 562), so that reading stored runs (`engine.store`,
`engine.config`) does not import torch: the explorer's first page shows stored runs without waiting for it.
"""
import importlib

# public name -> the submodule that defines it
_EXPORTS = {"run": "runner", "DEFAULT_RUNS_DIR": "runner",
            "RunConfig": "config", "DataConfig": "config", "ModelConfig": "config", "TrainConfig": "config",
            "PruneConfig": "config",
            "ConfigError": "errors", "DataUnavailable": "errors", "LotteryError": "errors", "RunCancelled": "errors",
            "RunStore": "store", "list_runs": "store"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:  # `engine.masks` and the like without importing them first, as when this file imported everything
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
