"""Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets").

While a network trains, the mask its pruning rule *would* take settles long before the weights do.
Each epoch the tracker builds that mask, keeps the last `window` (5) of them, and compares the newest
with each older one by normalised Hamming distance (the fraction of mask entries that differ). When all
those distances are below eps (0.1) the mask has stopped moving: an early-bird ticket is drawn.

Rules (what "the mask the pruning rule would take now" means):
- `magnitude_rule(density)`: keep the largest-|w| weights, as one-shot magnitude pruning would;
- `channel_rule(ratio)`: the original's channel mask: BatchNorm scale factors |gamma| with one global
  threshold, pruning `ratio` of all channels; usually trained with the L1 penalty on gamma
  (`bn_l1_penalty`, network slimming), which pushes unneeded channels' gamma towards 0.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from typing import Callable

import torch
from torch import nn

from .. import masks as M
from .. import trainer
from ..config import PruneConfig, option, validate
from ..errors import ConfigError
from ..formatting import pct
from ..registry import ANALYSES, AnalysisSpec
from ..settings import read_by
from .common import StoredRun, dense_seed, refuse_foreign_masks, save_analysis

Rule = Callable[[nn.Module], M.Mask]


class EarlyBirdFound(Exception):
    """Raised by a stopping hook at detection, to end training there (see `EarlyBirdTracker.hook`)."""


# ---------------------------------------------------------------- rules
def magnitude_rule(density: float, output_density: float = 1.0, scope: str = "global") -> Rule:
    """The mask one-shot magnitude pruning to `density` would take from the current weights."""
    def rule(model: nn.Module) -> M.Mask:
        dense = M.ones(model)
        return M.prune_to_density(M.magnitude_scores(model, dense), dense, density, output_density, scope,
                                  M.output_layer(model))
    return rule


def channel_rule(ratio: float) -> Rule:
    """{bn.weight: bool per channel}: prune the `ratio` of all BatchNorm channels with the smallest |gamma|.

    One global threshold over every BatchNorm layer, as in network slimming and the early-bird paper;
    exactly round(ratio x channels) are pruned, ties broken by position (`engine.masks.keep_top`).
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")

    def rule(model: nn.Module) -> M.Mask:
        gammas = {f"{name}.weight": m.weight.detach().abs() for name, m in model.named_modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine}
        if not gammas:
            raise ValueError("channel_rule needs a model with affine BatchNorm layers")
        flat = torch.cat(list(gammas.values()))
        keep = M.keep_top(flat, torch.ones_like(flat, dtype=torch.bool), flat.numel() - round(ratio * flat.numel()))
        return dict(zip(gammas, keep.split([g.numel() for g in gammas.values()])))
    return rule


@contextlib.contextmanager
def bn_l1_penalty(model: nn.Module, lam: float = 1e-4):
    """Within the block, every backward pass adds lam * sign(gamma) to BatchNorm gammas' gradients.

    That is the subgradient of lam * sum |gamma| (network slimming's sparsity penalty), added by gradient
    hooks so any training loop (`engine.trainer.train` included) applies it without knowing about it.
    """
    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            gamma = m.weight
            handles.append(gamma.register_hook(lambda grad, g=gamma: grad + lam * torch.sign(g.detach())))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- distances
def _flat(mask: M.Mask) -> torch.Tensor:
    return torch.cat([m.detach().flatten().to("cpu", torch.bool) for m in mask.values()])


def mask_distance(a: M.Mask, b: M.Mask) -> float:
    """Normalised Hamming distance: the fraction of all mask entries where `a` and `b` differ."""
    if list(a) != list(b) or any(a[n].shape != b[n].shape for n in a):
        raise ValueError("masks over different parameters cannot be compared")
    return _hamming(_flat(a), _flat(b))


def _hamming(fa: torch.Tensor, fb: torch.Tensor) -> float:
    return float((fa != fb).sum()) / fa.numel()


