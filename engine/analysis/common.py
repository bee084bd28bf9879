"""What every analysis of a stored run needs: reopen the run (config, data, model, masks, weights) and
store its result next to the run's levels.

    RUNS_DIR/RUN_ID/analyses/NAME.json   written atomically by the store (RunStore.save_analysis, which
                                         also lists them); the explorer and `lottery show` read them

Only runs of registry models can be reopened: a user's own `nn.Module` is not in the store (nothing is
pickled), so analyses that need to rebuild the model say so instead of guessing.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from .. import data as data_mod
from .. import models
from ..config import RunConfig
from ..errors import ConfigError
from ..events import AnalysisProgress, AnalysisReady  # noqa: F401  (re-exported)
from ..masks import Mask, prunable
from ..seeding import derive_seed
from ..store import RunStore, load_tensors
from ..zoo import refuse_zoo


def refuse_own_module(run_id: str, stored: dict) -> None:
    """An analysis that rebuilds a run's model cannot rebuild a user's own module (the store keeps its weights,
    not its code): refuse (exit 2) before anything is computed or stored."""
    if "custom_model" in stored:
        raise ConfigError("RUN_ID", run_id, f"it trained a user's own module ({stored['custom_model']}), which the "
                          "store does not keep; this analysis needs to rebuild the model")


def no_controls(method: str) -> str:
    """Why a run of `method` (MethodSpec.trains_controls False) has no trained control to compare a ticket with."""
    return (f"{method} trains no controls beside its tickets (a strong ticket's weights are never trained; an "
            "adaptation method's tickets compare with the dense fine-tune): its comparison is the run's dense network")


def refuse_foreign_masks(run_id: str, method: str, mask_names, model: nn.Module, analysis: str) -> None:
    """An analysis that reads a ticket's mask as one over the model's prunable Linear/Conv weights refuses a run
    whose tickets mask other tensors (ks-lottery: token-embedding rows; partial-lora: adapter entries, merged
    into plain weights when stored) with one line, before anything is computed or stored."""
    weights = set(prunable(model))
    foreign = sorted(n for n in mask_names if n not in weights)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError("RUN_ID", run_id, f"its {method} tickets mask {foreign[0]}{more}, not the model's prunable "
                          f"Linear weights, which {analysis} reads")


def analysable_store(runs_dir: str | os.PathLike, run_id: str) -> RunStore:
    """The store of a run an analysis can reopen, else a one-line refusal (exit 2) before anything is computed or
    stored: no such run, a model zoo (members, no ticket levels, a config of another shape), a user's own module."""
    store = RunStore(runs_dir, run_id)
    if not store.exists():
        raise ConfigError("RUN_ID", run_id, f"no such run in {store.root}")
    refuse_zoo(store, f"`lottery show {run_id}` summarises it, engine.zoo.zoo_barriers compares its members")
    refuse_own_module(run_id, store.config())
    return store


class StoredRun:
    """A finished (or partly finished) run reopened for analysis."""

    def __init__(self, runs_dir: str | os.PathLike, run: RunConfig | str, device: str | torch.device | None = None):
        run_id = run.run_id if isinstance(run, RunConfig) else run
        self.store = analysable_store(runs_dir, run_id)
        self.config = run if isinstance(run, RunConfig) else RunConfig.from_dict(self.store.config())
        from ..runner import resolve_device  # late: the runner imports the methods, which may import us
        self.device = torch.device(device) if device is not None else resolve_device(self.config.device)

    @functools.cached_property
    def data(self) -> data_mod.Dataset:
        data = data_mod.load(self.config.data, self.device)
        self.store.check_data(self.config.data.dataset, data.fingerprint, record=False)  # the data it trained on
        return data

    def make_model(self) -> nn.Module:
        """The run's architecture with its initial weights, on the run's device."""
        cfg = self.config
        model = models.build(cfg.model, self.data.input_shape, self.data.num_classes, cfg.seed)
        return model.to(self.device)

    def init_weights(self) -> dict[str, torch.Tensor]:
        return load_tensors(self.store.weights_path("init"), self.device)

    def levels(self, variant: str = "ticket") -> list[int]:
        """Completed levels (0 = the dense net)."""
        return [r["level"] for r in self.store.records(variant)]

    def ticket(self, level: int | None = None, variant: str = "ticket") -> tuple[nn.Module, Mask]:
        """(the model holding `level`'s trained weights, its mask); default: the last completed level."""
        done = self.levels(variant)
        mask, weights, _ = self.level(done[-1] if level is None and done else level, variant)
        model = self.make_model()
        model.load_state_dict(weights)
        return model, mask

    def level(self, level: int, variant: str = "ticket") -> tuple[Mask, dict[str, torch.Tensor], dict]:
        """(mask, trained weights, record) of a completed level."""
        record = self.store.level_record(variant, level)
        if record is None:
            raise ConfigError("--level", level, f"run {self.store.run_id} has no completed {variant} level {level} "
                              f"(completed: {self.levels(variant)})")
        mask, weights = self.store.load_level(variant, level, self.device)
        return mask, weights, record


def dense_seed(config: RunConfig) -> int:
    """The data-order seed the runner gives a run's dense training (variant "ticket", level 0), so
    analyses that replay it follow the run's own trajectory."""
    return derive_seed(config.seed, "train", "ticket", 0)


def save_analysis(store: RunStore, name: str, result: dict, on_event=None) -> Path:
    """Store `result` as the run's analysis `name` (RunStore.save_analysis) and announce it."""
    path = store.save_analysis(name, result)
    if on_event is not None:
        on_event(AnalysisReady(store.run_id, name, str(path)))
    return path
