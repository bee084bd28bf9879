"""Sizes users bring (issue 16 item 4): an `npz:` data set made from digits by tiling and noise
(bench/scale_npz.py's `make_npz`) is loaded within 2x its tensors' size, and training indexes into the loaded
tensors: no operation of a run allocates a copy of the data set. bench/scale_npz.py measures the 60,000 x 784
case (memory and steps/s)."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import engine
from engine import data as data_mod

from conftest import tiny

ROWS = 20_000  # x_train 20,000 x 28 x 28 float32: 63 MB, large enough that the peak is the data's


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "scale_npz.py"
    spec = importlib.util.spec_from_file_location("scale_npz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return _bench().make_npz(tmp_path_factory.mktemp("scale") / "digits20k.npz", rows=ROWS, test_rows=2_000)


def test_make_npz_is_reproducible_digits(npz, tmp_path):
    import numpy as np

    again = _bench().make_npz(tmp_path / "again.npz", rows=ROWS, test_rows=2_000)
    with np.load(npz) as a, np.load(again) as b:
        assert a["x_train"].shape == (ROWS, 28, 28) and a["x_train"].dtype == np.float32
        assert all(np.array_equal(a[k], b[k]) for k in data_mod.NPZ_KEYS)
        assert set(np.unique(a["y_train"])) == set(range(10))


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="peak RSS is reset through Linux's "
                    "/proc/self/clear_refs")
def test_loading_an_npz_peaks_below_twice_its_tensors(npz):
    bench = _bench()
    cfg = tiny(**{"data.dataset": f"npz:{npz}"}).data
    base = bench._reset_peak()
    data = data_mod.load(cfg)
    peak = bench._rss("VmHWM") - base
    size = bench.tensor_bytes(data)
    assert len(data.train) + len(data.val) == ROWS
    assert peak < 2 * size, f"peak RSS +{peak / 2**20:.0f} MiB for {size / 2**20:.0f} MiB of tensors"


class NewLargeTensors(TorchDispatchMode):
    """Records operations whose output is a new tensor (sharing no storage with an input) of at least
    `threshold` elements."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold, self.ops, self.active = threshold, [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.active:
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor) and t.device.type != "meta"}
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.numel() >= self.threshold \
                        and t.untyped_storage().data_ptr() not in inputs:
                    self.ops.append((str(func), tuple(t.shape)))
        return out


def test_a_run_never_copies_the_data_set(tmp_path, monkeypatch):
    """From the moment the data is loaded, no operation of `engine.run` (training, evaluation, pruning, the
    controls) allocates a tensor of half the training set's size or more: batches index into the loaded tensors.
    (A small file: every operation goes through the dispatch mode.)"""
    npz = _bench().make_npz(tmp_path / "digits3k.npz", rows=3_000, test_rows=500)
    cfg = tiny(**{"data.dataset": f"npz:{npz}", "train.epochs": 1, "prune.levels": 1, "train.batch_size": 250})
    mode = NewLargeTensors(threshold=int(3_000 * 0.9) * 784 // 2)
    load = data_mod.load

    def load_then_watch(*args, **kwargs):
        data = load(*args, **kwargs)
        mode.active = True
        return data

    monkeypatch.setattr(data_mod, "load", load_then_watch)
    with mode:
        summary = engine.run(cfg, runs_dir=tmp_path / "runs")
    assert mode.active and summary["status"] == "completed"
    assert not mode.ops, mode.ops
