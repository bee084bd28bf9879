"""Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear mode connectivity and the LTH").

For a stored run, a level's mask m (level 0: the dense net) and each rewind point k: start from
m * W_k, train two copies to the end of training with different data orders (the only SGD noise here),
and measure the error barrier on the straight line between the two results. A barrier below 2% means
the network is *stable* at k: SGD noise no longer decides which linearly connected minimum it reaches.

W_k is the *dense* network after k iterations of the run's own dense training (same initialisation,
same data-order seed as the run's level 0), as in the paper, where a ticket rewound to k restarts from
m * W_k. So W_k is exactly the run's late-rewinding point when the run used `--rewind iter:k`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from .. import masks as M
from .. import trainer
from ..batched import Member, check_batchable, train_batched
from ..config import RunConfig, option, validate
from ..errors import ConfigError, RunCancelled, Unsupported
from ..registry import ANALYSES, METHODS, AnalysisSpec
from ..seeding import derive_seed
from ..store import load_tensors
from .common import AnalysisProgress, StoredRun, dense_seed, no_controls, save_analysis
from .interpolation import batchnorms, bn_subset, error_barrier, interpolate, loss_barrier

DEFAULT_REWIND_POINTS = (0, 25, 100, 500)
# BatchNorm statistics of each interpolated net come from this many training examples (a fixed subset):
# the whole split made the preset's 31-point curves cost minutes; see bench/instability_speed.py for the
# measured effect of the subset on the barrier.
DEFAULT_BN_EXAMPLES = 1024
STABLE_THRESHOLD = 0.02  # "stable" when the error barrier is at most 2 percentage points


class _Captured(Exception):
    """Raised from `on_step` once the last requested rewind point is captured: stops training early."""


def parse_rewind_points(text: str) -> tuple[int, ...]:
    """"0,25,100" -> (0, 25, 100), or ConfigError naming rewind_points."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError("rewind_points", text, "must be comma-separated integer iterations, e.g. 0,25,100,500") \
            from None


