"""Latency probes: what sparsity buys on this hardware (the "hardware lottery").

Times inference of one computation stored in different ways, for a single Linear layer (`probe_layer`),
a stored ticket (`probe_run`) or any model and mask (`probe_model`):

  dense    the dense weights: the baseline every speedup is measured against;
  masked   the mask applied to dense weights: the same work, zeros multiplied (what training runs);
  csr      unstructured sparse: Linear weights as torch sparse CSR (convolutions stay dense: PyTorch has
           no sparse convolution);
  channel  pruned channels cut out: physically smaller dense layers (engine.shrink);
  2:4      semi-structured sparse weights (torch.sparse.to_sparse_semi_structured: CUDA with compute
           capability >= 8.0, mostly fp16/bf16); where that fails the row says "unavailable" with the
           reason PyTorch gives, never a made-up number.

Every row carries the parameters stored, FLOPs, the theoretical speedup (dense FLOPs / the row's FLOPs)
next to the measured one (dense median / the row's median), and the median and interquartile range of
torch.utils.benchmark's blocked_autorange. FLOPs = 2 x the multiply-accumulates of Linear/Conv weights
actually computed (`macs`); biases, activations and pooling are not counted, and masked dense counts every
weight because it multiplies the zeros.

Probes run on whatever thread calls them: `progress(done, total, row)` after every row, and `cancel`
(anything with is_set(), e.g. threading.Event) stops between rows with RunCancelled. `threads` sets the
CPU threads while timing (torch's setting is process-wide; torch.utils.benchmark restores it after).
"""
from __future__ import annotations

import copy
import logging
import platform
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which logs "No CUDA runtime is found" on CPU-only machines
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

from . import masks as M
from .config import option, validate
from .errors import ConfigError, RunCancelled, Unsupported
from .shrink import shrink
from .structured import is_nm, keep_channels, keep_nm

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# ---------------------------------------------------------------- counting
@torch.no_grad()
def macs(model: nn.Module, example: torch.Tensor, mask: M.Mask | None = None) -> int:
    """Multiply-accumulates per example of the Linear/Conv weights: every weight, or only the kept ones of
    the layers `mask` names, times the positions it is applied at (a conv's output pixels)."""
    per_layer, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, M.PRUNABLE_TYPES):
            key = M.param_name(name)
            weights = int(mask[key].sum()) if mask is not None and key in mask else mod.weight.numel()

            def hook(mod, inputs, out, key=key, weights=weights):
                per_layer[key] = weights * (out[0].numel() // mod.weight.shape[0])
            hooks.append(mod.register_forward_hook(hook))
    try:
        model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return sum(per_layer.values())


def parameters(model: nn.Module, mask: M.Mask | None = None) -> int:
    """Values stored: every parameter, except that the layers `mask` names store only their kept weights."""
    mask = mask or {}
    return sum(int(mask[n].sum()) if n in mask else p.numel() for n, p in model.named_parameters())


# ---------------------------------------------------------------- the ways to store a computation
@dataclass
class Variant:
    pattern: str
    sparsity: float
    build: Callable  # (dtype, device) -> the module on `device`; raises Unsupported where it cannot run
    params: int | None  # values stored (None: unknown, the variant cannot be built)
    macs: int | None    # multiply-accumulates per example
    note: str = ""


class CSRLinear(nn.Module):
    """A Linear layer whose masked weight is stored as sparse CSR: y = (W x^T)^T + b."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and measured here
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x):
        y = torch.mm(self.weight, x.t()).t()
        return y if self.bias is None else y + self.bias


def _masked(model: nn.Module, mask: M.Mask, dtype, device) -> nn.Module:
    model = copy.deepcopy(model).to(device, dtype)
    M.apply(model, {n: m.to(device) for n, m in mask.items()})
    return model


def _replace_linears(model: nn.Module, names: list[str], make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    """`model` with its Linear layers whose weights are named in `names` replaced by make(layer)."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and M.param_name(name) in names:
            if not name:  # the model is the Linear itself
                return make(mod)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, make(mod))
    return model


def _semi_structured(linear: nn.Linear) -> nn.Linear:
    from torch.sparse import to_sparse_semi_structured

    try:
        weight = to_sparse_semi_structured(linear.weight.detach())
    except Exception as e:  # CPU, older GPU, a dtype or shape the kernels do not take: PyTorch says which
        raise Unsupported(f"to_sparse_semi_structured: {_first_line(e)}") from None
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


def dense_variant(model: nn.Module, example: torch.Tensor) -> Variant:
    return Variant("dense", 0.0, lambda dtype, device: copy.deepcopy(model).to(device, dtype), parameters(model),
                   macs(model, example))


