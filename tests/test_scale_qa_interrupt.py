"""Ctrl-C on a sweep that trains in worker processes, as a terminal sends it: SIGINT to the whole foreground process
group, the workers included. Each worker printed its own KeyboardInterrupt traceback (a process pool's from its
initializer or its queue, Dask's from its event loop, tens of lines) above the one line saying what was kept. Now
the workers leave Ctrl-C to the command, which stops them through the sweep's cancel flag: one line, exit 130, and
the same command again finishes the sweep with the results of one never interrupted."""
import json
import os
import signal
import subprocess
import sys

import pytest

from engine.store import list_runs

from conftest import wait_until

SWEEP = ["--methods", "imp,snip", "--densities", "0.2,0.05", "--seeds", "1", "--epochs", "3", "--json", "--quiet"]


def _compare(runs, executor, *, interrupt_once_training=False):
    """`lottery compare SWEEP` in its own process group: (exit code, stdout, stderr); with `interrupt_once_training`
    the group gets SIGINT once both snip runs are done and IMP trains (one worker trains, the other waits)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "compare", *SWEEP, "--executor", executor,
                             "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if interrupt_once_training:
        wait_until(lambda: proc.poll() is not None or sum(r["status"] == "completed" for r in list_runs(runs)) == 2,
                   300, interval=0.1, what="the snip runs are done")
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_ctrl_c_stops_the_workers_in_one_line_and_the_sweep_resumes(tmp_path, executor):
    if executor == "dask":
        pytest.importorskip("distributed")
    runs = tmp_path / "runs"
    code, _, err = _compare(runs, executor, interrupt_once_training=True)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "cancelled: finished runs are kept; run the same command to continue" in err
    # a run still training stored itself as cancelled, or ended first (a Dask task cancelled mid-run was left 'failed'
    # or 'running', its worker closed under it); one that Dask had queued behind another never started
    statuses = [r["status"] for r in list_runs(runs)]
    assert set(statuses) <= {"completed", "cancelled"}, statuses

    code, out, err = _compare(runs, executor)
    assert code == 0, err
    resumed = json.loads(out)
    code, out, err = _compare(tmp_path / "whole", "processes")
    assert code == 0, err
    whole = json.loads(out)
    for a, b in zip(resumed["rows"], whole["rows"], strict=True):  # (seconds aside)
        assert {k: v for k, v in a.items() if k != "search_seconds"} == \
            {k: v for k, v in b.items() if k != "search_seconds"}

