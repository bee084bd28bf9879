import time

import pytest
import torch

import engine

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two OpenMP threads per
# process stall badly whenever another process (the app server, a notebook kernel) holds a core.
torch.set_num_threads(1)


def tiny(**changes) -> engine.RunConfig:
    """A config that trains in well under a second per level on digits."""
    base = {"train.epochs": 2, "prune.levels": 2, "prune.controls": ("reinit",), "device": "cpu"}
    base.update(changes)
    return engine.RunConfig().replace(**base)


def stored_by_cli(folder, *argv):
    """The engine command `argv` (e.g. "run", *flags) run into a fresh runs dir under `folder`: (runs dir, the id
    it stored). Module fixtures store one this way; tests damage a `copy_of` it."""
    import os

    from engine.cli import main

    runs = folder / "runs"
    assert main([*argv, "--runs-dir", str(runs)]) == 0
    [stored_id] = os.listdir(runs)
    return runs, stored_id


def copy_of(stored, dst):
    """A copy at `dst` of a (runs dir, id) pair from `stored_by_cli`, for a test that damages it."""
    import shutil

    runs, stored_id = stored
    shutil.copytree(runs, dst)
    return dst, stored_id


def wait_until(predicate, timeout: float = 120, interval: float = 0.05, what: str = ""):
    """Call `predicate()` every `interval` s until it returns something truthy, and return that; fail the
    test after `timeout` s. The predicate may do work too (an app's tick(), a panel's poll())."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)
    return value


def assert_progress_reaches_total(events) -> None:
    """The CLI's bar and the app's progress (engine.progress) never pass the total the run announced, and reach
    it before RunFinished (which sets done to the total, whatever came before: a total too big would pass)."""
    from engine.progress import Progress

    p = Progress()
    for e in events:
        if type(e).__name__ == "RunFinished":
            assert p.done == p.total, (p.done, p.total)
        p.update(e)
        assert p.done <= p.total, (type(e).__name__, getattr(e, "level", None), getattr(e, "variant", None),
                                   p.done, p.total)
    assert type(events[-1]).__name__ == "RunFinished"


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    """One cache directory (LOTTERY_CACHE_DIR) for the session: the text corpus and its tokenised tasks are
    built once (about 20 s) and shared by every test of text tasks and transformers."""
    import os

    path = tmp_path_factory.mktemp("lottery-cache")
    old = os.environ.get("LOTTERY_CACHE_DIR")
    os.environ["LOTTERY_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LOTTERY_CACHE_DIR", None)
    else:
        os.environ["LOTTERY_CACHE_DIR"] = old
