"""Datasets as in-memory tensors: a registry of loaders plus `npz:PATH` for users' own data.

Every loader returns raw numpy arrays (train and test); `load` then carves the validation split from
train with a fixed generator (so every seed of an experiment shares one split), standardises with
training statistics and moves everything to the run's device once. Test data is never used for
selection: early stopping and model choice read the validation split.

Every data set carries a fingerprint, a SHA-256 of its contents as loaded (the arrays, not the file's bytes:
an npz saved again compressed is the same data set). The run store keeps it in data.json, and a run whose
data changed under the same name (`npz:PATH` replaced, torchvision files swapped) is refused on resume. A
loader may return the fingerprint of its source as a fifth item (torchvision's raw uint8 arrays hash four
times faster than the float arrays made from them).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from .config import DataConfig
from .errors import ConfigError, DataUnavailable
from .registry import DATASETS
from . import text  # noqa: E402  (registers the text tasks: pydoc-mlm, pydoc-modules, pydoc-topics, text:PATH)
from . import digits28  # noqa: E402,F401  (registers digits28, the stability-story data)

SPLIT_SEED = 0  # the validation split is part of the dataset, not of the run's randomness
MAX_CLASSES = 100_000  # labels are class indices: a label of 10**9 would ask for a 10**9-way output layer


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]  # per example, e.g. (1, 8, 8) or (64,)
    num_classes: int
    fingerprint: str = ""  # SHA-256 of the contents (see the module's docstring); "" = not known


def fingerprint(*arrays) -> str:
    """SHA-256 over the dtype, shape and bytes of each array (numpy arrays or CPU tensors), in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def dataset_choices() -> list[str]:
    return DATASETS.names() + ["npz:PATH", "text:PATH", "hf:NAME"]


# ---------------------------------------------------------------- loaders (numpy in, numpy out)
@DATASETS.register("digits", "scikit-learn's bundled 8x8 digits (1,797 images, offline)")
def _digits(cfg: DataConfig):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None] / 16.0
    return train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=SPLIT_SEED)


