"""Dynamic sparse training: RigL (Evci et al. 2020) and SET (Mocanu et al. 2018).

The parameter count is fixed from the start: a random mask at --density (ERK layer densities with
--scope erk, as RigL recommends). Every --dst-interval steps until --dst-end of training, each sparse
layer drops the fraction alpha_t = alpha/2 (1 + cos(pi t / T_end)) of its active weights with the smallest
|w| and grows as many inactive ones: RigL those with the largest dense gradient |dL/dw| on a batch, SET
random ones. Per-layer active counts never change; dropped and grown weights are 0 with zero optimizer
state. The mask lives as float tensors the trainer multiplies gradients by, updated in place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import bayes
from .. import masks as M
from .. import scores as S
from ..config import option, validate
from ..registry import METHODS, MethodSpec
from ..runner import MaskSearch
from ..seeding import generator
from .pai import PAI_SCOPES, select


@dataclass(frozen=True)
class DSTOptions:
    dst_interval: int = option(100, "rigl/set: update the mask every this many iterations (Delta T)", lo=1)
    dst_fraction: float = option(0.3, "rigl/set: initial drop fraction alpha, decayed by a cosine", lo=0, hi=1,
                                 lo_open=True, hi_open=True)
    dst_end: float = option(0.75, "rigl/set: stop updating the mask after this fraction of training", lo=0, hi=1,
                            lo_open=True)

    def __post_init__(self):
        validate(self, "prune.")


class DynamicSparsity(MaskSearch):
    """Drop/grow updates of a mask during one training (see the module docstring)."""

    def __init__(self, ctx, mask: M.Mask, grow: str, dtype=torch.float32):
        options = ctx.options
        self.ctx, self.grow = ctx, grow
        self.values = {n: m.to(dtype) for n, m in mask.items()}  # what the trainer masks gradients with
        self.interval, self.alpha = options.dst_interval, options.dst_fraction
        self.end = int(options.dst_end * ctx.total_steps)
        self.optimizer = None
        self.history: list[dict] = []  # per update: step, fraction, {layer: weights moved}

    def prepare(self, model) -> dict[str, torch.Tensor]:
        M.apply(model, self.values)
        return self.values

    def attach(self, optimizer) -> None:
        self.optimizer = optimizer

    def finish(self, model) -> M.Mask:
        return {n: v.bool() for n, v in self.values.items()}

    def fraction(self, step: int) -> float:
        return self.alpha / 2 * (1 + math.cos(math.pi * step / self.end))

    def on_step(self, step: int, model) -> None:
        if step % self.interval or step >= self.end:
            return
        frac = self.fraction(step)
        params = dict(model.named_parameters())
        scores = self._grow_scores(model, params, step)
        moved = {}
        with torch.no_grad():
            for n, v in self.values.items():
                active = v.bool()
                k, inactive = int(active.sum()), int((~active).sum())
                n_swap = min(int(frac * k), inactive)
                if n_swap == 0:
                    continue
                p = params[n]
                drop = torch.argsort(torch.where(active, p.abs(), torch.tensor(float("inf"), device=p.device))
                                     .flatten(), stable=True)[:n_swap]
                grow = torch.argsort(torch.where(active, torch.tensor(float("-inf"), device=p.device), scores[n])
                                     .flatten(), descending=True, stable=True)[:n_swap]
                v.view(-1)[drop] = 0
                v.view(-1)[grow] = 1
                p.view(-1)[drop] = 0  # dropped weights leave; grown ones are 0 already and start there
                # their optimizer state goes, and so does that of a Bayesian weight's rho beside it: with no
                # gradient (mu is 0) and no state, a pruned rho gets no update; a grown one starts at the
                # initial sigma, as its mu starts at 0
                tied = [p]
                layer = M.owner(model, n)
                if isinstance(layer, bayes.BayesLayer):
                    layer.rho.view(-1)[grow] = bayes.inverse_softplus(bayes.options_of(model).sigma_init)
                    tied.append(layer.rho)
                for q in tied if self.optimizer else ():
                    for state in self.optimizer.state.get(q, {}).values():
                        if torch.is_tensor(state) and state.shape == p.shape:
                            state.view(-1)[drop] = 0
                            state.view(-1)[grow] = 0
                moved[n] = n_swap
        self.history.append({"step": step, "fraction": frac, "moved": moved})

    def _grow_scores(self, model, params, step: int) -> dict[str, torch.Tensor]:
        g = generator(self.ctx.config.seed, "dst", step)
        if self.grow == "random":
            return {n: torch.rand(v.shape, generator=g).to(v.device) for n, v in self.values.items()}
        data, bs = self.ctx.data.train, self.ctx.config.train.batch_size
        idx = torch.randperm(len(data), generator=g)[:bs].to(data.y.device)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()  # dense: inactive weights get gradients too
        scores = {n: params[n].grad.detach().abs().clone() for n in self.values}
        model.zero_grad(set_to_none=True)
        return scores


def _register(name: str, grow: str, help: str):
    def method(ctx) -> None:
        cfg = ctx.config.prune
        model = ctx.model_with(ctx.init_weights)
        dense = M.ones(model)
        start = S.random(model, dense, generator=generator(ctx.config.seed, "dst-initial-mask"))
        mask = select(start, dense, cfg.density, cfg.scope)
        search = DynamicSparsity(ctx, mask, grow, next(model.parameters()).dtype)
        ctx.train_ticket(1, mask, ctx.init_weights, 0, search=search)

    # the ticket starts at theta_0; its mask changes during its own training: no search before it
    METHODS.register(name, help)(MethodSpec(method, options=DSTOptions, scopes=PAI_SCOPES, starts_from_init=True))


_register("rigl", "gradient", "dynamic sparse training: drop smallest |w|, grow largest |gradient| (Evci et al. 2020)")
_register("set", "random", "dynamic sparse training: drop smallest |w|, grow at random (Mocanu et al. 2018)")