def masked_variant(model: nn.Module, mask: M.Mask, example: torch.Tensor) -> Variant:
    return Variant("masked", 1 - M.density(mask), lambda dtype, device: _masked(model, mask, dtype, device),
                   parameters(model), macs(model, example))  # every weight is multiplied, zeros included


def csr_variant(model: nn.Module, mask: M.Mask, example: torch.Tensor) -> Variant:
    sparse = {n: mask[n] for n in _linears(model, mask)}

    def build(dtype, device):
        return _replace_linears(_masked(model, mask, dtype, device), list(sparse), CSRLinear)
    return Variant("csr", 1 - M.density(mask), build, parameters(model, sparse), macs(model, example, sparse),
                   _conv_note(model))


def channel_variant(model: nn.Module, mask: M.Mask, example: torch.Tensor) -> Variant:
    try:
        small = shrink(model, mask, example)
    except Unsupported as e:
        def build(dtype, device, reason=str(e)):
            raise Unsupported(reason)
        return Variant("channel", 1 - M.density(mask), build, None, None)
    return Variant("channel", 1 - M.density(mask), lambda dtype, device: copy.deepcopy(small).to(device, dtype),
                   parameters(small), macs(small, example))


def semi_structured_variant(model: nn.Module, mask: M.Mask, example: torch.Tensor) -> Variant:
    """2:4 kernels for the Linear layers whose mask is 2:4; the other layers stay masked dense."""
    sparse = {n: mask[n] for n in _linears(model, mask) if is_nm(mask[n], 2, 4)}

    def build(dtype, device):
        if not sparse:
            raise Unsupported("no Linear layer of this mask is 2:4 (train with --pattern nm --nm 2:4)")
        return _replace_linears(_masked(model, mask, dtype, device), list(sparse), _semi_structured)
    return Variant("2:4", 1 - M.density(mask), build, parameters(model, sparse), macs(model, example, sparse),
                   _conv_note(model))


def _linears(model: nn.Module, mask: M.Mask) -> list[str]:
    return [M.param_name(n) for n, m in model.named_modules() if isinstance(m, nn.Linear) and M.param_name(n) in mask]


def _conv_note(model: nn.Module) -> str:
    convs = any(isinstance(m, M.PRUNABLE_TYPES) and not isinstance(m, nn.Linear) for m in model.modules())
    return "conv layers dense (PyTorch has no sparse convolution)" if convs else ""


# ---------------------------------------------------------------- probes
def probe_layer(in_features: int, out_features: int, *, batches=(1, 64, 256), dtypes=("float32",),
                sparsities=(0.5, 0.9), device="auto", min_run_time: float = 0.2, threads: int | None = None,
                progress=None, cancel=None) -> dict:
    """nn.Linear(in_features, out_features) with random weights, pruned by magnitude at each sparsity:
    unstructured (masked, csr), whole output rows (channel: a Linear with fewer outputs; the next layer,
    absent here, would lose the matching inputs) and 2:4 (once: its sparsity is 0.5 by construction)."""
    with torch.random.fork_rng(devices=[]):  # the same layer every time, the caller's RNG untouched
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(in_features, out_features)).requires_grad_(False)
    weight = model[0].weight
    dense = torch.ones_like(weight, dtype=torch.bool)
    example = torch.zeros(1, in_features)
    variants = [dense_variant(model, example)]
    for s in sparsities:
        unstructured = {"0.weight": M.keep_density(weight.abs(), dense, 1 - s)}
        channels = keep_channels(weight.abs().sum(1), dense, max(1, round((1 - s) * out_features)))
        variants += [masked_variant(model, unstructured, example), csr_variant(model, unstructured, example),
                     _channel_layer(model[0], channels.any(1), 1 - M.density({"0.weight": channels}))]
    variants.append(semi_structured_variant(model, {"0.weight": keep_nm(weight.abs(), dense, 2, 4)}, example))
    return _measure(variants, f"Linear {in_features}->{out_features}", (in_features,), batches, dtypes,
                    _device(device), min_run_time, threads, progress, cancel)


def probe_model(model: nn.Module, mask: M.Mask, input_shape, *, target: str = "model", batches=(1, 64, 256),
                dtypes=("float32",), device="auto", min_run_time: float = 0.2, threads: int | None = None,
                progress=None, cancel=None) -> dict:
    """`model` (its current weights, eval mode) with `mask`: dense, masked, csr, channel and 2:4 rows."""
    model = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    mask = {n: m.cpu() for n, m in mask.items()}
    example = torch.zeros(1, *input_shape)
    variants = [dense_variant(model, example), masked_variant(model, mask, example), csr_variant(model, mask, example),
                channel_variant(model, mask, example), semi_structured_variant(model, mask, example)]
    return _measure(variants, target, tuple(input_shape), batches, dtypes, _device(device), min_run_time, threads,
                    progress, cancel)


