"""Loss and error along the straight line between two weight sets, and the error barrier.

theta(alpha) = (1 - alpha) * A + alpha * B for alpha evenly spaced in [0, 1]. Masks are respected: a
weight pruned in the mask is 0 at every alpha (it already is at both endpoints of a ticket; multiplying
by the mask makes it so for any pair). Every point is evaluated by `engine.trainer.evaluate`, the same
path that produced the runs' accuracies, and alpha = 0 / 1 give A / B bit for bit, so the endpoints of
a curve reproduce the endpoint nets' numbers exactly.

BatchNorm: interpolating running statistics is meaningless (the statistics of the interpolated net's
activations are not the interpolation of the endpoints' statistics), so for a model with BatchNorm every
point, the endpoints included, gets statistics recomputed on training data (Frankle et al. 2020). The
endpoints then reproduce the endpoint nets *with recomputed statistics*: one consistent rule for the
whole curve keeps the barrier free of a bias between stored and recomputed statistics.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import option, validate
from ..data import Split
from ..errors import ConfigError, Unsupported
from ..formatting import pct
from ..masks import Mask
from ..registry import ANALYSES, METHODS, AnalysisSpec
from ..seeding import generator
from ..trainer import evaluate
from .common import StoredRun, no_controls, save_analysis

BN_BATCH = 256


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, data: Split, batch: int = BN_BATCH) -> None:
    """Replace every BatchNorm's running statistics by their average over `data` for the current weights.

    momentum=None makes BatchNorm keep a cumulative average over the batches seen since the reset.
    Only the BatchNorm layers are put in train mode, so nothing else (dropout) acts differently.
    """
    bns = batchnorms(model)
    was_training = model.training
    saved = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for i in range(0, len(data), batch):
        model(data.x[i:i + batch])
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.train(was_training)


def bn_subset(split: Split, examples: int, seed: int) -> Split:
    """A fixed subset of `examples` examples of `split` (all of it when it is no larger) on which BatchNorm
    statistics are recomputed: drawn from its own named stream of `seed`, so every interpolated net of an
    analysis (and a rerun of it) sees exactly the same examples; sorted, so it keeps the split's order.
    Recomputing on a subset is what makes a curve of many points affordable on a CPU."""
    if examples >= len(split):
        return split
    idx = torch.randperm(len(split), generator=generator(seed, "bn-subset"))[:examples].sort().values
    idx = idx.to(split.y.device)
    return Split(split.x[idx], split.y[idx])


def _blend(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float,
           mask: Mask | None) -> dict[str, torch.Tensor]:
    out = {}
    for k, va in a.items():
        if va.is_floating_point():
            # (1-a)*A + a*B, not torch.lerp: this form is exactly A at alpha=0 and exactly B at alpha=1.
            v = va * (1.0 - alpha) + b[k] * alpha
            out[k] = v * mask[k] if mask is not None and k in mask else v
        else:
            out[k] = va  # integer buffers (BatchNorm's num_batches_tracked): not interpolable, unused here
    return out


def interpolate(model: nn.Module | Callable[[], nn.Module], weights_a: dict[str, torch.Tensor],
                weights_b: dict[str, torch.Tensor], data_split: Split, points: int = 31,
                mask: Mask | None = None, bn_data: Split | None = None) -> list[dict]:
    """[{alpha, loss, accuracy, error}] at `points` evenly spaced alphas from 0 (A) to 1 (B) inclusive.

    `model` is a module of the right architecture (it is copied, never modified) or a factory of one.
    `bn_data` (usually the training split) is required when the model has BatchNorm, unused otherwise.
    """
    if points < 2:
        raise ValueError(f"points must be at least 2 (the two endpoints), got {points}")
    net = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
    net = net.to(data_split.x.device)
    has_bn = bool(batchnorms(net))
    if has_bn and bn_data is None:
        raise ValueError("this model has BatchNorm: pass bn_data (e.g. the training split) so the statistics "
                         "of each interpolated net are recomputed")
    if set(weights_a) != set(weights_b):
        raise ValueError("the two weight sets hold different parameters: "
                         f"{sorted(set(weights_a) ^ set(weights_b))[:5]}")
    curve = []
    for alpha in (i / (points - 1) for i in range(points)):
        net.load_state_dict(_blend(weights_a, weights_b, alpha, mask))
        if has_bn:
            recompute_bn_stats(net, bn_data)
        loss, acc = evaluate(net, data_split)
        curve.append({"alpha": alpha, "loss": loss, "accuracy": acc, "error": 1.0 - acc})
    return curve


def _barrier(curve: list[dict], key: str) -> float:
    first, last = curve[0][key], curve[-1][key]
    return max(p[key] - ((1 - p["alpha"]) * first + p["alpha"] * last) for p in curve)


def error_barrier(curve: list[dict]) -> float:
    """max over alpha of error(alpha) - [(1 - alpha) error(0) + alpha error(1)].

    Never negative (the endpoints contribute 0). Frankle et al. 2020 subtract the *mean* of the endpoint
    errors instead; the two agree when the endpoints' errors do, which two copies of one training
    nearly always do, and the linear form stays 0 for any linearly connected pair.
    """
    return _barrier(curve, "error")


def loss_barrier(curve: list[dict]) -> float:
    """The same barrier on the loss."""
    return _barrier(curve, "loss")


def default_partner(run_id: str, level: int, own: list[str], variants: list[str], method: str = "imp") -> str:
    """The net a ticket is interpolated to when none is named: the run's first own control (its --controls, as
    trained beside every ticket), else the only other trained net of the level. Several others and none of them
    the run's own (`--controls none`, then `lottery analyze RUN sanity` trained reinit, random, shuffle, inverted,
    ...): the barrier means something different for each (reinit keeps the mask, random, shuffle and inverted
    do not), so none is picked for the user; the error lists them."""
    if own:
        return own[0]
    if len(variants) == 1:
        return variants[0]
    if not variants:
        # named for the RUN_ID typed (not "level": the CLI would name the --level flag, which was not typed); a
        # refusal of this run, so exit 2. A method that trains no controls is refused by sanity too.
        if not METHODS.get(method, "prune.method").trains_controls:
            raise ConfigError("RUN_ID", run_id, f"the barrier has no other trained net of level {level} to "
                              f"interpolate to: {no_controls(method)}")
        raise ConfigError("RUN_ID", run_id, f"trained no controls: the barrier has no other trained net of level "
                          f"{level} to interpolate to (`lottery analyze {run_id} sanity` trains them)")
    raise ConfigError("--against", None, f"run {run_id} trains no control of its own, and level {level} has "
                      f"{len(variants)} other trained nets: name one of {', '.join(sorted(variants))}")


def run_barrier(runs_dir, run_id: str, level: int | None = None, against: str | None = None, points: int = 31,
                on_event=None, rebasin: bool = False) -> dict:
    """Interpolate, on the test split, between a ticket level's trained weights and another trained net of
    the same level (`against`: a trained variant of that level, default `default_partner`'s), and store the barrier as
    RUN_DIR/analyses/barrier-L{level}-{against}.json. Level defaults to the last completed one.
    `rebasin`: also interpolate to B with its hidden units permuted to match A (engine.rebasin weight
    matching; B's mask moves with its weights), stored as matched_curve / matched_error_barrier."""
    run = StoredRun(runs_dir, run_id)
    levels = [lv for lv in run.levels() if lv > 0]
    level = levels[-1] if level is None and levels else level
    if level not in levels:
        raise ConfigError("--level", level, f"completed ticket levels of this run: {levels}")
    trained = sorted(d.name for d in (run.store.dir / "levels").iterdir()
                     if d.name != "ticket" and run.store.level_record(d.name, level))
    own = [c for c in run.config.prune.controls if c in trained]  # the controls the run itself trains
    variants = own + [v for v in trained if v not in own]
    if not against:  # (None, or an empty box)
        against = default_partner(run_id, level, own, variants, run.config.prune.method)
    if against not in variants:
        raise ConfigError("--against", against, f"trained variants at level {level}: {sorted(variants) or 'none'}")
    mask_a, weights_a, record_a = run.level(level)
    mask_b, weights_b, record_b = run.level(level, against)
    if rebasin:  # before any evaluation: an architecture re-basin cannot permute fails here, in one line
        from ..rebasin import rebasin as match

        try:
            weights_m, mask_m, _ = match(run.make_model(), weights_a, weights_b, mask_b)
        except Unsupported as e:  # (a Bayesian net's rho, a transformer): the flag typed, the run, why, exit 2
            raise ConfigError("--rebasin", True, f"the barrier of run {run_id} cannot be matched: {e}; without "
                              "--rebasin it works") from None
    same_mask = all(torch.equal(mask_a[n], mask_b[n]) for n in mask_a)
    curve = interpolate(run.make_model, weights_a, weights_b, run.data.test, points,
                        mask_a if same_mask else None, bn_data=run.data.train)
    result = {"analysis": "barrier", "run_id": run_id, "level": level, "a": "ticket", "b": against,
              "density": record_a["density"], "same_mask": same_mask, "curve": curve,
              "error_barrier": error_barrier(curve), "loss_barrier": loss_barrier(curve)}
    if rebasin:
        same = all(torch.equal(mask_a[n], mask_m[n]) for n in mask_a)
        matched = interpolate(run.make_model, weights_a, weights_m, run.data.test, points, mask_a if same else None,
                              bn_data=run.data.train)
        result.update(rebasin=True, matched_curve=matched, matched_error_barrier=error_barrier(matched),
                      matched_loss_barrier=loss_barrier(matched))
    save_analysis(run.store, f"barrier-L{level}-{against}", result, on_event)
    return result


@dataclass(frozen=True)
class BarrierOptions:
    level: int | None = option(None, "ticket level (default: the last completed)", lo=1)
    against: str | None = option(None, "the variant to interpolate the ticket with (default: the run's first "
                                 "own control; required when the run has none and the level has several)")
    points: int = option(31, "interpolation points", lo=2, hi=10_000)
    rebasin: bool = option(False, "also the barrier after Git Re-Basin weight matching of the other net's hidden "
                           "units to the ticket's (naive vs matched; mlp, lenet300, conv2/4/6, resnet20)")

    def __post_init__(self):
        validate(self)


def format_barrier(name: str, a: dict) -> str:
    matched = (f"; after re-basin: error barrier {a['matched_error_barrier']:.4f}, loss barrier "
               f"{a['matched_loss_barrier']:.4f}" if a.get("rebasin") else "")
    return (f"{name}: error barrier {a['error_barrier']:.4f}, loss barrier {a['loss_barrier']:.4f}{matched} "
            f"(ticket vs {a['b']} at level {a['level']}, density {pct(a['density']).strip()})")


ANALYSES.register("barrier", "error barrier on the line between a ticket and a control of the same level")(
    AnalysisSpec(format_barrier, options=BarrierOptions,
                 compute=lambda runs_dir, run_id, o, on_event=None, cancel=None: run_barrier(
                     runs_dir, run_id, o.level, o.against, o.points, on_event=on_event, rebasin=o.rebasin)))
