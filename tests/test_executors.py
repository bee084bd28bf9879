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
    base = tiny(**{"train.epochs": 3})
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


def test_dask_sweep_survives_a_killed_worker(tmp_path):
    pytest.importorskip("distributed")
    base = tiny(**{"train.epochs": 3})
    killed = []

    def kill_the_first_worker_training():  # from a thread: the sweep and its LocalCluster run in this one
        lock = wait_until(lambda: next((p for p in tmp_path.glob("*/.lock")
                                        if (p.parent / "metrics.jsonl").exists()), None), timeout=400,
                          what="a run training")
        pid = int(lock.read_text())
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)
            killed.append(lock.parent.name)

    threading.Thread(target=kill_the_first_worker_training, daemon=True).start()
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
