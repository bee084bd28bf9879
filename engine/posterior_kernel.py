"""posterior_kernel.c, compiled at first use with the system's C compiler and called through ctypes: the
Bayesian posterior's softplus, KL and their gradient in one pass over the weights each way (engine.bayes uses
it for float32 weights on the CPU; `available()`).

Why a hand-written kernel: on the CPU eager PyTorch spends most of a Bayesian training step on ~15 weight-sized
elementwise passes that it cannot fuse (bench/bayes_speed.py; torch.compile was tried: ~10 s to compile and no
faster on these nets). A plain C file needs no PyTorch headers, compiles in well under a second, and ctypes lets
the call release the GIL. Where it cannot be built (no compiler: set CC, or `LOTTERY_FUSED_KERNEL=0` to turn it
off) the same arithmetic runs as PyTorch ops: the same results to float rounding, ~1.5x slower Bayesian steps.

The shared library is cached per source, compiler and machine in $XDG_CACHE_HOME/lottery-explorer (or
~/.cache/lottery-explorer), written to a temporary name and renamed, so processes building it at once (a Dask
sweep) never load half a file; if that folder cannot be written, a temporary folder of this process is used.
-march=native: the library is built on the machine that runs it. -ffast-math at compile time only (it lets gcc
call glibc's vector exp/log): linking with it would add crtfastmath, which flushes denormals process-wide."""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("posterior_kernel.c")
COMPILE = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-c"]
LINK = ["-shared", "-lmvec", "-lm"]
log = logging.getLogger(__name__)

_library: ctypes.CDLL | None = None
_tried = False
_why_not: str | None = None


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lottery-explorer"


def _build(cc: str) -> Path:
    """The shared library's path, compiled unless already cached."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), cc, version, platform.machine(), platform.node(),
                                    *COMPILE, *LINK]).encode()).hexdigest()[:16]
    for folder in (_cache_dir(), None):
        try:
            folder = folder or Path(tempfile.mkdtemp(prefix="lottery-kernel-"))
            target = folder / f"posterior_kernel-{key}.so"
            if target.exists():
                return target
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as work:
                obj, lib = Path(work, "k.o"), Path(work, "k.so")
                for command in ([cc, *COMPILE, str(SOURCE), "-o", str(obj)], [cc, str(obj), "-o", str(lib), *LINK]):
                    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
                    if done.returncode != 0:
                        raise RuntimeError(f"{' '.join(command[:2])} …: {done.stderr.strip()[:300]}")
                os.replace(lib, target)
            return target
        except OSError:
            continue  # (the cache folder cannot be written: the temporary one)
    raise RuntimeError(f"no folder to build the posterior kernel in (tried {_cache_dir()})")


def _load() -> ctypes.CDLL | None:
    global _library, _tried, _why_not
    if _tried:
        return _library
    _tried = True
    if os.environ.get("LOTTERY_FUSED_KERNEL", "1") == "0":
        _why_not = "turned off by LOTTERY_FUSED_KERNEL=0"
    elif (cc := _compiler()) is None:
        _why_not = f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    else:
        try:
            library = ctypes.CDLL(str(_build(cc)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _why_not = f"could not build it: {e}"
        else:
            c_float, c_long, c_int, p = ctypes.c_float, ctypes.c_long, ctypes.c_int, ctypes.c_void_p
            library.lte_posterior_forward.argtypes = [c_long, p, p, p, p, c_int, c_float, p]
            library.lte_posterior_backward.argtypes = [c_long, p, p, p, p, p, p, p, c_int, c_float, c_float]
            library.lte_posterior_forward.restype = library.lte_posterior_backward.restype = None
            _library = library
    if _why_not:
        log.info("Bayesian posterior on PyTorch ops (~1.5x slower steps): fused kernel %s", _why_not)
    return _library


def available(like: torch.Tensor) -> bool:
    """Whether the kernel serves weights like `like` (float32 on the CPU), building it on first use."""
    return like.dtype == torch.float32 and like.device.type == "cpu" and _load() is not None


def status() -> str:
    """One line for benchmarks and `lottery` diagnostics: whether the kernel is used, and if not why."""
    _load()
    return "fused posterior kernel: " + ("on" if _library is not None else f"off ({_why_not})")


@contextlib.contextmanager
def turned_off():
    """PyTorch ops inside (benchmarks compare the two ways in one process)."""
    global _library
    library, _library = _load(), None
    try:
        yield
    finally:
        _library = library


def _ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    assert t.is_contiguous() and t.dtype == torch.float32, "posterior kernel: contiguous float32 only"
    return t.data_ptr()


def forward(rho: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, std: torch.Tensor, square: bool,
            floor: float, sums: ctypes.Array) -> None:
    """sigma = softplus(rho), std = (sigma where mu != 0)^2 if square else that, and the KL's three sums
    (sum mu^2 + s^2, sum alive * log sigma, number alive) added into `sums` (3 doubles). All tensors of one size."""
    _library.lte_posterior_forward(rho.numel(), _ptr(rho), _ptr(mu), _ptr(sigma), _ptr(std), int(square),
                                   floor, sums)


def backward(rho: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, g_std: torch.Tensor | None,
             d_rho: torch.Tensor, g_mu: torch.Tensor | None, d_mu: torch.Tensor | None, square: bool,
             grad_kl: float, var_p: float) -> None:
    """d_rho and d_mu (see posterior_kernel.c); g_std may be d_rho and g_mu may be d_mu (in place)."""
    _library.lte_posterior_backward(rho.numel(), _ptr(rho), _ptr(mu), _ptr(sigma), _ptr(g_std), _ptr(d_rho),
                                    _ptr(g_mu), _ptr(d_mu), int(square), grad_kl, 1.0 / var_p)
