"""Sweeps through an executor (engine.executors): local processes and Dask land every run in the one store,
stream progress, cancel, and survive a worker killed mid-run."""
import os
import signal
import threading

import pytest

from engine import events as ev
from engine.compare import compare
from engine.store import TEMP_FILE, RunStore, list_runs

from conftest import tiny, wait_until


def _assert_store_clean(runs_dir, expected_runs: int) -> None:
    """Every run completed once: no lock, no temporary file, each variant's levels stored once each."""
    runs = list_runs(runs_dir)
    assert len(runs) == expected_runs and all(r["status"] == "completed" for r in runs), runs
    for r in runs:
        store = RunStore(runs_dir, r["run_id"])
        assert not store.path(".lock").exists()
        assert not [p for p in store.dir.rglob(".*") if TEMP_FILE.fullmatch(p.name)]
        for variant in ("ticket", "reinit"):
            levels = [rec["level"] for rec in store.records(variant)]  # each level once, in order
            assert levels == list(range(levels[0], levels[0] + len(levels))) if levels else True, (variant, levels)


def test_process_pool_sweep_lands_in_the_store_and_streams_progress(tmp_path):
    base = tiny(**{"train.epochs": 1})
    events = []
    result = compare(base, ["snip", "random"], [0.5], 2, runs_dir=tmp_path, executor="processes", workers=2,
                     on_event=events.append)
    assert result["status"] == "completed" and len(result["rows"]) == 2
    started = {e.run_id for e in events if isinstance(e, ev.RunStarted)}
    finished = {e.run_id for e in events if isinstance(e, ev.RunFinished)}
    assert len(started) == 4 and finished == started  # every worker's events reached this process
    assert any(isinstance(e, ev.Evaluated) for e in events)
    _assert_store_clean(tmp_path, 4)
    trained = []  # the same sweep in this process finds every run stored under the same ids
    again = compare(base, ["snip", "random"], [0.5], 2, runs_dir=tmp_path,
                    on_event=lambda e: trained.append(e) if isinstance(e, ev.TrainingStarted) else None)
    assert not trained and again["rows"] == result["rows"]


def test_process_pool_cancel_stops_queued_and_running_runs(tmp_path):
    # long enough that a worker is still on its first run when its first evaluation reaches this process
    # (3 epochs was not, once, with the batched trainer: all 4 runs had started before the cancel)
    base = tiny(**{"train.epochs": 30})
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ev.Evaluated):
            cancel.set()

    result = compare(base, ["snip", "random"], [0.5], 2, runs_dir=tmp_path, executor="processes", workers=2,
                     on_event=on_event, cancel=cancel)
    assert result["status"] == "cancelled"
    runs = list_runs(tmp_path)
    assert len(runs) < 4  # queued runs never started
    assert runs and all(r["status"] in ("cancelled", "completed") for r in runs)
    assert not list(tmp_path.glob("*/.lock"))
    assert compare(base, ["snip", "random"], [0.5], 2, runs_dir=tmp_path)["status"] == "completed"  # resumes


def _kill_the_first_worker_training(runs_dir, killed: list) -> None:
    """From a thread (the sweep runs in this one): SIGKILL the process whose lock holds the first run that
    has started training; its folder's name goes to `killed`."""
    lock = wait_until(lambda: next((p for p in runs_dir.glob("*/.lock") if (p.parent / "metrics.jsonl").exists()),
                                   None), timeout=400, what="a run training")
    pid = int(lock.read_text())
    if pid != os.getpid():
        os.kill(pid, signal.SIGKILL)
        killed.append(lock.parent.name)


def test_process_pool_sweep_survives_a_killed_worker(tmp_path):
    """A dead worker breaks a ProcessPoolExecutor: run_all starts a fresh pool and resubmits what is unfinished."""
    base = tiny(**{"train.epochs": 3})
    killed, events = [], []
    threading.Thread(target=_kill_the_first_worker_training, args=(tmp_path, killed), daemon=True).start()
    result = compare(base, ["imp", "snip"], [0.5], 2, runs_dir=tmp_path, executor="processes", workers=2,
                     on_event=events.append)
    assert result["status"] == "completed" and len(result["rows"]) == 2
    assert killed
    assert sum(isinstance(e, ev.RunStarted) and e.run_id == killed[0] for e in events) == 2  # retried once
    _assert_store_clean(tmp_path, 4)


def _die(*args):
    """A task whose worker process dies every time (as one killed for memory would)."""
    os._exit(1)


def test_process_pool_gives_up_after_the_retries_in_one_line(tmp_path, monkeypatch):
    from engine import executors
    from engine.errors import LotteryError

    monkeypatch.setattr(executors, "run_task", _die)  # pickled by name: the workers import this module
    monkeypatch.setattr(executors, "RETRIES", 1)  # each fresh pool spawns a process that imports torch
    with pytest.raises(LotteryError, match="died mid-run 2 times"):
        executors.run_all([tiny()], tmp_path, executor="processes", workers=1)
    assert not list(tmp_path.iterdir())


def test_dask_sweep_survives_a_killed_worker(tmp_path):
    pytest.importorskip("distributed")
    base = tiny(**{"train.epochs": 3})
    killed = []
    threading.Thread(target=_kill_the_first_worker_training, args=(tmp_path, killed), daemon=True).start()
    events, links = [], []
    result = compare(base, ["imp", "snip"], [0.5], 2, runs_dir=tmp_path, executor="dask", workers=2,
                     on_dashboard=links.append, on_event=events.append)
    assert result["status"] == "completed" and len(result["rows"]) == 2
    assert links and links[0].startswith("http")
    assert killed
    assert sum(isinstance(e, ev.RunStarted) and e.run_id == killed[0] for e in events) == 2  # retried
    _assert_store_clean(tmp_path, 4)


def test_bad_executor_settings_are_one_line_errors(tmp_path, capsys):
    from engine.cli import main

    assert main(["compare", "--executor", "spark", "--runs-dir", str(tmp_path)]) == 2
    assert "--executor: 'spark' is not valid" in capsys.readouterr().err
    assert main(["compare", "--workers", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
