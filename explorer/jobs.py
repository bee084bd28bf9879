"""Background work for the app: one helper for every tab that runs something long (a run, an analysis, a
comparison, a probe).

    job = Job(lambda job: engine.run(config, on_event=job.emit, cancel=job.cancelled), name="run")
    ...
    events, finished = job.poll()    # on the event loop, from the app's periodic callback
    if finished:
        job.error or job.result()

The work runs on a worker thread and only ever puts events on the job's queue; `poll()`, called on the
event loop, hands them over, so Panel objects are only touched from the event loop. `cancel()` sets the
event the work watches (the engine's `cancel=`); the work stops at its next check and its stored results
stay. By default each job has its own daemon thread (two pages' runs never queue behind each other, and a
long one does not keep the server from stopping); `executor=` puts it in a shared queue instead (one probe
at a time, so timings do not compete).
"""
from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import traceback
from typing import Any, Callable


class Job:
    """`work(job)` on a worker; its events, its cancel flag, its end, read from the event loop."""

    def __init__(self, work: Callable[["Job"], Any], *, name: str, executor: cf.Executor | None = None):
        self.name = name
        self.cancelled = threading.Event()  # the work's `cancel=`: set by cancel()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        if executor is not None:
            self.future = executor.submit(self._run, work)
        else:
            self.future = cf.Future()
            threading.Thread(target=self._in_thread, args=(work,), name=name, daemon=True).start()

    # ------------------------------------------------------------ worker side
    def emit(self, event) -> None:
        """Report an event (the work's `on_event=`); any object will do."""
        self._events.put(event)

    def _run(self, work):
        try:
            return work(self)
        except Exception as e:
            if not _expected(e):  # a bug: the server's log says where; the page says what
                traceback.print_exc()
            raise

    def _in_thread(self, work) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self._run(work))
        except BaseException as e:  # handed to the event loop, which shows it
            self.future.set_exception(e)

    # ------------------------------------------------------------ event-loop side
    def cancel(self) -> None:
        self.cancelled.set()
        self.future.cancel()  # a job still waiting in a shared executor never starts

    @property
    def running(self) -> bool:
        return not self.future.done()

    def poll(self) -> tuple[list, bool]:
        """(the events reported since the last poll, whether the work has ended). "Ended" is read before
        the queue is drained, so once it says True no event is left behind."""
        finished = self.future.done()
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events, finished

    @property
    def error(self) -> BaseException | None:
        """The exception the work raised (a cancelled-before-start job: CancelledError); None while running."""
        if not self.future.done():
            return None
        if self.future.cancelled():
            return cf.CancelledError(f"{self.name} cancelled before it started")
        return self.future.exception()

    def result(self):
        """What the work returned (raises what it raised)."""
        return self.future.result(timeout=0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work has ended (scripts, tests); True if it has."""
        return not cf.wait([self.future], timeout).not_done


def one_at_a_time(name: str) -> cf.ThreadPoolExecutor:
    """A queue shared by every page for jobs that must not overlap (probes: their timings would compete;
    analyses: each may train several networks). Pass it as `executor=`."""
    return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


def error_message(e: BaseException) -> str:
    """What a page says about a failed job: the engine's own one-line message for bad input or a refusal
    (LotteryError, ValueError), else the exception's type too (a bug, also printed to the server's log)."""
    return str(e) if _expected(e) else f"{type(e).__name__}: {e}"


def _expected(e: BaseException) -> bool:
    from engine.errors import LotteryError  # light: engine/__init__ imports its names lazily

    return isinstance(e, (LotteryError, ValueError))
