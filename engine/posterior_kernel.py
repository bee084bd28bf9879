"""posterior_kernel.c, compiled at first use with the system's C compiler and called through ctypes: the
Bayesian posterior's softplus, KL and their gradient in one pass over the weights each way (engine.bayes uses
it for float32 weights on the CPU; `available()`), and the samples' standard normal noise (`normal_`,
`local_noise_`: a counter-based generator, ~2x faster than torch's CPU one; `turned_off` leaves these on, so
that the two ways of computing the posterior are compared on the same noise).

Why a hand-written kernel: on the CPU eager PyTorch spends most of a Bayesian training step on ~15 weight-sized
elementwise passes that it cannot fuse (bench/bayes_speed.py; torch.compile was tried: ~10 s to compile and no
faster on these nets). A plain C file needs no PyTorch headers, compiles in well under a second, and ctypes lets
the call release the GIL. Where it cannot be built (no compiler: set CC, or `LOTTERY_FUSED_KERNEL=0` to turn it
off) the same arithmetic runs as PyTorch ops (the same results to float rounding on the same noise) and torch.randn
draws the noise (other numbers, the same distribution): Bayesian steps ~1.5x slower.

The shared library is cached per source, compiler and CPU in $XDG_CACHE_HOME/lottery-explorer (or
~/.cache/lottery-explorer), written to a temporary name and renamed, so processes building it at once (a Dask
sweep) never load half a file; if that folder cannot be written, a temporary folder is used and removed once the
library is loaded. -march=native: the library is built for the CPU that runs it, so the CPU's model and flags are
part of the cache key (a home folder shared by machines of different CPUs must not hand one the other's
instructions). -ffast-math at compile time only (it lets gcc call glibc's vector exp/log): linking with it would
add crtfastmath, which flushes denormals process-wide. Large layers are cut into pieces run on as many threads as
torch uses, as torch's own elementwise kernels are, by OpenMP (-fopenmp: the libgomp torch's wheels load, so one
thread pool serves both; a Python thread pool handing pieces over measured 2.82x a deterministic step against
2.61x for one thread's piece, lenet300 at 784 inputs on 2 threads, as its waits collided with OpenMP's spinning
threads); a compiler without OpenMP builds it without, and one thread runs the pieces."""
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
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("posterior_kernel.c")
COMPILE = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-c"]
if platform.machine() in ("x86_64", "AMD64"):  # AVX-512 where the CPU has it (gcc prefers 256-bit vectors): ~1.2x
    COMPILE.insert(2, "-mprefer-vector-width=512")
LINK = ["-shared", "-lmvec", "-lm"]
OPENMP = ["-fopenmp"]  # (libgomp: the OpenMP runtime torch's CPU wheels load, so the two share one thread pool)
# entries a thread at least: pieces of 8192 pay under OpenMP (lenet300, 2 threads, a Bayesian step against the
# deterministic one: digits 2.51-2.55x -> 2.37x, 784 inputs 2.40x -> 2.37x, 4096 within 1% of it; torch cuts its
# elementwise kernels at 32768)
GRAIN = 8192
log = logging.getLogger(__name__)

_library: ctypes.CDLL | None = None  # for the posterior's arithmetic (None: PyTorch ops)
_noise: ctypes.CDLL | None = None  # for the noise (lte_normal, lte_local_noise): `turned_off` leaves it
_tried = False
_why_not: str | None = None
_lock = threading.Lock()


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lottery-explorer"