def _torchvision(cls_name: str, label: str):
    def load(cfg: DataConfig):
        import torchvision

        root = os.path.expanduser(cfg.data_dir)
        cls = getattr(torchvision.datasets, cls_name)
        try:
            train = cls(root, train=True, download=cfg.download)
            test = cls(root, train=False, download=cfg.download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            hint = ("pass --download (needs network)" if not cfg.download
                    else "the download failed; check the network")
            raise DataUnavailable(
                f"{label} is not in {root} ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
                f"{hint}, or use --dataset digits or --dataset npz:PATH offline") from None
        except OSError as e:
            raise DataUnavailable(f"{label} could not be downloaded to {root}: {e}; use --dataset "
                                  "digits or --dataset npz:PATH offline") from None

        def arrays(ds):
            x = np.asarray(ds.data, dtype=np.float32) / 255.0
            x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to N, C, H, W
            return x, np.asarray(ds.targets, dtype=np.int64)

        (xtr, ytr), (xte, yte) = arrays(train), arrays(test)
        return xtr, xte, ytr, yte, fingerprint(np.asarray(train.data), np.asarray(train.targets),
                                               np.asarray(test.data), np.asarray(test.targets))

    return load


DATASETS.register("mnist", "torchvision MNIST (needs --download once)")(_torchvision("MNIST", "MNIST"))
DATASETS.register("fashion-mnist", "torchvision Fashion-MNIST (needs --download once)")(
    _torchvision("FashionMNIST", "Fashion-MNIST"))
DATASETS.register("cifar10", "torchvision CIFAR-10 (needs --download once)")(
    _torchvision("CIFAR10", "CIFAR-10"))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


CHANNELS = (1, 3, 4)  # gray, RGB, RGBA: the channel counts channels-last image files have


def _npz(path: str):
    field = "data.dataset"
    path = os.path.expanduser(path)
    shown = f"npz:{path}"
    if not os.path.isfile(path):
        raise ConfigError(field, shown, "the file does not exist")
    if not zipfile.is_zipfile(path):  # np.load would read it as a .npy, or try to unpickle it
        raise ConfigError(field, shown, f"could not be read: not an .npz archive (write one with numpy.savez(path, "
                          f"{', '.join(f'{k}=...' for k in NPZ_KEYS)}))")
    try:
        with np.load(path, allow_pickle=False) as f:  # never unpickle a user's file
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise ConfigError(field, shown, f"missing arrays {missing}; needs {list(NPZ_KEYS)} (the file "
                                  f"holds {f.files})")
            arrs = {k: f[k] for k in NPZ_KEYS}
    except ConfigError:
        raise
    except Exception as e:  # object arrays, a truncated file...
        raise ConfigError(field, shown, f"could not be read as .npz without pickle ({e})") from None
    for split in ("train", "test"):
        x, y = arrs[f"x_{split}"], arrs[f"y_{split}"]
        if y.ndim == 2 and len(y) == len(x):  # labels saved as a column, or one-hot
            fix = "save y.ravel()" if y.shape[1] == 1 else "one-hot? save y.argmax(1)"
            raise ConfigError(field, shown, f"y_{split} has shape {y.shape}; labels are class indices of shape "
                              f"(N,): {fix}")
        if x.ndim not in (2, 3, 4) or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
            raise ConfigError(field, shown, f"x_{split} {x.shape} / y_{split} {y.shape}: need x of "
                              "shape (N, F), (N, H, W), (N, C, H, W) or (N, H, W, C) and y of shape (N,), N > 0")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ConfigError(field, shown, f"x_{split} holds {x.dtype} values; it must hold numbers")
        if np.issubdtype(x.dtype, np.complexfloating):  # the cast to float32 would drop the imaginary part
            raise ConfigError(field, shown, f"x_{split} holds {x.dtype} values; it must hold real numbers (save "
                              "np.stack([x.real, x.imag], 1), the two parts as channels first, or np.abs(x))")
        # min and max are NaN or infinite where any entry is: no array of x's size is made (isfinite(x) is one)
        lo, hi = x.min(), x.max()
        if not np.isfinite([lo, hi]).all():
            raise ConfigError(field, shown, f"x_{split} must hold finite numbers (it holds NaN or inf)")
        top = max(abs(float(lo)), abs(float(hi)))
        if top > float(np.finfo(np.float32).max):  # float64 data: the cast to float32 would make it inf
            raise ConfigError(field, shown, f"x_{split} holds values up to {top:.3g} in magnitude, beyond float32's "
                              f"range (3.4e+38), in which it trains: rescale it first (e.g. x / {top:.0e})")
        if not np.issubdtype(y.dtype, np.integer):
            odd = y[np.mod(y, 1) != 0] if np.issubdtype(y.dtype, np.floating) else y[:0]  # not whole numbers
            fix = f" such as {odd[0]}" if len(odd) else ": save y.astype(int)"
            raise ConfigError(field, shown, f"y_{split} must hold non-negative integer labels (class indices "
                              f"0..K-1); it holds {y.dtype} values{fix}")
        if y.min() < 0:
            raise ConfigError(field, shown, f"y_{split} must hold non-negative integer labels (class indices "
                              f"0..K-1); its smallest is {int(y.min())}")
        if y.max() >= MAX_CLASSES:
            raise ConfigError(field, shown, f"y_{split} holds the label {int(y.max())}; labels are class "
                              f"indices 0..N-1 with at most {MAX_CLASSES:,} classes")
    top, top_test = int(arrs["y_train"].max()), int(arrs["y_test"].max())
    if top_test > top:  # as text:PATH: outputs for a class never trained on, scored on the test set only
        raise ConfigError(field, shown, f"y_test holds the label {top_test}; the training labels run 0..{top}, and a "
                          "class never trained on is never predicted: label both splits alike")
    if arrs["x_train"].shape[1:] != arrs["x_test"].shape[1:]:
        raise ConfigError(field, shown, f"x_train {arrs['x_train'].shape} and x_test "
                          f"{arrs['x_test'].shape} differ in example shape")
    digest = fingerprint(*(arrs[k] for k in NPZ_KEYS))
    x_tr, x_te = (arrs[k].astype(np.float32, copy=False) for k in ("x_train", "x_test"))  # float32 as is
    if x_tr.ndim == 3:  # N, H, W -> N, 1, H, W
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    elif x_tr.ndim == 4 and x_tr.shape[3] in CHANNELS and x_tr.shape[1] not in CHANNELS:  # N, H, W, C -> N, C, H, W
        x_tr, x_te = x_tr.transpose(0, 3, 1, 2), x_te.transpose(0, 3, 1, 2)
        # the reading is part of what was trained on: a run stored when these arrays were read as N, C, H, W
        # (before 2026-12-02) is refused by the store's data check rather than resumed on other inputs
        digest = fingerprint(np.frombuffer(f"{digest}:channels-last".encode(), dtype=np.uint8))
    return x_tr, x_te, arrs["y_train"].astype(np.int64), arrs["y_test"].astype(np.int64), digest


def _check_classes(name: str, y_train) -> None:
    """A classifier needs two classes at least: one label throughout trains to 100% and means nothing."""
    if y_train.ndim == 1 and len(y_train) and int(y_train.min()) == int(y_train.max()):
        raise ConfigError("data.dataset", name, f"its training labels are all {int(y_train.min())}, one class; a "
                          "classifier needs at least 2")


# ---------------------------------------------------------------- the one entry point
def load(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    if cfg.dataset.startswith("npz:"):
        loaded = _npz(cfg.dataset[4:])
    else:
        own_text = cfg.dataset.startswith(("text:", "hf:"))  # your texts, a hub dataset
        loader = text.load_text if own_text else DATASETS.get(cfg.dataset, "data.dataset")
        loaded = loader(cfg)
        if isinstance(loaded, Dataset):  # text tasks carve their own splits (token ids are not standardised)
            splits = (loaded.train, loaded.val, loaded.test)
            _check_classes(cfg.dataset, torch.cat([loaded.train.y, loaded.val.y]).numpy())
            digest = loaded.fingerprint or fingerprint(*(t.cpu() for s in splits for t in (s.x, s.y)))
            return Dataset(loaded.name, *(Split(s.x.to(device), s.y.to(device)) for s in splits),
                           loaded.input_shape, loaded.num_classes, digest)
    x_tr, x_te, y_tr, y_te = loaded[:4]
    digest = loaded[4] if len(loaded) > 4 else fingerprint(x_tr, x_te, y_tr, y_te)
    del loaded  # x_tr goes once its splits are gathered: memory peaks below 2x the data set's tensors
    _check_classes(cfg.dataset, y_tr)

    n_val = max(1, int(round(cfg.val_fraction * len(y_tr))))
    if len(y_tr) - n_val < 1:
        raise ConfigError("data.val_fraction", cfg.val_fraction, f"leaves no training data ({len(y_tr)} examples)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y_tr))
    val_idx, tr_idx = order[:n_val], order[n_val:]
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    input_shape = tuple(x_tr.shape[1:])
    xs = [torch.from_numpy(np.asarray(x_tr[i], dtype=np.float32)) for i in (tr_idx, val_idx)]  # gathers: copies
    del x_tr
    xs.append(torch.tensor(x_te, dtype=torch.float32))  # a copy: a loader's arrays are never changed in place
    del x_te
    ys = [torch.from_numpy(np.ascontiguousarray(y)) for y in (y_tr[tr_idx], y_tr[val_idx], y_te)]

    # Standardise with statistics of the training part only, per channel for images, in place. (numpy's std
    # makes one temporary of the training part's size, now that x_tr is gone well within the 2x: it is 4x
    # faster here than torch.std_mean, which makes none.)
    axes = (0,) if xs[0].dim() == 2 else (0, 2, 3)

    def statistics():
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below, not printed
            return (xs[0].numpy().mean(axis=axes, keepdims=True),
                    xs[0].numpy().std(axis=axes, keepdims=True) + 1e-6)

    mean, std = statistics()
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        # float32 sums of squares overflow from |x| ~ 1e19 on (the inputs became 0 or NaN): divide every split by
        # the training part's largest magnitude first, a scalar that standardising cancels, and measure again
        scale = float(max(abs(v) for v in torch.aminmax(xs[0])))
        for x in xs:
            x.div_(scale)
        mean, std = statistics()
    for x in xs:
        x.sub_(torch.from_numpy(mean)).div_(torch.from_numpy(std))
    for i in range(len(xs)):  # channels-last images, transposed, kept their strides: a module's x.view(N, -1) failed
        xs[i] = xs[i].contiguous()  # (a copy only where needed, one split at a time)
    train, val, test = (Split(x.to(device), y.to(device)) for x, y in zip(xs, ys))
    return Dataset(cfg.dataset, train, val, test, input_shape, num_classes, digest)
