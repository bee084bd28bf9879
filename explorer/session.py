"""A run launched from the explorer: the engine on a worker thread, its events in a queue.

The worker thread only puts events on a queue; `drain()` — called from the UI's periodic callback on
the event loop, or directly in tests and notebooks — turns them into state (status, progress, the live
learning curve). Panel objects are therefore only ever touched from the event loop.
"""
from __future__ import annotations

import queue
import threading

import param

import engine
from engine import events as ev
from engine.structured import imp_levels


class RunSession(param.Parameterized):
    """State of one launched run, updated by `drain()`."""

    run_id = param.String(default="")
    status = param.Selector(default="idle", objects=["idle", "starting", "running", "completed", "cancelled",
                                                     "failed"])
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
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._trainings, self._iterations, self._done_iters, self._base, self._search = 1, 1, 0, 0, 0

    # ------------------------------------------------------------ worker side
    def start(self) -> None:
        self.status, self.message = "starting", f"starting {self.run_id}"
        self._thread = threading.Thread(target=self._work, name=f"run-{self.run_id}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            engine.run(self.config, on_event=self._events.put, cancel=self._cancel, runs_dir=self.runs_dir)
        except engine.LotteryError as e:  # bad settings found late, a lock, missing data: show it
            self._events.put(ev.RunFailed(self.run_id, str(e)))
        except Exception as e:  # the engine already stored status "failed"; the app must keep working
            self._events.put(ev.RunFailed(self.run_id, f"{type(e).__name__}: {e}"))

    def cancel(self) -> None:
        self._cancel.set()
        if self.status in ("starting", "running"):
            self.message = "cancelling after the current step..."

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------ event-loop side
    def drain(self) -> int:
        """Apply all queued events; returns how many were applied."""
        n = 0
        curve = None
        while True:
            try:
                e = self._events.get_nowait()
            except queue.Empty:
                break
            n += 1
            curve = self._apply(e, curve)
        if curve is not None:
            self.curve = curve  # one param event per drain, not per evaluation
        return n

    def _apply(self, e: ev.Event, curve):
        if isinstance(e, ev.RunStarted):
            self.status = "running"
            self._trainings, self._iterations, self._search = e.trainings, e.iterations, e.search_steps
            self._done_iters = 0  # stored levels are counted as their LevelDone(reused) events arrive
        elif isinstance(e, ev.TrainingStarted):
            self.level, self.variant = e.level, e.variant
            self._done_iters += e.start_step
            self._base = self._done_iters - e.start_step
            curve = []
        elif isinstance(e, ev.Evaluated):
            curve = list(self.curve if curve is None else curve)
            curve.append({"iteration": e.iteration, "train_loss": e.train_loss, "val_loss": e.val_loss,
                          "val_accuracy": e.val_accuracy, "test_accuracy": e.test_accuracy})
            self._done_iters = self._base + e.iteration
            self.message = (f"level {e.level}/{self._levels()} {e.variant}: iteration {e.iteration}, "
                            f"epoch {e.epoch:.0f}, val acc {e.val_accuracy:.3f}")
        elif isinstance(e, ev.LevelDone):
            self._done_iters = self._done_iters + self._iterations if e.reused else self._base + self._iterations
            self.levels_done += 1
        elif isinstance(e, ev.RunFinished):
            self.summary, self.status = e.summary, "completed"
            self._done_iters = self._trainings * self._iterations + self._search
            self.message = f"{self.run_id} completed"
        elif isinstance(e, ev.RunCancelled):
            self.status = "cancelled"
            self.message = f"{self.run_id} cancelled; {e.completed_levels} level(s) kept in the store"
        elif isinstance(e, ev.RunFailed):
            if self.status == "failed":  # the engine reported it already; _work's echo adds nothing
                return curve
            self.status, self.error = "failed", e.error
            self.message = f"{self.run_id} failed: {e.error}"
        total = max(1, self._trainings * self._iterations + self._search)
        self.progress = min(100.0, 100.0 * self._done_iters / total)
        return curve

    def _levels(self) -> int:
        return imp_levels(self.config.prune) if self.config.prune.method == "imp" else 1
