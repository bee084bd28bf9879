"""explorer.jobs: background work, its events, cancel and errors as the app's periodic callback sees them."""
import concurrent.futures as cf
import threading

import pytest

import engine
from explorer.jobs import Job, error_message

from conftest import wait_until


def _collect(job):
    seen = []
    while True:
        events, finished = job.poll()
        seen += events
        if finished:
            return seen


def test_events_arrive_in_order_and_none_after_the_end():
    job = Job(lambda job: [job.emit(i) for i in range(500)] and "result", name="count")
    assert _collect(job) == list(range(500))
    assert job.result() == "result" and job.error is None and not job.running


def test_cancel_stops_the_work_at_its_next_check():
    started = threading.Event()

    def work(job):
        started.set()
        while not job.cancelled.wait(0.01):
            job.emit("tick")
        raise engine.RunCancelled("stopped")

    job = Job(work, name="loop")
    started.wait(10)
    assert job.running
    job.cancel()
    assert job.wait(10)
    assert isinstance(job.error, engine.RunCancelled) and error_message(job.error) == "stopped"


def test_a_shared_executor_runs_one_job_at_a_time_and_a_cancelled_queued_job_never_starts():
    pool = cf.ThreadPoolExecutor(max_workers=1)
    gate, ran = threading.Event(), []
    first = Job(lambda job: gate.wait(10) and ran.append("first"), name="first", executor=pool)
    second = Job(lambda job: ran.append("second"), name="second", executor=pool)
    second.cancel()
    gate.set()
    wait_until(lambda: not first.running and not second.running, timeout=10)
    assert ran == ["first"] and isinstance(second.error, cf.CancelledError)
    pool.shutdown()


@pytest.mark.parametrize("error,message", [(engine.ConfigError("x", 1, "allowed: 2"), "x: 1 is not valid; allowed: 2"),
                                           (KeyError("k"), "KeyError: 'k'")])
def test_errors_reach_the_event_loop_with_a_message_to_show(error, message, capsys):
    def work(job):
        raise error

    job = Job(work, name="fails")
    assert job.wait(10) and job.error is error
    assert error_message(job.error) == message
    with pytest.raises(type(error)):
        job.result()
    # an unexpected error is a bug: its traceback goes to the server's log; bad input does not
    assert ("Traceback" in capsys.readouterr().err) == isinstance(error, KeyError)