def probe_run(runs_dir, run_id: str, level: int | None = None, **options) -> dict:
    """A stored ticket (default: the last completed level) through `probe_model`."""
    from .analysis.common import StoredRun
    from .store import RunStore

    store = RunStore(runs_dir, run_id)
    if not store.exists():
        raise ConfigError("--run", run_id, f"no such run in {runs_dir} (see `lottery list`)")
    stored = store.config()
    if stored.get("custom_model"):  # bad input (exit 2), as zoo --ticket and the analyses refuse such a run
        raise ConfigError("--run", run_id, f"trained a user's own module ({stored['custom_model']}), which the store "
                          "does not keep; probe it from Python with engine.probe.probe_model(model, mask, input_shape)")
    levels = [r["level"] for r in store.records("ticket")]
    level = levels[-1] if level is None and levels else level
    if level not in levels:
        raise ConfigError("--level", level, f"completed levels of this run: {levels}")
    run = StoredRun(runs_dir, run_id, device="cpu")
    model, mask = run.ticket(level)
    target = f"{run_id} level {level} (density {M.density(mask):.2%})"
    return probe_model(model, mask, run.data.input_shape, target=target, **options)


def _channel_layer(linear: nn.Linear, keep: torch.Tensor, sparsity: float) -> Variant:
    small = nn.Linear(linear.in_features, int(keep.sum())).requires_grad_(False)
    small.weight.copy_(linear.weight[keep])
    small.bias.copy_(linear.bias[keep])
    return Variant("channel", sparsity, lambda dtype, device: copy.deepcopy(small).to(device, dtype),
                   parameters(small), small.weight.numel())


# ---------------------------------------------------------------- timing
def _measure(variants: list[Variant], target: str, input_shape, batches, dtypes, device, min_run_time, threads,
             progress, cancel) -> dict:
    threads = threads or torch.get_num_threads()
    result = {"target": target, "device": describe(device, threads), "threads": threads,
              "min_run_time": min_run_time, "rows": []}
    total, done = len(variants) * len(batches) * len(dtypes), 0
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        built = {}
        for v in variants:
            try:
                built[id(v)] = v.build(dtype, device).eval().requires_grad_(False)
            except Unsupported as e:
                built[id(v)] = str(e)
            except Exception as e:  # e.g. no fp16 CSR conversion here: that row is unavailable, the rest go on
                built[id(v)] = f"{type(e).__name__}: {_first_line(e)}"
        for batch in batches:
            x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(batch)).to(device, dtype)
            base = None
            for v in variants:
                if cancel is not None and cancel.is_set():
                    raise RunCancelled("probe cancelled")
                row = _row(v, built[id(v)], x, dtype_name, min_run_time, threads, base)
                if v.pattern == "dense":
                    base = row
                result["rows"].append(row)
                done += 1
                if progress is not None:
                    progress(done, total, row)
    return result


def _row(v: Variant, module, x, dtype_name: str, min_run_time: float, threads: int, base: dict | None) -> dict:
    """One measurement; `base` is the dense row of the same batch and dtype (None for dense itself)."""
    flops = None if v.macs is None else 2 * v.macs * len(x)
    base_flops = flops if base is None else base["flops"]
    row = {"pattern": v.pattern, "sparsity": round(v.sparsity, 6), "batch": len(x), "dtype": dtype_name,
           "params": v.params, "flops": flops,
           "theoretical_speedup": base_flops / flops if flops and base_flops else None,
           "median_ms": None, "iqr_ms": None, "speedup": None, "available": False, "reason": None, "note": v.note}
    if isinstance(module, str):
        row["reason"] = module
        return row
    try:
        module(x)  # fails fast where this dtype or layout has no kernel here
        timer = benchmark.Timer("f(x)", globals={"f": module, "x": x}, num_threads=threads)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    except Exception as e:  # e.g. float16 sparse CSR on CPU: "not implemented for 'Half'"
        row["reason"] = f"{type(e).__name__}: {_first_line(e)}"
        return row
    row.update(available=True, median_ms=m.median * 1e3, iqr_ms=m.iqr * 1e3)
    base = row if base is None else base
    if base["available"]:
        row["speedup"] = base["median_ms"] / row["median_ms"]
    return row


def describe(device: torch.device | str = "auto", threads: int | None = None) -> str:
    """The device probes run on, in words ("cpu (x86_64, 2 threads)", "NVIDIA H100 (CUDA, ...)")."""
    device, threads = _device(device), threads or torch.get_num_threads()
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (CUDA, compute capability {major}.{minor})"
    return f"{device.type} ({platform.machine()}, {threads} thread{'' if threads == 1 else 's'})"