# ---------------------------------------------------------------- the tracker
class EarlyBirdTracker:
    """Watches the masks a rule would take during training and flags the first early-bird ticket.

    Feed it once per epoch: `update(model, epoch)` (applies the rule) or `add(mask, epoch)`; or let the
    trainer do it with `on_step=tracker.hook(steps_per_epoch)`. Every mask seen is kept (flattened
    bools, small next to the model) so the full epoch-by-epoch distance matrix can be shown.
    """

    def __init__(self, rule: Rule | None = None, window: int = 5, eps: float = 0.1):
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {eps}")
        self.rule, self.window, self.eps = rule, window, eps
        self.epochs: list[float] = []
        self.recent_distances: list[list[float]] = []  # per update: newest vs each older mask in the window
        self.detected_epoch: float | None = None
        self.ticket: M.Mask | None = None              # the mask at detection
        self._flats: list[torch.Tensor] = []
        self._window: deque[torch.Tensor] = deque(maxlen=window)

    @property
    def detected(self) -> bool:
        return self.detected_epoch is not None

    def update(self, model: nn.Module, epoch: float) -> bool:
        if self.rule is None:
            raise ValueError("this tracker has no rule; feed it masks with add(mask, epoch)")
        return self.add(self.rule(model), epoch)

    def add(self, mask: M.Mask, epoch: float) -> bool:
        """Record the mask of `epoch`; True once an early-bird ticket has been detected (now or before)."""
        flat = _flat(mask)
        if self._flats and flat.numel() != self._flats[0].numel():
            raise ValueError("the mask changed size between updates")
        self._window.append(flat)  # the FIFO: the newest and up to window - 1 older masks
        distances = [_hamming(flat, old) for old in list(self._window)[:-1]]
        self._flats.append(flat)
        self.epochs.append(epoch)
        self.recent_distances.append(distances)
        if (not self.detected and len(distances) == self.window - 1
                and max(distances) < self.eps):
            self.detected_epoch = epoch
            self.ticket = {n: m.detach().clone() for n, m in mask.items()}
        return self.detected

    def hook(self, every: int, stop: bool = False) -> Callable[[int, nn.Module], None]:
        """An `on_step(step, model)` for `engine.trainer.train`: an update every `every` steps (one
        epoch: pass steps_per_epoch), epoch = step / every. With stop=True it raises `EarlyBirdFound`
        at detection, which ends the training there (catch it around `train`)."""
        def on_step(step: int, model: nn.Module) -> None:
            if step % every == 0 and not (stop and self.detected):
                if self.update(model, step / every) and stop:
                    raise EarlyBirdFound(f"early-bird ticket at epoch {self.detected_epoch:g}")
        return on_step

    def distance_matrix(self) -> torch.Tensor:
        """(updates x updates) normalised Hamming distances between every pair of recorded masks."""
        if not self._flats:
            return torch.zeros(0, 0)
        x = torch.stack(self._flats).to(torch.float32)
        # |a xor b| = |a| + |b| - 2 a.b: one matrix product instead of a Python double loop (float32
        # counts are exact up to 2^24 mask entries; beyond that the display values round slightly).
        counts = x.sum(1)
        return (counts[:, None] + counts[None, :] - 2 * x @ x.T) / x.shape[1]

    def to_dict(self) -> dict:
        """JSON-ready record for the store and the explorer's distance-matrix view."""
        return {"window": self.window, "eps": self.eps, "epochs": self.epochs,
                "detected_epoch": self.detected_epoch, "recent_distances": self.recent_distances,
                "distance_matrix": self.distance_matrix().tolist()}


