"""Datasets: digits offline, npz with every kind of bad file, torchvision loaders on tiny IDX files."""
import gzip
import struct

import numpy as np
import pytest
import torch

import engine
from engine.config import DataConfig
from engine.data import load
from engine.errors import DataUnavailable

from conftest import tiny


def test_digits_splits_are_disjoint_fixed_and_standardised():
    a, b = load(DataConfig()), load(DataConfig())
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.val.x, b.val.x)  # the split does not depend on the run seed
    assert abs(float(a.train.x.mean())) < 1e-4
    rows = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    assert not rows(a.val) & rows(a.test) - rows(a.train)


def _npz(tmp_path, name="d.npz", **arrays):
    rng = np.random.default_rng(0)
    base = dict(x_train=rng.normal(size=(40, 12)).astype(np.float32), y_train=rng.integers(0, 3, 40),
                x_test=rng.normal(size=(10, 12)).astype(np.float32), y_test=rng.integers(0, 3, 10))
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / name
    np.savez(path, **base)
    return f"npz:{path}"


def test_npz_dataset_trains(tmp_path):
    spec = _npz(tmp_path)
    d = load(DataConfig(dataset=spec))
    assert d.input_shape == (12,) and d.num_classes == 3
    s = engine.run(tiny(**{"data.dataset": spec, "train.batch_size": 8}), runs_dir=tmp_path / "runs")
    assert s["status"] == "completed" and s["run_id"].startswith("imp-lenet300-npz-")


@pytest.mark.parametrize("arrays,needle", [
    ({"y_test": None}, "missing arrays ['y_test']"),
    ({"x_train": np.zeros((40,))}, "x_train (40,)"),
    ({"y_train": np.zeros(39, dtype=int)}, "y_train (39,)"),
    ({"x_test": np.zeros((10, 5), np.float32)}, "differ in example shape"),
    ({"x_train": np.full((40, 12), np.nan, np.float32)}, "finite"),
    ({"y_train": np.full(40, 0.5)}, "integer labels"),
    ({"y_train": -np.ones(40, dtype=int)}, "integer labels"),
    ({"x_train": np.array([object()] * 40)}, "without pickle"),
])
def test_bad_npz_files_are_config_errors(tmp_path, arrays, needle):
    spec = _npz(tmp_path, **arrays)
    with pytest.raises(engine.ConfigError) as info:
        load(DataConfig(dataset=spec))
    assert str(info.value).startswith("data.dataset:") and needle in str(info.value), str(info.value)


def test_missing_and_corrupt_npz(tmp_path):
    with pytest.raises(engine.ConfigError, match="does not exist"):
        load(DataConfig(dataset=f"npz:{tmp_path}/nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(engine.ConfigError, match="could not be read"):
        load(DataConfig(dataset=f"npz:{bad}"))


def _idx(path, array, gz=False):
    """Write an IDX file (the MNIST format): magic, dims, big-endian sizes, raw uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_loader_reads_idx_files_without_downloading(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 10)):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    d = load(DataConfig(dataset=name, data_dir=str(tmp_path)))
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.train) + len(d.val) == 30 and len(d.test) == 10
    s = engine.run(tiny(**{"data.dataset": name, "data.data_dir": str(tmp_path), "train.batch_size": 9,
                           "prune.levels": 1}), runs_dir=tmp_path / "runs")
    assert s["levels"][0]["layers"]["hidden.0.weight"] == pytest.approx(0.8)  # input adapted to 784


def test_missing_torchvision_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataUnavailable, match="--download.*digits"):
        load(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_conv_models_refuse_flat_data(tmp_path):
    with pytest.raises(engine.ConfigError, match="model.model: 'conv2'.*image data"):
        engine.run(tiny(**{"data.dataset": _npz(tmp_path), "model.model": "conv2"}), runs_dir=tmp_path / "r")
