"""npz:PATH files a researcher plausibly writes by mistake (found by a new-user pass over 'Your own model and data'):
each is a one-line error from `lottery run` (exit 2, nothing stored) or, where the README promises it, trains."""
import numpy as np
import pytest

from engine.cli import main
from engine.config import DataConfig
from engine.data import load


def _npz(tmp_path, **changes):
    """300 8x8 images of 4 classes (the README's shapes), `changes` replacing arrays."""
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 4, 300), rng.integers(0, 4, 100)
    arrays = dict(x_train=rng.normal(size=(300, 8, 8)).astype(np.float32) + y_train[:, None, None], y_train=y_train,
                  x_test=rng.normal(size=(100, 8, 8)).astype(np.float32) + y_test[:, None, None], y_test=y_test)
    arrays.update(changes)
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _refused(tmp_path, capsys, spec) -> str:
    """The one line `lottery run` prints for `spec` (exit 2, no traceback, nothing stored)."""
    runs = tmp_path / "runs"
    assert main(["run", "--runs-dir", str(runs), "--dataset", spec, "--epochs", "1", "--levels", "1",
                 "--batch-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: data.dataset: "), err
    assert not runs.exists() or not list(runs.iterdir())
    return err


def test_complex_inputs_are_refused_not_cut_to_their_real_part(tmp_path, capsys):
    # (numpy counts complex as a number: the imaginary part was dropped with a ComplexWarning, and the run trained)
    x = np.random.default_rng(1).normal(size=(300, 8, 8)) * (1 + 1j)
    err = _refused(tmp_path, capsys, _npz(tmp_path, x_train=x.astype(np.complex64)))
    assert "x_train holds complex64 values" in err and "real" in err


def test_float64_values_beyond_float32_are_refused(tmp_path, capsys):
    # (they became inf when cast to float32, the standardised inputs NaN, and the run 'completed' at chance)
    x = np.random.default_rng(1).normal(size=(300, 8, 8)) * 1e300
    err = _refused(tmp_path, capsys, _npz(tmp_path, x_train=x))
    assert "x_train" in err and "float32" in err and "e+300" in err


def test_huge_but_float32_inputs_are_standardised(tmp_path):
    # The README: 'standardised ... whatever the raw scale'. Values near 1e19 are float32 numbers, but their squares
    # are not: the standard deviation overflowed and every input became 0 (or NaN).
    spec = _npz(tmp_path)
    plain = load(DataConfig(dataset=spec))
    arrays = dict(np.load(spec[4:]))
    big = _npz(tmp_path, x_train=arrays["x_train"] * 1e19, x_test=arrays["x_test"] * 1e19)
    scaled = load(DataConfig(dataset=big))
    for a, b in ((plain.train, scaled.train), (plain.test, scaled.test)):
        assert np.isfinite(b.x.numpy()).all()
        assert np.allclose(a.x.numpy(), b.x.numpy(), atol=1e-4)


def test_a_test_label_above_every_training_label_is_refused(tmp_path, capsys):
    # (as text:PATH refuses it: the net got outputs for classes it never trains on and the test set scored them)
    y_test = np.random.default_rng(2).integers(0, 4, 100)
    y_test[5] = 13
    err = _refused(tmp_path, capsys, _npz(tmp_path, y_test=y_test))
    assert "y_test holds the label 13" in err and "0..3" in err


@pytest.mark.parametrize("typed,meant", [("mine.npz", "npz:mine.npz"), ("./texts.JSONL", "text:./texts.JSONL"),
                                         ("NPZ:mine.npz", "npz:mine.npz")])
def test_a_data_file_given_without_its_prefix_is_told_the_prefix(tmp_path, capsys, typed, meant):
    # (it listed the registry's data sets and npz:PATH, leaving the user to see that the prefix was missing)
    err = _refused(tmp_path, capsys, typed)
    assert f"did you mean {meant}?" in err, err


def test_channels_last_images_are_stored_contiguous_so_view_works(tmp_path):
    # (turned channels-first by a transpose, they kept channels-last strides: a module's classic
    # `x.view(x.size(0), -1)` after a conv failed, 'view size is not compatible with input tensor's size and stride')
    rng = np.random.default_rng(0)
    spec = _npz(tmp_path, x_train=rng.normal(size=(300, 8, 8, 3)), x_test=rng.normal(size=(100, 8, 8, 3)))
    data = load(DataConfig(dataset=spec))
    assert data.input_shape == (3, 8, 8)
    assert all(s.x.is_contiguous() for s in (data.train, data.val, data.test))
    assert data.train.x.view(len(data.train), -1).shape == (len(data.train), 192)