# ---------------------------------------------------------------- on a stored run
def run_earlybird(runs_dir, run_id: str, density: float | None = None, window: int = 5, eps: float = 0.1,
                  on_event=None, cancel=None) -> dict:
    """Replay a run's dense training from theta_0 (same data order) and track the magnitude mask every
    epoch: at `density` with the run's scope (erk: ERK densities over the hidden layers) and output-layer
    policy (the `earlybird` method's rule), or by default at the per-layer densities of the run's last ticket;
    the run's ticket closest in density is shown beside it.
    Stored as RUN_DIR/analyses/earlybird-replay.json with the full distance matrix (the `earlybird`
    method's own search record is analyses/earlybird.json)."""
    from ..methods.imp import imp_output_density  # late: the methods import this module

    run = StoredRun(runs_dir, run_id)
    tickets = [run.store.level_record("ticket", lv) for lv in run.levels() if lv > 0]
    if density is None and not tickets:
        raise ConfigError("--density", None, f"run {run_id} has no ticket level yet: pass the density to track")
    if density is None:
        rule = _layer_density_rule(tickets[-1]["layers"])
    else:
        rule = magnitude_rule(density, imp_output_density(_rule_settings(run.config.prune, density)),
                              run.config.prune.scope)
    model = run.make_model()
    if tickets:  # the replay's dense training and its ticket must be those of a mask over the Linear weights
        refuse_foreign_masks(run_id, run.config.prune.method, tickets[-1]["layers"], model, "earlybird-replay")
    model.load_state_dict(run.init_weights())
    tracker = EarlyBirdTracker(rule, window, eps)
    per_epoch = trainer.steps_per_epoch(len(run.data.train), run.config.train)
    tracker.update(model, 0.0)
    trainer.train(model, run.data, run.config.train, None, seed=dense_seed(run.config),
                  on_step=tracker.hook(per_epoch), cancel=cancel)
    # what was tracked, so a reader sees the rule behind the distances: the run's scope (erk: ERK layer densities)
    # and the per-layer densities of the last tracked mask
    result = {"analysis": "earlybird-replay", "run_id": run_id, "method": run.config.prune.method, **tracker.to_dict(),
              "density": density if density is not None else tickets[-1]["density"],
              "scope": run.config.prune.scope if density is not None else None,
              "layers": M.layer_densities(rule(model)), "epochs_total": run.config.train.epochs}
    if tickets:
        closest = min(tickets, key=lambda r: abs(r["density"] - result["density"]))
        result["imp_ticket"] = {"level": closest["level"], "density": closest["density"],
                                "test_accuracy": closest["test_accuracy"]}
    save_analysis(run.store, "earlybird-replay", result, on_event)
    return result


def _rule_settings(prune: PruneConfig, density: float) -> PruneConfig:
    """The settings the earlybird method's rule reads at `density` (its output layer where IMP would leave it),
    from the run's: its --prune-fraction and --output-fraction where its method reads them, else their defaults
    (a run of snip stores the defaults; one stored before the unread rule may hold any value, never read).
    Unstructured, the rule's pattern: a run's --pattern nm levels do not reach `density`."""
    given = {f"prune.{k}": getattr(prune, k) for k in ("pattern", "refill")}
    kept = {k: getattr(prune, k) if read_by(f"prune.{k}", prune.method, given) else getattr(PruneConfig(), k)
            for k in ("prune_fraction", "output_fraction")}
    return dataclasses.replace(prune, density=density, pattern="unstructured", **kept)


def _layer_density_rule(layers: dict[str, float]) -> Rule:
    """The magnitude mask with the given per-layer densities (those of an IMP ticket)."""
    def rule(model: nn.Module) -> M.Mask:
        dense = M.ones(model)
        counts = {n: round(layers[n] * m.numel()) for n, m in dense.items()}
        return M.keep_per_layer(M.magnitude_scores(model, dense), dense, counts)
    return rule


@dataclasses.dataclass(frozen=True)
class EarlyBirdReplayOptions:
    density: float | None = option(None, "mask density to track (default: the per-layer densities of the run's "
                                   "last ticket)", lo=0, hi=1, lo_open=True)
    eps: float = option(0.1, "distance below which the mask counts as settled", lo=0, hi=1, lo_open=True)

    def __post_init__(self):
        validate(self)


def format_earlybird(name: str, a: dict) -> str:
    total = a.get("epochs_total", "?")
    when = f"epoch {a['detected_epoch']:g} of {total}" if a.get("detected_epoch") is not None else \
        f"not detected in {total} epochs"
    # (the closest ticket of the run is kept as "imp_ticket", its name in records stored before other methods)
    extra = (f"; {a.get('method', 'IMP')} ticket at level {a['imp_ticket']['level']}: test "
             f"{pct(a['imp_ticket']['test_accuracy']).strip()}" if a.get("imp_ticket") else "")
    return f"{name}: early-bird ticket {when} (eps {a['eps']}){extra}"


# stored as analyses/earlybird-replay.json; the earlybird method stores its own search, an early-bird tracker
# record of the same shape, as analyses/earlybird.json (kind "earlybird", registered by the method)
ANALYSES.register("earlybird-replay", "replay the dense training and track when the magnitude mask stops "
                                      "changing (You et al. 2020)")(
    AnalysisSpec(format_earlybird, options=EarlyBirdReplayOptions,
                 compute=lambda runs_dir, run_id, o, on_event=None, cancel=None: run_earlybird(
                     runs_dir, run_id, o.density, eps=o.eps, on_event=on_event, cancel=cancel)))
