"""Typed progress events a run pushes to its sink (`on_event`). The run store is the durable copy.

Events are small frozen dataclasses; `kind` names them for JSON consumers (`to_dict`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Event:
    run_id: str

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    method: str
    trainings: int            # how many trainings the run will do (dense + levels x (1 + controls) + the
    #                           method's own_trainings)
    iterations: int           # iterations of one full training
    completed: int            # trainings already in the store (resumed run)
    search_steps: int = 0     # steps of a mask search (cs, cts) before the ticket's training


@dataclass(frozen=True)
class TrainingStarted(Event):
    level: int
    variant: str              # "ticket" or a control name
    density: float
    start_step: int
    total_steps: int


@dataclass(frozen=True)
class Evaluated(Event):
    level: int
    variant: str
    iteration: int
    epoch: float
    train_loss: float
    val_loss: float
    val_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class LevelDone(Event):
    level: int
    variant: str
    record: dict              # the level's row of the summary
    reused: bool              # True when it was already in the store


@dataclass(frozen=True)
class RunFinished(Event):
    summary: dict


@dataclass(frozen=True)
class RunFailed(Event):
    error: str


@dataclass(frozen=True)
class RunStopped(Event):
    """The run stopped because it was cancelled (errors.RunCancelled); its completed levels are kept."""
    completed_levels: int


@dataclass(frozen=True)
class AnalysisProgress(Event):
    """One step of a long analysis (e.g. one rewind point of instability) is done."""
    analysis: str
    done: int
    total: int
    message: str


@dataclass(frozen=True)
class AnalysisReady(Event):
    """An analysis finished and was stored at `path` (RUN_DIR/analyses/NAME.json)."""
    analysis: str
    path: str


Sink = Optional[Callable[[Event], None]]
