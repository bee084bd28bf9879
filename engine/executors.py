"""Where the independent runs of a sweep train: in this process, in local worker processes, or on Dask.

`run_all(configs, runs_dir, executor=...)` trains each config with `engine.runner.run` and returns the
summaries in order. Every executor is a `concurrent.futures.Executor`:

    local      this process, one run after another (the default; events and cancel as for one run)
    processes  a ProcessPoolExecutor of `workers` processes on this machine
    dask       `distributed.Client(scheduler).get_executor()`, or a LocalCluster of `workers` worker
               processes when no scheduler address is given (its dashboard link goes to `on_dashboard`)

The run store is the one place results land: a worker writes its run's folder itself, so every worker must
see the same `runs_dir` (one machine, or a shared file system on a real cluster). A run id is the hash of
its config, so a task that runs twice (a worker killed mid-run and its task retried) resumes the same
folder: the store's lock is taken over from the dead process, finished levels are reused, and every file is
written atomically, so nothing is duplicated or half-written.

Retries: Dask's scheduler reschedules the task of a worker that died (up to its `allowed-failures`, 3 by
default, then the task fails with KilledWorker). A process pool cannot: one dead worker breaks the whole
`ProcessPoolExecutor` (every pending future fails with BrokenProcessPool and the other workers are
terminated), so `run_all` starts a fresh pool and resubmits every run not yet finished, up to the same
`RETRIES` times; the runs the broken pool interrupted resume from the store.

Progress: workers send each run's events through a queue (a multiprocessing manager's, or a
`distributed.Queue`) that this process drains into `on_event`. Cancel: queued tasks are cancelled; running
ones see a shared flag (a manager Event, or a `distributed.Event`), stop after their current step and store
themselves as cancelled, as a run cancelled in the app does.
"""
from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, wait

from .errors import LotteryError

EXECUTORS = ("local", "processes", "dask")
RETRIES = 3  # fresh process pools after a worker died (Dask's distributed.scheduler.allowed-failures default)


class _Flag:
    """A shared cancel flag read at most every `every` seconds (run() asks once per training step; asking a
    manager or a Dask scheduler that often would cost more than the step)."""

    def __init__(self, shared, every: float = 0.5):
        self.shared, self.every = shared, every
        self._next, self._set = 0.0, False

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self._set and now >= self._next:
            self._next = now + self.every
            self._set = bool(self.shared.is_set())
        return self._set


def _shared(obj, kind):
    """A Dask queue or event travels to a task by name and is opened on the worker: the objects themselves
    must never be pickled, because unpickling one on the client's event loop (a task's arguments coming back
    when its worker died) blocks that loop for good."""
    if isinstance(obj, str):
        import distributed

        return distributed.Queue(obj) if kind == "queue" else distributed.Event(obj)
    return obj


def run_task(config, runs_dir: str, events, cancel) -> dict:
    """One run on a worker (module level: process pools and Dask workers import it by name); None when the sweep
    was cancelled before it started."""
    from .runner import run

    events, cancel = _shared(events, "queue"), _shared(cancel, "event")
    if cancel is not None and cancel.is_set():  # the sweep was cancelled while this task was queued: never started
        return None
    try:
        return run(config, events.put if events is not None else None,
                   _Flag(cancel) if cancel is not None else None, runs_dir=runs_dir)
    except LotteryError as e:  # a plain LotteryError pickles back whatever the subclass's arguments
        raise LotteryError(str(e)) from None


