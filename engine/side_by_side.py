"""Runs side by side in one process: the seeds of a leaderboard cell train their levels as one computation.

`lottery compare` (local executor, `--batched auto`) runs the seeds of one cell (a method at its densities)
in threads of this process, each an ordinary `engine.runner.run`, so every method works unchanged. Their
trainings meet here (`Rendezvous.train`): once every live run is waiting with a training, the waiting
trainings of one schedule (architecture, data, training settings) train as ONE `engine.batched`
computation, each member ending as it would alone (to float rounding); then every run goes on. A run busy
with anything else (scoring, pruning) is waited for; a training that does not batch (a mask search, a
convolution on CPU) runs by itself under `Rendezvous.solo`: so trainings only ever run one at a time (a batch
or a lone training) and the threads never compete for the cores.

    summaries = run_together(configs, runs_dir, on_event=..., cancel=...)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from . import batched
from .errors import RunCancelled


@dataclass
class _Job:
    model: object
    data: object
    cfg: object
    members: list
    on_eval: object
    cancel: object
    out: list = field(default_factory=list)   # [BatchedResult slice] once trained
    error: BaseException | None = None
    done: bool = False


class Rendezvous:
    """Where the trainings of `live` runs meet (see the module docstring)."""

    def __init__(self, live: int):
        self._live = live
        self._waiting: list[_Job] = []
        self._cv = threading.Condition()
        # a training a run does by itself (one that does not batch: a convolution on CPU, a mask search) holds
        # this, so such trainings run one at a time, and never while a batch trains (a batch trains only once
        # every live run waits in train(), and a run holding this is not waiting)
        self.solo = threading.Lock()

    def train(self, model, data, cfg, members, on_eval=None, cancel=None) -> batched.BatchedResult:
        """Train `members` (engine.batched.Member) beside the other runs' waiting trainings; the result as
        engine.batched.train_batched would return it for `members` alone."""
        job = _Job(model, data, cfg, list(members), on_eval, cancel)
        with self._cv:
            self._waiting.append(job)
            self._fire()
            while not job.done:
                self._cv.wait()
        if job.error is not None:
            raise job.error
        return job.out[0]

    def leave(self) -> None:
        """A run has finished (or failed): stop waiting for it."""
        with self._cv:
            self._live -= 1
            self._fire()

    def _fire(self) -> None:  # with the lock held; trains in the calling thread while every other run waits
        if not self._waiting or len(self._waiting) < self._live:
            return
        jobs, self._waiting = self._waiting, []
        groups: dict[tuple, list[_Job]] = {}
        for job in jobs:
            key = (type(job.model), tuple((n, tuple(v.shape)) for n, v in job.model.state_dict().items()),
                   job.data.fingerprint or id(job.data), job.cfg)
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            _train_group(group)
        self._cv.notify_all()


class _AnyCancel:
    def __init__(self, events):
        self.events = list({id(e): e for e in events if e is not None}.values())  # runs may share one: once

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _train_group(group: list[_Job]) -> None:
    members = [m for job in group for m in job.members]
    owner = [(j, i) for j, job in enumerate(group) for i in range(len(job.members))]

    def on_eval(k, point):
        j, i = owner[k]
        if group[j].on_eval is not None:
            group[j].on_eval(i, point)
    try:
        out = batched.train_batched(group[0].model, group[0].data, group[0].cfg, members, on_eval=on_eval,
                                    cancel=_AnyCancel([job.cancel for job in group]))
    except BaseException as e:  # every run of the batch sees it (a cancel, a failing callback, a bad input)
        for job in group:
            job.error, job.done = e, True
        return
    start = 0
    for job in group:
        k = len(job.members)
        for r in out.results[start:start + k]:  # the runner splits a job's time evenly: the batch's, shared
            r.seconds *= k / len(members)
        job.out.append(batched.BatchedResult(out.results[start:start + k],
                                             {n: w[start:start + k] for n, w in out.weights.items()}))
        job.done = True
        start += k


def run_together(configs: list, runs_dir, *, on_event=None, cancel=None) -> list[dict]:
    """Run `configs` (engine.RunConfig) side by side, their trainings batched; summaries in `configs` order.
    A Ctrl-C cancels every run after its current step (their finished levels are stored) and is re-raised."""
    from .runner import run

    stop = threading.Event()
    cancel_all = _AnyCancel([cancel, stop])
    pool = Rendezvous(len(configs))
    summaries: list = [None] * len(configs)
    errors: list = [None] * len(configs)
    lock = threading.Lock()

    def sink(e):  # one run's events at a time: consumers never see two half-handled events
        if on_event is not None:
            with lock:
                on_event(e)

    def one(i):
        try:
            summaries[i] = run(configs[i], sink, cancel_all, runs_dir=runs_dir, pool=pool)
        except BaseException as e:
            errors[i] = e
        finally:
            pool.leave()

    threads = [threading.Thread(target=one, args=(i,), name=f"lottery-run-{i}") for i in range(len(configs))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    failed = next((e for e in errors if e is not None and not isinstance(e, RunCancelled)), None)
    if failed is not None:
        raise failed
    return summaries