def _device(name) -> torch.device:
    from .runner import resolve_device
    return name if isinstance(name, torch.device) else resolve_device(name)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- options (CLI flags and the app's widgets)
MAX_LAYER_WEIGHTS = 2 ** 26  # a probed layer up to 64 Mi weights (256 MB in float32)


def parse_layer(text: str, field: str = "layer") -> tuple[int, int]:
    """"4096x4096" -> (in_features, out_features), at most MAX_LAYER_WEIGHTS weights."""
    parts = text.lower().split("x") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(field, text, "must be INxOUT with positive integers, e.g. 4096x4096 (in x out features)")
    if int(parts[0]) * int(parts[1]) > MAX_LAYER_WEIGHTS:
        raise ConfigError(field, text, f"at most {MAX_LAYER_WEIGHTS} weights (in x out), e.g. 8192x8192")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class ProbeOptions:
    """What `lottery probe` and the app's Hardware tab ask for: a stored ticket (run) or one Linear layer."""
    run: str | None = option(None, "probe a stored ticket (its own mask): its RUN_ID")
    level: int | None = option(None, "the ticket's level (default: the last)", lo=0)
    layer: str | None = option(None, "probe one Linear layer INxOUT, e.g. 4096x4096 (default without --run: "
                               "1024x1024)", check=lambda v, path: parse_layer(v, path))
    sparsity: tuple | None = option(None, "layer probes: sparsities, comma separated (default: 0.5,0.9)",
                                    item_type=float, lo=0, hi=1, lo_open=True, hi_open=True)
    batch: tuple = option((1, 64, 256), "batch sizes, comma separated", item_type=int, lo=1, hi=65_536,
                          check=lambda v, path: _some(v, path))
    dtype: tuple = option(("float32",), "dtypes, comma separated", item_type=str, choices=list(DTYPES),
                          check=lambda v, path: _some(v, path))
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    min_time: float = option(0.2, "seconds of timing per row", lo=0, hi=60, lo_open=True)
    threads: int | None = option(None, "CPU threads while timing (default: torch's, one per core)", lo=1,
                                 hi=1024)

    def __post_init__(self):
        validate(self)
        if self.run is not None and (self.sparsity is not None or self.layer is not None):
            raise ConfigError("sparsity" if self.sparsity is not None else "layer",
                              self.sparsity if self.sparsity is not None else self.layer,
                              "applies to layer probes; --run probes the ticket's own mask")
        if self.run is None and self.level is not None:
            raise ConfigError("level", self.level, "needs --run RUN_ID")


def _some(value: tuple, path: str) -> None:
    if not value:
        raise ConfigError(path, value, "must name at least one")


def probe(options: ProbeOptions, runs_dir, progress=None, cancel=None) -> dict:
    """The probe `options` ask for: a stored ticket's or a Linear layer's rows."""
    timing = {"batches": options.batch, "dtypes": options.dtype, "device": options.device,
              "min_run_time": options.min_time, "threads": options.threads, "progress": progress, "cancel": cancel}
    if options.run is not None:
        return probe_run(runs_dir, options.run, options.level, **timing)
    return probe_layer(*parse_layer(options.layer or "1024x1024"), sparsities=options.sparsity or (0.5, 0.9),
                       **timing)


# ---------------------------------------------------------------- printing (CLI)
def parse_list(text: str, field: str, kind, allowed: str) -> list:
    """"1,64" -> [1, 64] (the Hardware tab's text boxes; the CLI parses ProbeOptions' flags)."""
    try:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(field, text, allowed)
    return values


def format_table(result: dict) -> str:
    lines = [f"{result['target']} on {result['device']} (median of torch.utils.benchmark, IQR in brackets)",
             f"{'pattern':<8} {'sparsity':>8} {'batch':>6} {'dtype':<8} {'params':>10} {'FLOPs':>7} "
             f"{'theory':>7} {'ms':>9} {'(IQR)':>9} {'measured':>8}  note"]
    for r in result["rows"]:
        line = (f"{r['pattern']:<8} {r['sparsity']:>8.0%} {r['batch']:>6} {r['dtype']:<8} "
                f"{_num(r['params'], '{:,}'):>10} {_si(r['flops']):>7} "
                f"{_num(r['theoretical_speedup'], '{:.2f}x'):>7} ")
        if r["available"]:
            line += (f"{r['median_ms']:>9.4f} {'(' + format(r['iqr_ms'], '.4f') + ')':>9} "
                     f"{_num(r['speedup'], '{:.2f}x'):>8}  {r['note']}")
        else:
            line += f"{'unavailable':>28}  {r['reason']}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _si(value) -> str:
    """8.6G, 26.3k: FLOPs at a glance."""
    if value is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return str(value)