def _cpu() -> str:
    """What -march=native builds for: the CPU's model and instruction-set flags where Linux says them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in text.splitlines() if line.split(":")[0].strip() in
                              ("model name", "flags", "Features", "CPU part")}))


def _key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    return hashlib.sha256("\0".join([SOURCE.read_text(), cc, version, platform.machine(), _cpu(), *COMPILE,
                                     *LINK, *OPENMP]).encode()).hexdigest()[:16]


def _failure(*commands: list[str]) -> str | None:
    """Run the commands in turn: None if all succeed, else what the first to fail said."""
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{' '.join(command[:2])} …: {done.stderr.strip()[:300]}"
    return None


def _compile(cc: str, folder: Path, target: Path) -> None:
    """Built with OpenMP where the compiler has it, else without (one thread runs a call's pieces in turn)."""
    with tempfile.TemporaryDirectory(dir=folder) as work:
        obj, lib = Path(work, "k.o"), Path(work, "k.so")
        for openmp in (OPENMP, []):
            failure = _failure([cc, *COMPILE, *openmp, str(SOURCE), "-o", str(obj)],
                               [cc, str(obj), "-o", str(lib), *LINK, *openmp])
            if failure is None:
                break
        if failure is not None:
            raise RuntimeError(failure)
        os.replace(lib, target)


def _open(cc: str) -> ctypes.CDLL:
    """The library, from the cache or compiled into it (a cached file that does not load is built again);
    in a temporary folder, removed once loaded, if the cache folder cannot be written."""
    folder = _cache_dir()
    target = folder / f"posterior_kernel-{_key(cc)}.so"
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        pass  # not there yet, or damaged: (re)built
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _compile(cc, folder, target)
        return ctypes.CDLL(str(target))
    except OSError:  # the cache folder cannot be written (or a library there cannot be loaded: noexec)
        with tempfile.TemporaryDirectory(prefix="lottery-kernel-") as temporary:  # (a loaded library stays)
            path = Path(temporary, target.name)
            _compile(cc, Path(temporary), path)
            return ctypes.CDLL(str(path))


def _load() -> ctypes.CDLL | None:
    global _library, _noise, _tried, _why_not
    with _lock:
        if _tried:
            return _library
        _library = _noise = None  # (until this attempt succeeds)
        if os.environ.get("LOTTERY_FUSED_KERNEL", "1") == "0":
            _why_not = "turned off by LOTTERY_FUSED_KERNEL=0"
        elif (cc := _compiler()) is None:
            _why_not = f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
        else:
            try:
                library = _open(cc)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _why_not = f"could not build or load it: {e}"
            else:
                c_float, c_long, p = ctypes.c_float, ctypes.c_long, ctypes.c_void_p
                library.lte_posterior_forward.argtypes = [c_long, c_long, c_long, p, p, p, c_float, p]
                library.lte_posterior_backward.argtypes = [c_long, c_long, c_long, p, p, p, c_float, c_float, c_float]
                library.lte_normal.argtypes = [p, c_long, c_long, ctypes.c_uint64]
                library.lte_local_noise.argtypes = [p, p, p, c_long, c_long, ctypes.c_uint64]
                library.lte_posterior_forward.restype = library.lte_posterior_backward.restype = None
                library.lte_normal.restype = library.lte_local_noise.restype = None
                _library = _noise = library
        if _why_not and not _why_not.startswith("turned off"):
            log.warning("lottery: Bayesian posterior on PyTorch ops (~1.5x slower training steps): "
                        "its compiled kernel %s", _why_not)
        _tried = True
        return _library


def _flat_float32(tensors) -> bool:
    """Whether the library can read and write these through their pointers: contiguous float32 on the CPU."""
    return all(t.dtype is torch.float32 and t.is_cpu and t.is_contiguous() for t in tensors)


def available(*tensors: torch.Tensor) -> bool:
    """Whether the kernel serves these tensors (contiguous float32 on the CPU), building it on first use."""
    return (_library if _tried else _load()) is not None and _flat_float32(tensors)


def normals_available(like: torch.Tensor) -> bool:
    """Whether `normal_` fills tensors of `like`'s dtype and device (float32 on the CPU)."""
    if not _tried:
        _load()
    return _noise is not None and like.dtype is torch.float32 and like.is_cpu


def normal_(out: torch.Tensor, key: int) -> torch.Tensor:
    """Fill the contiguous float32 `out` with standard normals, a function of `key` (0 <= key < 2^64) only:
    Philox4x32-10 and Box-Muller (posterior_kernel.c), large tensors cut into pieces over torch's threads."""
    if not (normals_available(out) and out.is_contiguous()):
        raise ValueError("normal_: a contiguous float32 CPU tensor only")
    _noise.lte_normal(out.data_ptr(), out.numel(), _pieces(out.numel()), key)
    return out


def local_noise_serves(*tensors: torch.Tensor) -> bool:
    """Whether `local_noise_` takes these (contiguous float32 on the CPU; bf16 under autocast is not)."""
    return _noise is not None and _flat_float32(tensors)


def local_noise_(w: torch.Tensor, out: torch.Tensor, e: torch.Tensor, key: int) -> None:
    """out += sqrt(w) n / 2 and e = n / sqrt(w), n the normals `normal_` gives for `key` (w = 4 x the variance of
    local reparameterisation), all contiguous float32 of one shape (`local_noise_serves`)."""
    if not (local_noise_serves(w, out, e) and w.shape == out.shape == e.shape):
        raise ValueError("local_noise_: contiguous float32 CPU tensors of one shape only")
    _noise.lte_local_noise(w.data_ptr(), out.data_ptr(), e.data_ptr(), out.numel(), _pieces(out.numel()), key)


def status() -> str:
    """One line for benchmarks: whether the kernel is used, and if not why."""
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


def _pieces(n: int) -> int:
    """How many pieces a call over n entries is cut into, each run by a thread of torch's OpenMP pool (where the
    library was built with OpenMP): at least GRAIN entries a piece, one per torch thread at most."""
    return max(1, min(torch.get_num_threads(), n // GRAIN))


# the columns of the kernel's table of layers (posterior_kernel.c), in order
_COLUMNS = ("rho", "sigma", "mu", "std", "g_std", "d_rho", "g_mu", "d_mu", "idx")
_COLUMN = {name: c for c, name in enumerate(_COLUMNS)}


class Layers:
    """What one kernel call runs over: layers laid end to end, layer l with counts[l] weights (all of its weights,
    or a ticket's kept ones: `index[l]`, their flat positions in the layer as int32, None for all) and
    `squares[l]` (the std out is sigma^2, else sigma). Made once and reused: the calls take these as C arrays.
    The table holds column c's address for layer l at c * n + l: a column is written as one slice (a training
    step fills 11 columns; entry by entry that cost ~30 us of Python a step)."""

    def __init__(self, counts: list[int], squares: tuple[bool, ...], index: list[torch.Tensor] | None = None):
        n = len(counts)
        self.n, self.total = n, sum(counts)
        self.index = index or [None] * n  # (kept here: the table holds their addresses)
        self.offsets = [4 * sum(counts[:i]) for i in range(n)]  # (bytes: float32 is 4 bytes an entry)
        self.counts = (ctypes.c_long * n)(*counts)
        self.squares = (ctypes.c_int * n)(*map(int, squares))
        self.table = (ctypes.c_void_p * (n * len(_COLUMNS)))()
        self.fill(idx=self.index)

    def fill(self, **arrays) -> None:
        """Each array: one tensor over all layers laid end to end (rho, sigma and d_rho, over `counts`), a list of
        one per layer (None: not there), or None."""
        n = self.n
        for name, value in arrays.items():
            c = _COLUMN[name] * n
            if isinstance(value, torch.Tensor):
                base = value.data_ptr()
                self.table[c:c + n] = [base + offset for offset in self.offsets]
            elif value is None:
                self.table[c:c + n] = [None] * n
            else:
                self.table[c:c + n] = [None if t is None else t.data_ptr() for t in value]


def forward(layers: Layers, floor: float, **arrays) -> list[float]:
    """sigma = softplus(rho), std = (sigma where mu != 0)^2 if square else that (scattered to `index` on a compact
    support), and the KL's three sums (sum mu^2 + s^2, sum alive * log sigma, number alive). `arrays`: rho, sigma,
    mu, std as `Layers.fill` takes them, all contiguous float32."""
    layers.fill(**arrays)
    pieces = _pieces(layers.total)
    parts = (ctypes.c_double * (3 * pieces))()
    _library.lte_posterior_forward(layers.total, pieces, layers.n, layers.counts, layers.table, layers.squares,
                                   floor, parts)
    # (piece by piece, in order, whichever thread finished first: the same sums every time)
    return [sum(parts[i::3]) if pieces > 1 else parts[i] for i in range(3)]


def backward(layers: Layers, floor: float, grad_kl: float, var_p: float, **arrays) -> None:
    """d_rho and d_mu (see posterior_kernel.c) from rho, sigma, mu, g_std and g_mu; g_std may be d_rho and g_mu may
    be d_mu (in place); on a compact support d_mu is written at the kept weights only."""
    layers.fill(**arrays)
    _library.lte_posterior_backward(layers.total, _pieces(layers.total), layers.n, layers.counts, layers.table,
                                    layers.squares, floor, grad_kl, 1.0 / var_p)