@contextlib.contextmanager
def _spawned_ignoring_ctrl_c():
    """Worker processes started inside ignore SIGINT for life: a terminal's Ctrl-C reaches the whole foreground
    process group, and each worker printed its own KeyboardInterrupt traceback (tens of lines from Dask's). The
    command stops them instead, through the sweep's cancel flag, and says in one line what was kept.

    An ignored SIGINT is inherited across exec, and Python then installs no KeyboardInterrupt handler; a blocked one
    is not enough (Dask's nannies start workers from threads that do not block it). A Ctrl-C typed inside is lost:
    milliseconds for a process pool, the few seconds a LocalCluster takes to start (press it again once its
    dashboard link shows). Only the main thread may change a handler: in the app's job thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@contextlib.contextmanager
def _pool(executor: str, workers: int, scheduler: str, on_dashboard):
    """(make_pool, event queue, shared cancel flag, how tasks are handed the two) for `executor`; every
    `make_pool()` is an executor the caller shuts down, the rest is shut down on exit."""
    if executor == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
        threads = max(1, (os.cpu_count() or 1) // workers)  # the cores shared out, as Dask's nanny does
        with context.Manager() as manager:
            events, flag = manager.Queue(), manager.Event()
            yield (lambda: ProcessPoolExecutor(workers, mp_context=context, initializer=_set_threads,
                                               initargs=(threads,))), events, flag, (events, flag)
        return
    try:
        import distributed
    except ImportError as e:
        raise LotteryError(f"--executor dask needs the dask[distributed] package ({e})") from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout=30))
            except (OSError, TimeoutError) as e:
                raise LotteryError(f"--scheduler: cannot reach a Dask scheduler at {scheduler!r} ({e})") from None
        else:
            with _spawned_ignoring_ctrl_c():  # (a Ctrl-C stops the sweep through its cancel flag, not them)
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"))
                client = stack.enter_context(distributed.Client(cluster))
        if on_dashboard and client.dashboard_link:
            on_dashboard(client.dashboard_link)
        name = f"lottery-{uuid.uuid4().hex}"
        events, flag = distributed.Queue(f"{name}-events", client=client), distributed.Event(f"{name}-cancel", client)
        # same config twice is still two tasks (a retry resumes it); tasks open the queue and flag by name
        yield (lambda: client.get_executor(pure=False)), events, flag, (events.name, flag.name)


def _drain(events, on_event) -> None:
    """Hand every event waiting in `events` to `on_event`."""
    if hasattr(events, "client"):  # a distributed.Queue: everything there in one round trip
        batch = events.get(batch=True) if events.qsize() else []
    else:
        batch = []
        with contextlib.suppress(queue_mod.Empty):
            while True:
                batch.append(events.get_nowait())
    for e in batch:
        if on_event is not None:
            on_event(e)


def run_all(configs: list, runs_dir, *, executor: str = "local", workers: int = 2, scheduler: str = "",
            on_event=None, cancel=None, on_dashboard=None) -> list[dict]:
    """Train every config (or resume it from the store); summaries in the order of `configs`. Stops early
    (returning fewer summaries, the last not completed) when cancelled."""
    from .runner import run

    if executor not in EXECUTORS:
        raise LotteryError(f"--executor: {executor!r} is not valid; one of {', '.join(EXECUTORS)}")
    if executor == "local":
        summaries = []
        for config in configs:
            summaries.append(run(config, on_event, cancel, runs_dir=runs_dir))
            if summaries[-1]["status"] != "completed":
                break
        return summaries
    with _pool(executor, workers, scheduler, on_dashboard) as (make_pool, events, flag, for_tasks):
        results: dict[int, object] = {}  # config index -> its finished future
        for _ in range(RETRIES + 1):
            todo = [i for i in range(len(configs)) if i not in results]
            pool = make_pool()
            try:
                with _spawned_ignoring_ctrl_c():  # a process pool starts its workers as tasks are submitted
                    futures = {pool.submit(run_task, configs[i], str(runs_dir), *for_tasks): i for i in todo}
                broken = _wait(futures, events, flag, on_event, cancel, take_back=executor == "processes")
            finally:  # a process pool is waited for (its runs store themselves); Dask's cancels what is left
                pool.shutdown(wait=executor == "processes")
            results.update({i: f for f, i in futures.items() if f.done() and not _broke(f)})
            if not broken or (cancel is not None and cancel.is_set()):
                break
        else:
            running = sorted({configs[i].run_id for f, i in futures.items() if _broke(f)})
            raise LotteryError(f"a worker process died mid-run {RETRIES + 1} times (killed, or out of memory?) "
                               f"while training {', '.join(running)}; finished runs are stored, run the same "
                               "sweep again to resume")
        _drain(events, on_event)
    summaries = []
    for i in range(len(configs)):
        f = results.get(i)
        if f is None or f.cancelled() or f.result() is None:  # (None: queued when the sweep was cancelled)
            break
        summaries.append(f.result())
        if summaries[-1]["status"] != "completed":
            break
    return summaries


def _broke(future) -> bool:
    """Whether `future` failed because its process pool broke (a worker died), not because of its run."""
    from concurrent.futures.process import BrokenProcessPool

    return future.done() and not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)


def _wait(futures: dict, events, flag, on_event, cancel, take_back: bool) -> bool:
    """Wait for every future, streaming events and passing on a cancel; raise the first run's error. True when
    a worker died and broke the pool (its unfinished runs are to be resubmitted to a fresh one). `take_back`: a
    future's cancel() takes back a task not yet started and leaves a running one (a process pool's); a Dask future's
    stops its task mid-run, the run left 'failed' or 'running' in the store, so Dask's are never cancelled: a task
    sees the flag before it starts (run_task) and a running one stops after its current step."""
    pending = set(futures)

    def stop():
        flag.set()  # running tasks stop after their current step
        if take_back:
            for f in pending:
                f.cancel()  # queued ones never start

    try:
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(events, on_event)
            if cancel is not None and cancel.is_set() and not flag.is_set():
                stop()
            if any(_broke(f) for f in futures):
                wait(pending, timeout=60)  # the pool fails the rest at once
                return True
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
            if failed is not None:
                stop()
                raise failed.exception()
    except KeyboardInterrupt:
        stop()
        wait([f for f in pending if not f.cancelled()], timeout=60)  # let running runs store themselves
        raise
    return False
