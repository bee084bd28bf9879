"""Pruning at initialisation: score the initial weights, keep the best --density, train the ticket.

SNIP, GraSP, SynFlow, magnitude and random (engine.scores) share one selection: global (one pool over
every prunable layer, output included, as in the Synaptic-Flow experiments), layerwise (every layer at
--density) or erk (Erdos-Renyi-Kernel layer densities). The ticket starts from theta_0 at step 0 and is
trained beside the run's controls; the runner's dense training is the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import bayes
from .. import masks as M
from .. import scores as S
from ..config import PATTERNS, option, validate
from ..errors import ConfigError
from ..registry import METHODS, MethodSpec
from ..seeding import generator
from ..structured import Pattern

PAI_SCOPES = ("global", "layerwise", "erk")
EXAMPLES_PER_CLASS = 10  # SNIP/GraSP score one batch of about 10 examples per class


@dataclass(frozen=True)
class SynflowOptions:
    synflow_rounds: int = option(100, "synflow: scoring rounds (density after round t = rho^(t/rounds))", lo=1,
                                 hi=10_000)

    def __post_init__(self):
        validate(self, "prune.")


def score_batch(data, seed: int):
    """Up to EXAMPLES_PER_CLASS training examples of each class, drawn with the run's seed."""
    y = data.train.y
    order = torch.randperm(len(y), generator=generator(seed, "pai-batch")).to(y.device)
    picked = torch.cat([order[y[order] == c][:EXAMPLES_PER_CLASS] for c in range(data.num_classes)])
    return data.train.x[picked], y[picked]


def layer_densities(mask: M.Mask, density: float, scope: str) -> dict[str, float]:
    """The per-layer densities of the layerwise (uniform) and erk scopes."""
    return M.erk_densities(mask, density) if scope == "erk" else {n: density for n in mask}


def target_counts(mask: M.Mask, density: float, scope: str) -> int | dict[str, int]:
    """How many to keep: one global count, or one per layer (uniform or ERK)."""
    if scope == "global":
        return round(density * M.total(mask))
    per_layer = layer_densities(mask, density, scope)
    return {n: round(per_layer[n] * m.numel()) for n, m in mask.items()}


def select(scores: dict[str, torch.Tensor], dense: M.Mask, density: float, scope: str) -> M.Mask:
    """Keep the highest scores at `density`: over one global pool, per layer, or at ERK layer densities."""
    keep = target_counts(dense, density, scope)
    return M.keep_global(scores, dense, keep) if isinstance(keep, int) else M.keep_per_layer(scores, dense, keep)


def structured_rule(cfg, model, dense: M.Mask):
    """--pattern channel or nm: a rule keep(scores, mask, progress) at the layerwise or ERK densities
    (PruneConfig refuses global), the hidden layers in the pattern (engine.structured)."""
    pattern, weights = Pattern(cfg, model), model.state_dict()
    densities = layer_densities(dense, cfg.density, cfg.scope)
    return lambda scores, mask, progress=1.0: pattern.prune_to(scores, mask, weights, densities, progress)


def pai_mask(ctx, rule: str) -> M.Mask:
    cfg = ctx.config.prune
    model = ctx.model_with(ctx.init_weights)
    dense = M.ones(model)
    if cfg.pattern == "unstructured":
        keep = target_counts(dense, cfg.density, cfg.scope)
    else:
        keep = structured_rule(cfg, model, dense)
    # a Bayesian net is scored by its means (noise 0), as the deterministic net of the same seed: a sampled pass
    # drew its noise from torch's global generator (a new mask at every run of one command), and synflow's
    # |theta| turns rho into |rho|, a sigma of ~7 per weight
    with bayes.noise(model, 0.0):
        if rule == "synflow":
            return S.synflow_mask(model, dense, ctx.data.input_shape, keep, rounds=ctx.options.synflow_rounds)
        batch = score_batch(ctx.data, ctx.config.seed)
        scores = getattr(S, rule)(model, dense, batch, generator(ctx.config.seed, "pai-random"))
    return keep(scores, dense) if callable(keep) else select(scores, dense, cfg.density, cfg.scope)


def _first_order_only(config, model) -> None:
    """GraSP differentiates a gradient (its Hessian-gradient product); a Bayesian layer's backward pass is
    written by hand (engine.bayes) and is not differentiable again."""
    if config.model.bayesian:
        raise ConfigError("prune.method", config.prune.method, "GraSP's Hessian-gradient product does not run "
                          "through Bayesian layers (--bayesian); snip, synflow, magnitude and random do")


def _register(rule: str, help: str, options=None, check=None):
    def method(ctx) -> None:
        stored = ctx.store.level_record("ticket", 1)
        mask = ctx.store.load_level("ticket", 1, ctx.device)[0] if stored else pai_mask(ctx, rule)
        ctx.train_ticket(1, mask, ctx.init_weights, 0)

    # tickets start at theta_0, step 0 (so do their sanity controls); scoring a batch costs no training
    METHODS.register(rule, help)(MethodSpec(method, options=options, scopes=PAI_SCOPES, patterns=tuple(PATTERNS),
                                            starts_from_init=True, check=check))


_register("snip", "pruning at init: |gradient x weight| on ~10 examples per class (Lee et al. 2019)")
_register("grasp", "pruning at init: weight x Hessian-gradient, signed, lowest pruned (Wang et al. 2020)",
          check=_first_order_only)
_register("synflow", "pruning at init, data-free: iterative synaptic flow, --synflow-rounds (Tanaka et al. 2020)",
          SynflowOptions)
_register("magnitude", "pruning at init: largest |initial weight|")
_register("random", "pruning at init: a uniformly random mask")
