"""Continuous Sparsification (Savarese et al. 2020): learn the mask with the weights, annealing a sigmoid
into a step.

Every prunable weight w gets a mask logit s, starting at s0 = 0, and the network computes with
w * sigmoid(beta s) / sigmoid(s0) (so it starts dense). Weights and logits train together on cross-entropy
+ lambda * sum sigmoid(beta s) (--cs-penalty) with the run's optimizer; the logits get no weight decay.
A round is one training of --epochs epochs, in which beta grows geometrically from 1 to 200
(x 200^(1/(E-1)) after each epoch); between rounds beta resets to 1 and s <- min(beta s, s0), so logits driven negative stay off
while the survivors restart at the top of the sigmoid. Weights are not rewound between rounds.

CS's own ticket after --cs-rounds rounds is 1[s > 0]; its density follows from lambda and is recorded
(analyses/search.json, "natural_density"). To compare methods at one density, the ticket here keeps the
top --density of s (global, layerwise or erk, exact counts), then rewinds (--rewind) and trains like
any other ticket, with its controls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import masks as M
from .. import trainer
from ..config import option, validate
from ..errors import ConfigError
from ..registry import METHODS, MethodSpec
from ..seeding import derive_seed
from .pai import PAI_SCOPES, select
from .search import SearchLog, recorded_search_cost, searched_mask

S0 = 0.0
BETA_MAX = 200.0


@dataclass(frozen=True)
class CSOptions:
    cs_rounds: int = option(3, "cs: rounds of --epochs each, the temperature annealed (beta 1 -> 200) per round",
                            lo=1, hi=100)
    cs_penalty: float = option(1e-8, "cs: weight lambda of the mask penalty lambda x sum sigmoid(beta s) "
                               "(its scale depends on the model's size)", lo=0, hi=1e6)

    def __post_init__(self):
        validate(self, "prune.")


class SoftMask(nn.Module):
    """Parametrization w -> w * sigmoid(beta s) / sigmoid(s0), with s the layer's mask logits."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(torch.full_like(weight, S0))
        self.logits.no_weight_decay = True  # the trainer's optimizer leaves them out of weight decay
        self.beta = 1.0
        self.scale = 1 / torch.sigmoid(torch.tensor(S0)).item()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * torch.sigmoid(self.beta * self.logits) * self.scale


def search(ctx) -> dict[str, torch.Tensor]:
    """Run the rounds of CS from theta_0; return the final logits {weight name: s}."""
    cfg = ctx.options
    model = ctx.model_with(ctx.init_weights)
    masks = {}
    for name in M.prunable(model):
        module = M.owner(model, name)
        masks[name] = SoftMask(module.weight.detach())
        parametrize.register_parametrization(module, "weight", masks[name])
    train_cfg = ctx.config.train
    epochs = train_cfg.epochs
    growth = BETA_MAX ** (1 / (epochs - 1))  # check() ensures epochs >= 2
    per_epoch = trainer.steps_per_epoch(len(ctx.data.train), train_cfg)
    log = SearchLog(ctx, "cs", cfg.cs_rounds * epochs * per_epoch)

    def penalty():
        return cfg.cs_penalty * sum(torch.sigmoid(m.beta * m.logits).sum() for m in masks.values())

    def natural_density() -> float:
        return sum(int((m.logits > 0).sum()) for m in masks.values()) / sum(m.logits.numel() for m in masks.values())

    def on_step(step, _model):
        if step % per_epoch == 0 and step < epochs * per_epoch:  # after each epoch but the last (at 200)
            for m in masks.values():
                m.beta *= growth

    for r in range(cfg.cs_rounds):
        def on_eval(point, r=r):  # r bound now: the round this evaluation belongs to
            log.evaluated({**point, "iteration": r * epochs * per_epoch + point["iteration"],
                           "epoch": r * epochs + point["epoch"]},
                          round=r + 1, beta=next(iter(masks.values())).beta, natural_density=natural_density())

        for m in masks.values():
            m.beta = 1.0
        trainer.train(model, ctx.data, train_cfg, None, seed=derive_seed(ctx.config.seed, "cs", r),
                      on_step=on_step, on_eval=on_eval, cancel=ctx.cancel, penalty=penalty)
        if r + 1 < cfg.cs_rounds:  # between rounds; the last round's logits are the result
            with torch.no_grad():
                for m in masks.values():
                    m.logits.copy_(torch.clamp(m.beta * m.logits, max=S0))
    log.save(natural_density=natural_density(), rounds=cfg.cs_rounds, penalty=cfg.cs_penalty)
    return {n: m.logits.detach().clone() for n, m in masks.items()}


def cs(ctx) -> None:
    cfg = ctx.config.prune

    def find() -> M.Mask:
        logits = search(ctx)
        return select(logits, {n: torch.ones_like(s, dtype=torch.bool) for n, s in logits.items()},
                      cfg.density, cfg.scope)

    mask = searched_mask(ctx, find)
    start, start_step = ctx.rewind(ctx.dense.weights)
    ctx.train_ticket(1, mask, start, start_step)


def check(config, model) -> None:
    if config.train.epochs < 2:
        raise ConfigError("train.epochs", config.train.epochs, "cs anneals beta from 1 to 200 over the epochs of "
                          "each round: at least 2")


METHODS.register("cs", "Continuous Sparsification: sigmoid masks annealed to binary over --cs-rounds, L0-style "
                       "penalty; top --density of the logits, rewound and trained (Savarese et al. 2020)")(
    MethodSpec(cs, options=CSOptions, scopes=PAI_SCOPES, check=check, search_cost=recorded_search_cost,
               search_epochs=lambda config: config.prune.method_options().cs_rounds * config.train.epochs,
               unread=dict.fromkeys(("prune.prune_fraction", "prune.output_fraction"),
                                    "keeps the top --density of its searched mask, with no magnitude pruning steps")))
