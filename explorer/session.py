"""A run launched from the explorer: the engine on a background job (explorer.jobs), its events turned
into state on the event loop.

The job's worker only reports events; `drain()` — called from the UI's periodic callback on the event loop,
or directly in tests and notebooks — turns them into state (status, progress, the live learning curve).
Panel objects are therefore only ever touched from the event loop.
"""
from __future__ import annotations

import concurrent.futures as cf

import param

import engine
from engine import events as ev
from engine.progress import Progress
from engine.registry import METHODS

from .jobs import Job, error_message

DONE = ("completed", "cancelled", "failed")


class RunSession(param.Parameterized):
    """State of one launched run, updated by `drain()`."""

    run_id = param.String(default="")
    status = param.Selector(default="idle", objects=["idle", "starting", "running", *DONE])
    message = param.String(default="", doc="what the user should read now: progress or the error")
    error = param.String(default="")
    progress = param.Number(default=0.0, bounds=(0, 100))
    level = param.Integer(default=0)
    variant = param.String(default="")
    levels_done = param.Integer(default=0, doc="bumped whenever a level finishes: views re-read the store")
    curve = param.List(default=[], doc="evaluation points of the training in progress")
    summary = param.Dict(default=None, allow_None=True)

    def __init__(self, config: engine.RunConfig, runs_dir, **params):
        super().__init__(run_id=config.run_id, **params)
        self.config, self.runs_dir = config, runs_dir
        self.tracker = Progress()  # the same accounting as the CLI's bar
        self.job: Job | None = None
        self._trained = False  # whether this launch trained anything (a stored run's does not)

    # ------------------------------------------------------------ worker side
    def start(self) -> None:
        self.status, self.message = "starting", f"starting {self.run_id}"
        self.job = Job(lambda job: engine.run(self.config, on_event=job.emit, cancel=job.cancelled,
                                              runs_dir=self.runs_dir), name=f"run-{self.run_id}")

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
        if self.status in ("starting", "running"):
            self.message = "cancelling after the current step..."

    @property
    def alive(self) -> bool:
        return self.job is not None and self.job.running

    def join(self, timeout: float | None = None) -> None:
        if self.job is not None:
            self.job.wait(timeout)

    # ------------------------------------------------------------ event-loop side
    def drain(self) -> int:
        """Apply all reported events; returns how many were applied."""
        if self.job is None:
            return 0
        events, finished = self.job.poll()
        curve = None
        for e in events:
            curve = self._apply(e, curve)
        if finished and self.status not in DONE:  # it ended without saying so: refused before it started
            error = self.job.error
            if isinstance(error, cf.CancelledError):
                curve = self._apply(ev.RunStopped(self.run_id, 0), curve)
            else:
                curve = self._apply(ev.RunFailed(self.run_id, error_message(error) if error else "ended early"),
                                    curve)
            events.append(None)
        if curve is not None:
            self.curve = curve  # one param event per drain, not per evaluation
        return len(events)

    def _apply(self, e: ev.Event, curve):
        self.tracker.update(e)
        if isinstance(e, ev.RunStarted):
            self.status = "running"
        elif isinstance(e, ev.TrainingStarted):
            self.level, self.variant, self._trained = e.level, e.variant, True
            curve = []
        elif isinstance(e, ev.Evaluated):
            curve = list(self.curve if curve is None else curve)
            curve.append({"iteration": e.iteration, "train_loss": e.train_loss, "val_loss": e.val_loss,
                          "val_accuracy": e.val_accuracy, "test_accuracy": e.test_accuracy})
            self.message = (f"level {e.level}/{self._levels()} {e.variant}: iteration {e.iteration}, "
                            f"epoch {e.epoch:.0f}, val acc {e.val_accuracy:.1%}")
        elif isinstance(e, ev.LevelDone):
            self.levels_done += 1
        elif isinstance(e, ev.RunFinished):
            self.summary, self.status = e.summary, "completed"
            self.message = f"{self.run_id} completed"
            if not self._trained:  # stored already: nothing trained, no evaluations came
                curve = self._stored_curve()
                self.message = f"{self.run_id} was stored already (nothing trained): its last ticket's training"
        elif isinstance(e, ev.RunStopped):
            self.status = "cancelled"
            self.message = f"{self.run_id} cancelled; {e.completed_levels} level(s) kept in the store"
        elif isinstance(e, ev.RunFailed) and self.status != "failed":  # the engine may have reported it already
            self.status, self.error = "failed", e.error
            self.message = f"{self.run_id} failed: {e.error}"
        self.progress = 100.0 * self.tracker.fraction
        return curve

    def _stored_curve(self) -> list[dict]:
        """The evaluations of the stored run's last ticket training (Live draws them as it drew them live)."""
        try:
            evals = [m for m in engine.RunStore(self.runs_dir, self.run_id).metrics()
                     if m.get("type") == "eval" and m.get("variant") == "ticket"]
        except (OSError, engine.LotteryError):  # deleted or damaged since: nothing to draw
            return []
        last = max((m.get("level", 0) for m in evals), default=0)
        keys = ("iteration", "train_loss", "val_loss", "val_accuracy", "test_accuracy")
        return [{k: m.get(k) for k in keys} for m in evals if m.get("level", 0) == last]

    def _levels(self) -> int:
        return METHODS.get(self.config.prune.method, "prune.method").levels(self.config)