def check_rewind_points(rewind_points, total_steps: int, late: int | None = None) -> list[int]:
    """Sorted, distinct iterations in [0, total_steps), or ConfigError (`late`: the run's own late-rewinding
    iteration, suggested when the default points do not fit)."""
    points = list(rewind_points)
    if (not points or any(not isinstance(k, int) or isinstance(k, bool) for k in points)
            or len(set(points)) != len(points)):
        raise ConfigError("rewind_points", rewind_points, "must be one or more distinct integer iterations")
    if min(points) < 0 or max(points) >= total_steps:
        allowed = f"each must be in [0, {total_steps}) (this run trains {total_steps} iterations)"
        if tuple(points) == DEFAULT_REWIND_POINTS:  # not typed: say so, and name points that fit
            k = late if late is not None and 0 < late < total_steps else max(1, total_steps // 4)
            allowed += f"; the default points are for longer runs: e.g. --rewind-points 0,{k}"
        raise ConfigError("rewind_points", rewind_points, allowed)
    return sorted(points)


def rewind_weights(run: StoredRun, points: list[int], cancel=None) -> dict[int, dict[str, torch.Tensor]]:
    """{k: W_k}: the run's initial weights for k = 0, the dense training's weights after k steps otherwise.

    The run's stored late-rewinding point (`--rewind iter:K`) is reused for k = K; every other W_k comes
    from ONE replay of the dense training up to the largest such k, capturing each on the way.
    """
    init = run.init_weights()
    out = {0: init} if 0 in points else {}
    stored_k = run.config.prune.rewind_point.iteration if run.config.prune.rewind_point.kind == "iter" else None
    path = run.store.weights_path("rewind")
    if stored_k in points and stored_k > 0 and path.exists():
        out[stored_k] = load_tensors(path, run.device)
    wanted = [k for k in points if k > 0 and k not in out]
    if wanted:
        model = run.make_model()
        model.load_state_dict(init)

        def on_step(step, m):
            if step in wanted:
                out[step] = {k: v.detach().clone() for k, v in m.state_dict().items()}
                if step == wanted[-1]:
                    raise _Captured

        try:
            trainer.train(model, run.data, run.config.train, None, seed=dense_seed(run.config),
                          on_step=on_step, cancel=cancel)
        except _Captured:
            pass
    return out


def _copy_seed(cfg: RunConfig, level: int, k: int, copy: int) -> int:
    return derive_seed(cfg.seed, "instability", level, k, copy)


def _train_copies(run: StoredRun, starts: dict, ks: list[int], mask, level: int, batched: bool, cancel):
    """{k: (weights a, weights b, test accuracy a, test accuracy b)}: two copies from m * W_k per rewind point.

    Batched: all 2 x len(ks) copies as one engine.batched computation (copies from a later k join it at
    their step k), which trains each exactly as engine.trainer.train would alone (tests/test_batched.py).
    Otherwise (or for what the batched trainer cannot train, or has not been tested on: Bayesian layers, a
    transformer's dropout) one copy at a time.
    """
    cfg = run.config
    model = run.make_model()
    if batched:
        try:
            check_batchable(model, run.data, tested_only=True)  # (a text run's dropout: one by one)
        except Unsupported:
            batched = False
    out = {}
    if batched:
        members = [Member(starts[k], mask, _copy_seed(cfg, level, k, c), start_step=k) for k in ks for c in (0, 1)]
        trained = train_batched(model, run.data, cfg.train, members, cancel=cancel)
        for i, k in enumerate(ks):
            a, b = (trained.member(2 * i + c) for c in (0, 1))
            out[k] = (a, b, *(trained.results[2 * i + c].final["test_accuracy"] for c in (0, 1)))
        return out
    for k in ks:
        ends = []
        for c in (0, 1):
            if cancel is not None and cancel.is_set():
                raise RunCancelled("cancelled")
            model = run.make_model()
            model.load_state_dict(starts[k])
            M.apply(model, mask)
            result = trainer.train(model, run.data, cfg.train, mask, start_step=k, cancel=cancel,
                                   seed=_copy_seed(cfg, level, k, c))
            ends.append(({n: v.detach().clone() for n, v in model.state_dict().items()},
                         result.final["test_accuracy"]))
        out[k] = (ends[0][0], ends[1][0], ends[0][1], ends[1][1])
    return out


def instability(config: RunConfig | str, runs_dir: str | os.PathLike, rewind_points=DEFAULT_REWIND_POINTS,
                level: int = 0, points: int = 31, on_event=None, cancel=None, device=None,
                bn_examples: int = DEFAULT_BN_EXAMPLES, batched: bool = True) -> dict:
    """Error barrier between two differently-ordered trainings from m * W_k, for each rewind point k.

    `config` is the run's RunConfig or its run id. Returns (and stores as
    RUN_DIR/analyses/instability-L{level}.json) a JSON-ready dict: the barriers in the order of the
    sorted rewind points and the interpolation curve for each k (keyed by str(k), as JSON keys are).
    `bn_examples`: a model with BatchNorm gets the statistics of every interpolated net recomputed on this
    fixed subset of the training split (interpolation.bn_subset). `batched`: train all copies as one
    computation (False: one at a time, the reference path; both give the same barriers to float rounding).
    `cancel.is_set()` is checked every training step and between trainings (RunCancelled).
    """
    run = StoredRun(runs_dir, config, device)
    cfg = run.config
    data = run.data
    if level > 0 and not METHODS.get(cfg.prune.method, "prune.method").trains_controls:
        # its tickets are not masks trained from the run's weights like IMP's: training one from W_k measures a run
        # that never happened
        raise ConfigError("--level", level, f"instability trains level {level}'s mask from W_k like an IMP ticket, "
                          f"which run {run.store.run_id} never does: {no_controls(cfg.prune.method)}; --level 0 "
                          "(the dense net) works")
    mask, _, record = run.level(level)  # (before the rewind points: a level the run lacks is the typed flag to name)
    total = trainer.total_steps(len(data.train), cfg.train)
    ks = check_rewind_points(rewind_points, total, cfg.prune.rewind_point.iteration)
    t0 = time.perf_counter()
    starts = rewind_weights(run, ks, cancel)
    copies = _train_copies(run, starts, ks, mask, level, batched, cancel)
    model = run.make_model()
    bn_data = bn_subset(data.train, bn_examples, cfg.seed) if batchnorms(model) else None

    barriers, loss_barriers, endpoints, curves = [], [], [], {}
    for i, k in enumerate(ks):
        if cancel is not None and cancel.is_set():
            raise RunCancelled("cancelled")
        a, b, acc_a, acc_b = copies[k]
        curve = interpolate(model, a, b, data.test, points, mask, bn_data=bn_data)
        curves[str(k)] = curve
        barriers.append(error_barrier(curve))
        loss_barriers.append(loss_barrier(curve))
        endpoints.append([acc_a, acc_b])
        if on_event is not None:
            on_event(AnalysisProgress(run.store.run_id, "instability", i + 1, len(ks),
                                      f"k={k}: error barrier {barriers[-1]:.4f}"))

    result = {
        "analysis": "instability", "run_id": run.store.run_id, "method": cfg.prune.method, "level": level,
        "density": record["density"],
        "rewind_points": ks, "barriers": barriers, "loss_barriers": loss_barriers,
        "endpoint_test_accuracy": endpoints, "curves": curves, "stable_threshold": STABLE_THRESHOLD,
        "points": points, "iterations": total, "seconds": round(time.perf_counter() - t0, 3),
    }
    if bn_data is not None:
        result["bn_examples"] = len(bn_data)
    save_analysis(run.store, f"instability-L{level}", result, on_event)
    return result


@dataclass(frozen=True)
class InstabilityOptions:
    rewind_points: tuple = option(DEFAULT_REWIND_POINTS, "iterations k of the rewind points W_k, comma separated",
                                  item_type=int, lo=0)
    level: int = option(0, "the ticket level whose mask trains from W_k (0: the dense net)", lo=0)
    points: int = option(31, "interpolation points", lo=2, hi=10_000)
    bn_examples: int = option(DEFAULT_BN_EXAMPLES, "BatchNorm models: training examples (a fixed subset) on "
                              "which each interpolated net's statistics are recomputed", lo=1, hi=10_000_000)
    batched: bool = option(True, "train the two copies of every rewind point as one batched computation "
                           "(off: one copy at a time, the slower reference path)")

    def __post_init__(self):
        validate(self)


def format_instability(name: str, a: dict) -> str:
    pairs = ", ".join(f"k={k}: {b:.4f}" for k, b in zip(a["rewind_points"], a["barriers"]))
    ks, within = a["rewind_points"], f"(<= {a['stable_threshold']:.0%})"
    ok = [b <= a["stable_threshold"] for b in a["barriers"]]
    # stable *from* k: at k and every later point (the first stable k alone read as stable at a later unstable one)
    first = next((i for i in range(len(ks)) if all(ok[i:])), None)
    if first is not None:
        verdict = f"stable {within} from k={ks[first]}"
    elif any(ok):
        verdict = (f"stable {within} only at k={', '.join(str(k) for k, s in zip(ks, ok) if s)} (not at "
                   f"k={', '.join(str(k) for k, s in zip(ks, ok) if not s)})")
    else:
        verdict = f"never stable {within}"
    line = f"{name}: error barrier by rewind point {pairs}; {verdict}"
    method = a.get("method")  # (analyses stored before it was recorded have none)
    if method is None or METHODS.get(method, "prune.method").trains_controls:
        return line
    # Only level 0 is measured for such a run (--level N is refused), and its barriers are not the method's: a
    # ks-lottery run's 0.0000 beside a lota run's 0.0181 read as ks-lottery's tickets being stable.
    return (f"{line}\nlevel 0 is the run's dense network, trained alike by any method with the same data, model, "
            f"training settings and seed; {method}'s tickets never train from W_k, so their instability is not "
            "measured")


ANALYSES.register("instability", "linear-mode-connectivity barrier of two trainings from each rewind point W_k")(
    AnalysisSpec(format_instability, options=InstabilityOptions,
                 compute=lambda runs_dir, run_id, o, on_event=None, cancel=None: instability(
                     run_id, runs_dir, o.rewind_points, o.level, o.points, on_event=on_event, cancel=cancel,
                     bn_examples=o.bn_examples, batched=o.batched)))
