"""Mean-field Gaussian (Bayes by Backprop) layers, their ELBO, and the uncertainty of their predictions.

A Bayesian layer keeps a Gaussian N(mu, sigma^2) over each weight, sigma = softplus(rho) (Blundell et al.
2015). `convert` swaps the prunable Linear/Conv2d layers of a model for `BayesLinear`/`BayesConv2d`, which
*subclass* them: mu is the layer's ordinary `weight` and rho a second parameter of the same shape
(`hidden.0.weight` / `hidden.0.rho`). So every mask, store, control and view that names `weight` works on
mu unchanged, a deterministic ticket's mask transplants onto the Bayesian net by name, and the initial mu
are bit-identical to the deterministic net of the same seed. Biases stay point estimates (nothing prunes
them; they carry no KL).

**Pruned = mu exactly 0, no variance.** A weight whose mean is exactly 0 is a pruned weight: its sigma is
multiplied by 0 in the forward pass and in the KL, so it samples exactly 0, adds nothing to the KL, and its
rho receives an exactly-zero gradient (so Adam's moments for it stay 0). The trainer keeps pruned means at
exactly 0 already (it zeroes their gradients); rho carries `no_weight_decay`, so nothing else moves it.
This holds for every method that keeps pruned weights at zero, with no second mask to keep in sync.
A trained mean landing on exactly 0.0 by chance (probability ~0 in floating point) would also drop its
variance.

**Sampling.** `BayesLinear` uses the local reparameterisation trick (Kingma et al. 2015): the
pre-activation of each example is sampled from its exact Gaussian, mean x mu^T + b, variance x^2 sigma^2^T,
which gives every example its own weight sample at the cost of a second matmul. For convolutions local
reparameterisation is not exact (one weight is shared across positions), so `BayesConv2d` samples its
weights: one sample per forward pass while training, as in Bayes by Backprop, and S samples at once as a
grouped convolution during Monte-Carlo prediction. Noise can be scaled with `noise(model, scale)`; scale 0
gives the deterministic net with weights mu through the very same code path.

**ELBO.** The trainer adds `start_training(model, n_train, seed, masks)`: KL(q || N(0, prior_sigma^2)) / n_train,
weighted by a linear warm-up over the first `kl_warmup` steps of each training, to the mean cross-entropy of one
sample per step: the negative ELBO per training example. The noise comes from generators seeded per layer
from the training's seed (and from a fixed seed in `predict`), so runs repeat exactly on CPU. For float32 on the
CPU each draw takes one number from the layer's generator as the key of a counter-based generator compiled with
the posterior kernel (Philox4x32-10 and Box-Muller, `posterior_kernel.normal_`: ~1.1 ns a normal where torch's
Mersenne Twister takes ~2.4, the normals of a training step were a sixth of its cost on digits); where the kernel
cannot be built, torch.randn draws them (other numbers, the same distribution). The KL is the
closed form of two Gaussians, computed for all layers at once in the forward pass from the same softplus(rho)
the layers sample with, and picked up by the penalty (`Posterior`, `_Posterior`; during a training with a mask,
which the trainer hands over, on the kept weights only: `_Support`, and its optimizer then steps the kept
entries of rho only, as one parameter: `_KeptRho`); tests check its value and
gradient against `torch.distributions.kl_divergence` of two `Normal`s, which the training step does not call:
autograd through it made a dozen weight-sized passes per layer and step, and on small nets a Bayesian step's
excess cost is its number of tensor operations (bench/bayes_speed.py). rho gets its own learning rate
(`Options.rho_lr`, on the parameter as `rho.lr`): with one shared rate every sigma ends near the same value
and the sigma criteria of Bayesian IMP reduce to |mu|.

**Prediction.** `predict` returns the log of the predictive mean (1/S) sum_s softmax(f(x; w_s)), the S
samples batched into one forward pass (the input repeated S times), or, for conv nets on CPU where that
measured slower, one pass per sample with the same noise. `evaluate` reports accuracy, NLL and
expected calibration error (ECE, 15 equal-width confidence bins, Guo et al. 2017) with the bins for a
reliability diagram. `engine.trainer.evaluate` uses it for Bayesian nets, so every stored loss and
accuracy of a Bayesian run is the MC predictive's.

Why not `bayesian-torch` (IntelLabs, 0.5.0, inspected with `pip download --no-deps`): its layers are not
`nn.Linear`/`nn.Conv2d` subclasses and name their parameters `mu_weight`/`rho_weight`, so masks, stores,
controls and transplanted masks would all need translating; their `forward` returns `(output, kl)`, which
the models here would have to unpack layer by layer; `LinearReparameterization` samples one weight matrix
per batch (no local reparameterisation) and initialises mu from N(0, 0.1) rather than the run's
initialisation; it would add torchvision, tensorboard and scikit-learn as hard dependencies. What this
module hand-writes is the two forward passes and the closed-form KL (checked against torch.distributions').
Why not torchmetrics for ECE: it is not installed, and the same binned sums are needed for the reliability
diagram anyway (15 lines here, tested against a constructed calibrated predictor).
"""
from __future__ import annotations

import contextlib
import copy
import math
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import masks as M
from . import posterior_kernel
from .config import ModelConfig
from .errors import ConfigError
from .seeding import derive_seed

ECE_BINS = 15
PREDICT_SEED = 0  # Monte-Carlo predictions draw their noise from here (engine.seeding.derive_seed)
_TINY = 1e-16  # keeps sqrt'(variance) finite where a whole row of weights is pruned (variance exactly 0)


@dataclass(frozen=True)
class Options:
    """What makes a net Bayesian: ModelConfig's Bayesian fields (their defaults and help live there)."""
    prior_sigma: float   # std of the N(0, prior_sigma^2) prior on every weight
    sigma_init: float    # every weight's initial posterior std (rho = softplus^-1 of it)
    rho_lr: float        # learning rate of rho (mu and the biases use the run's lr)
    kl_warmup: int       # steps over which the KL weight rises linearly from 0 to 1 (0: off)
    mc_samples: int      # Monte-Carlo samples of the predictive in every evaluation

    @classmethod
    def of(cls, model_config: ModelConfig | None = None, **changes) -> "Options":
        """The options a ModelConfig sets (default: the defaults of a Bayesian one), with `changes`."""
        model_config = model_config or ModelConfig(bayesian=True)
        return cls(**{f: changes.get(f, getattr(model_config, f)) for f in cls.__dataclass_fields__})


def inverse_softplus(sigma: float) -> float:
    return sigma + math.log(-math.expm1(-sigma))  # log(exp(sigma) - 1), stable for small and large sigma


class Rho(nn.Parameter):
    """rho, a Parameter whose optimizer settings (`no_weight_decay`, its own `lr`) survive copy.deepcopy."""

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            memo[id(self)] = copied = super().__deepcopy__(memo)
            copied.__dict__.update(self.__dict__)
        return memo[id(self)]


class BayesLayer:
    """What BayesLinear and BayesConv2d share: rho, sigma, the KL, the noise scale."""
    weight: nn.Parameter
    rho: nn.Parameter
    prior_sigma: float
    noise_scale: float
    samples: int  # > 1 only inside `predict`: the batch is S blocks, one per weight sample
    sample: tuple[int, int] | None  # (i, S) only inside `predict` passing one sample at a time: this is sample i
    generator: torch.Generator | None  # where the noise comes from (seeded per training and per prediction)
    square: bool  # the forward pass samples with sigma^2 (local reparameterisation) rather than sigma

    def _init_bayes(self, options: Options) -> None:
        self.rho = Rho(torch.full_like(self.weight, inverse_softplus(options.sigma_init)))
        self.rho.no_weight_decay = True  # decay would pull a pruned weight's rho around; sigma has its own prior
        self.rho.lr = options.rho_lr
        self.prior_sigma = options.prior_sigma
        self.register_buffer("_tiny", torch.full((1,), _TINY, device=self.weight.device), persistent=False)
        self.noise_scale = 1.0
        self.samples = 1
        self.sample = None
        self._all_samples: torch.Tensor | None = None  # the noise of all S samples while `sample` is set
        self.generator: torch.Generator | None = None  # None: torch's global generator
        self.posterior = Posterior([self])  # `convert` puts all of a model's layers in one

    def sigma(self) -> torch.Tensor:
        """Posterior std of every weight; exactly 0 where the mean is pruned (exactly 0)."""
        return _std(self.weight, self.rho)

    def kl(self) -> torch.Tensor:
        """KL(q || prior) summed over the unpruned weights (a pruned weight is not random: no term)."""
        return Posterior([self]).kl()

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma or sigma^2 if `square`) of every weight for this forward pass, the std 0 where pruned.
        While recording gradients both come out of the model's `_Posterior` (mu unchanged, so that its
        gradient there joins the KL's in one pass)."""
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.rho.requires_grad):
            return self.posterior.take(self)
        s = self.sigma()
        return self.weight, s * s if self.square else s

    def _eps(self, like: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Standard normal noise (times the noise scale) of `like`'s shape, or of `shape`, dtype and device.
        One sample of S at a time (`sample`): the first draws all S as the batched pass would ([S, *shape], the
        same numbers as S blocks of its batch or S weight samples) and sample i is block i, so both ways of
        predicting see the same noise."""
        shape = tuple(like.shape if shape is None else shape)
        if self.sample is None:
            eps = self._normal(shape, like)
        else:
            i, s = self.sample
            if i == 0:
                self._all_samples = self._normal((s, *shape), like)
            eps = self._all_samples[i]
        return eps if self.noise_scale == 1.0 else eps * self.noise_scale

    def _normal(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normals from the layer's generator: float32 on the CPU by the compiled generator
        (posterior_kernel.normal_, keyed by one draw from the generator: ~2x faster than torch.randn's Mersenne
        Twister, whose numbers it does not give), else by torch.randn."""
        if not posterior_kernel.normals_available(like):
            return torch.randn(shape, generator=self.generator, device=like.device, dtype=like.dtype)
        return posterior_kernel.normal_(torch.empty(shape, dtype=torch.float32), self._key())

    def _key(self) -> int:
        """A key of the compiled generator's normals: one draw from the layer's generator."""
        return int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))


def _std(mu: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """softplus(rho) where mu != 0, exactly 0 where mu is 0 (pruned)."""
    return F.softplus(rho) * mu.sign().abs()


class Posterior:
    """The Bayesian layers of one model, whose sampling stds and KL one `_Posterior` computes together.

    In a forward pass that records gradients, the first layer to run computes every layer's std (sigma, or
    sigma^2 for local reparameterisation) and the KL; the other layers take theirs (`take`) and the
    penalty takes the KL (`take_kl`). Each is handed out once and only while nothing it depends on changed since
    (version counters: the layer's mu and rho for a std, every mu and rho for the KL), so a second forward pass,
    or a penalty after a parameter update, computes afresh. Why: on the small nets here a training step's cost
    is its number of tensor operations, and this makes ~30 per step for all layers together where layer-by-layer
    autograd made ~120.

    During a training whose trainer masks gradients (`restrict`, from `start_training`), a sparse ticket's
    posterior is computed on the weights the mask keeps only (`_Support`): at 20% density the softplus, log,
    sigmoid and products run over a fifth of the weights, and their results are scattered into the
    weight-shaped buffers the layers sample with. Same values as over all weights (tests/test_bayes_compact.py).
    Given the training's optimizer too, rho's kept entries are one parameter of that optimizer (`_KeptRho`)."""

    def __init__(self, layers: list[BayesLayer]):
        self.layers = list(layers)
        self.squares = tuple(layer.square for layer in self.layers)  # (fixed by each layer's class)
        self.clear()

    def clear(self) -> None:
        self._taken: dict[int, tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]] = {}
        self._kl: torch.Tensor | None = None
        self._at: list[tuple[int, int]] = []  # every layer's (mu, rho) versions when _kl was computed
        self._buffers: _Buffers | None = None
        self._let_go()

    def _let_go(self) -> None:
        """Forget the training's masks (it is over, or another starts), and hand rho back to its optimizer."""
        if getattr(self, "_kept", None) is not None:
            self._kept.uninstall()
        self._masks: list[torch.Tensor | None] = []  # per layer: the training's gradient mask of its mu, or None
        self._training: weakref.ref | None = None  # the training those masks belong to (see `restrict`)
        self._support: _Support | None = None
        self._optimizer: weakref.ref | None = None  # the training's optimizer (see `restrict`)
        self._kept: _KeptRho | None = None

    def __deepcopy__(self, memo):  # the copy holds the copied layers and nothing computed (no autograd graph)
        copied = memo[id(self)] = Posterior.__new__(Posterior)  # (the layers refer back to it)
        copied.__init__(copy.deepcopy(self.layers, memo))
        return copied

    def __getstate__(self):
        return {"layers": self.layers}

    def __setstate__(self, state):
        self.__init__(state["layers"])

    def restrict(self, masks: dict[int, torch.Tensor], training: object,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """For one training: `masks[id(layer.weight)]` is what the trainer multiplies that mu's gradient by, so
        mu stays exactly 0 wherever the mask is 0 and mu was 0. They hold while `training` (the training's
        penalty) lives, so a model used after its training is computed over all weights again. A mask changed
        in place (dynamic sparse training) is noticed by its version counter. `optimizer`: the one that steps
        the layers' rho in this training; on a compact support it steps their kept entries instead (`_KeptRho`).
        Nothing computed before is handed out in this training (`clear`)."""
        self.clear()
        self._masks = [masks.get(id(layer.weight)) for layer in self.layers]
        self._training = (weakref.ref(training, self._training_over) if any(m is not None for m in self._masks)
                          else None)
        self._optimizer = None if optimizer is None or self._training is None else weakref.ref(optimizer)

    def _training_over(self, training: weakref.ref) -> None:  # (its penalty is gone: rho back to the optimizer now)
        if self._training is training:
            self._let_go()

    def support(self) -> "_Support | None":
        """The weights this pass computes on: a compact `_Support`, or None for all of them (no training's
        masks, or a mask too dense for compaction to pay)."""
        if self._training is None:  # (no training's masks: every step of a dense level)
            return None
        if self._training() is None:
            self._let_go()  # that training is over
            return None
        key = tuple(None if m is None else m._version for m in self._masks)
        if self._support is None or self._support.key != key:
            self._support = support = _Support(self.layers, self._masks, key)
            optimizer = None if self._optimizer is None else self._optimizer()
            if self._kept is not None and (not support.compact or optimizer is None):
                self._kept.uninstall()
                self._kept = None
            elif support.compact and optimizer is not None:
                self._kept = (_KeptRho.install(self.layers, support, optimizer) if self._kept is None
                              else self._kept.moved_to(support))
        elif self._kept is not None:
            self._kept.follow()
        return self._support if self._support.compact else None

    def _versions(self) -> list[tuple[int, int]]:
        return [(layer.weight._version, layer.rho._version) for layer in self.layers]

    def _apply(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        rhos = [layer.rho for layer in self.layers]
        support = self.support()
        kept = None if support is None else self._kept
        buffers = self._buffers
        if buffers is None or not buffers.fits(rhos, support, kept is not None):
            buffers = self._buffers = _Buffers(rhos, self.squares, support, kept is not None)
        elif buffers.in_use():  # a graph that has not run backward yet holds them: this pass gets its own
            buffers = _Buffers(rhos, self.squares, support, kept is not None)
        n = len(self.layers)
        *out, kl = _Posterior.apply(self.layers[0].prior_sigma, buffers, *[layer.weight for layer in self.layers],
                                    *(rhos if kept is None else [kept.param]))
        return out[:n], out[n:], kl

    def take(self, layer: BayesLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's (mu, std) for this forward pass, computed for all layers by the first to ask (and
        afresh if this layer's mu or rho changed since)."""
        taken = self._taken.pop(id(layer), None)
        if taken is None or taken[1] != (layer.weight._version, layer.rho._version):
            mus, stds, self._kl = self._apply()
            self._at = self._versions()
            self._taken = {id(m): ((mu, std), at) for m, mu, std, at in zip(self.layers, mus, stds, self._at)}
            taken = self._taken.pop(id(layer))
        return taken[0]

    def take_kl(self) -> torch.Tensor:
        """The KL with its gradient: the last forward pass's if nothing changed since, else computed afresh."""
        kl, self._kl = self._kl, None
        if kl is None or self._at != self._versions():
            return self.kl()
        return kl

    def kl(self) -> torch.Tensor:
        return self._apply()[2]


class _Support:
    """The weights of a Posterior's layers that can be nonzero during a training: those the trainer's masks keep,
    and those nonzero when this was built (a layer without a mask: all). Every other mu is 0 and its gradient
    zeroed by the trainer, so it stays exactly 0 (pruned) until a mask changes, which rebuilds this; a kept mu
    that is exactly 0 (a weight dynamic sparse training just grew) is still treated as pruned, by the same
    `mu != 0` test as over all weights, so both ways compute the same.

    `local[i]`: layer i's flat positions (int64 for index_copy_, and int32 for index_select, faster);
    `flat`: all of them, into the layers' weights laid end to end."""
    # below this fraction of weights kept, reading and writing them at their positions costs less than it saves
    # (lenet300 on digits and at 784 inputs, one CPU thread, bench/bayes_speed.py's step: compact 5-6% faster at
    # density 0.2, 2-3% at 0.3-0.35, 2-4% slower at 0.5)
    COMPACT_BELOW = 0.4

    def __init__(self, layers: list[BayesLayer], masks: list[torch.Tensor | None], key: tuple):
        self.key = key
        with torch.no_grad():
            self.local = [torch.arange(layer.weight.numel(), device=layer.weight.device) if mask is None else
                          ((mask != 0) | (layer.weight != 0)).reshape(-1).nonzero().squeeze(1)
                          for layer, mask in zip(layers, masks)]
        self.counts = [len(i) for i in self.local]
        starts = [0]
        for layer in layers:
            starts.append(starts[-1] + layer.weight.numel())
        self.compact = sum(self.counts) < self.COMPACT_BELOW * starts[-1]
        if self.compact:  # (what only a compact support is used for)
            self.local32 = [i.int() for i in self.local]
            self.flat = torch.cat([i + start for i, start in zip(self.local, starts)])


# optimizers whose update of an entry depends on that entry's gradient and state only, so that stepping rho's
# kept entries laid end to end as one parameter is stepping each rho (what engine.trainer.make_optimizer makes)
ELEMENTWISE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class _KeptRho:
    """rho's entries on a compact `_Support`, laid end to end as one Parameter that the training's optimizer steps
    in place of the layers' rho (it replaces them in their param group): Adam's arithmetic and moments for the kept
    weights only, in one tensor rather than one per layer, and the pruned rho's gradient (exactly 0) is never
    written. Same updates: an elementwise optimizer leaves an entry with zero gradient and zero state where it is.
    (At 20% density the Bayesian step ran ~5% faster on digits and ~3% at 784 inputs, measured under contention
    with bench/bayes_speed.py's stepper: Adam over a fifth of rho in one tensor, no rho gather, no weight-sized
    rho gradient to zero and scatter into, against one scatter back per step.)

    The layers' rho stay the truth whenever the optimizer is not stepping: the kept entries are written back into
    them after every step (a step post-hook), and gathered again from them if anything else writes rho (`follow`).
    When the support changes (dynamic sparse training) the optimizer's state moves with the entries (`moved_to`):
    an entry leaving the support loses it, one joining starts without, which is what that training does to the
    state of the weights it drops and grows. When the training is over rho goes back into the optimizer
    (`uninstall`), its state scattered to the weights' shape."""

    def __init__(self, rhos: list[torch.Tensor], support: _Support, optimizer: torch.optim.Optimizer, group: dict):
        self.rhos = rhos
        self.support, self.group, self.optimizer = support, group, weakref.ref(optimizer)
        with torch.no_grad():
            self.param = nn.Parameter(torch.cat([rho.reshape(-1).index_select(0, index)
                                                 for rho, index in zip(self.rhos, support.local)]))
        self.pieces = _split(self.param.detach(), [(c,) for c in support.counts])
        self.hook = optimizer.register_step_post_hook(self._write_back)
        self.versions = [rho._version for rho in self.rhos]

    @classmethod
    def install(cls, layers: list[BayesLayer], support: _Support, optimizer) -> "_KeptRho | None":
        """Put the kept entries in the place of the layers' rho in `optimizer`; None (and nothing changed) unless
        it is one of ELEMENTWISE_OPTIMIZERS and every rho is in one of its groups and has no optimizer state yet."""
        if type(optimizer) not in ELEMENTWISE_OPTIMIZERS:  # (one parameter for all: the update must be per entry)
            return None
        ids = {id(layer.rho) for layer in layers}
        groups = [g for g in optimizer.param_groups if any(id(p) in ids for p in g["params"])]
        if len(groups) != 1 or sum(id(p) in ids for p in groups[0]["params"]) != len(ids) or any(
                optimizer.state.get(layer.rho) for layer in layers):
            return None
        kept = cls([layer.rho for layer in layers], support, optimizer, groups[0])
        kept.group["params"] = [p for p in kept.group["params"] if id(p) not in ids] + [kept.param]
        return kept

    def moved_to(self, support: _Support) -> "_KeptRho":
        """The same for another support of the same layers, with the optimizer's state carried over."""
        optimizer = self.optimizer()
        self.hook.remove()
        moved = _KeptRho(self.rhos, support, optimizer, self.group)
        self.group["params"] = [moved.param if p is self.param else p for p in self.group["params"]]
        state = optimizer.state.pop(self.param, {})
        if state:
            optimizer.state[moved.param] = {k: moved.gathered(self.scattered(v)) if self.owns(v) else v
                                            for k, v in state.items()}
        return moved

    def uninstall(self) -> None:
        """Hand the layers' rho back to the optimizer (if it still exists), with their state in their shape."""
        self.hook.remove()
        optimizer = self.optimizer()
        if optimizer is None:
            return
        self.group["params"] = [p for p in self.group["params"] if p is not self.param] + self.rhos
        state = optimizer.state.pop(self.param, {})
        if state:
            dense = {k: _split(self.scattered(v), [rho.shape for rho in self.rhos]) if self.owns(v) else None
                     for k, v in state.items()}
            for i, rho in enumerate(self.rhos):
                optimizer.state[rho] = {k: dense[k][i] if dense[k] is not None else v.clone() if torch.is_tensor(v)
                                        else v for k, v in state.items()}

    def follow(self) -> None:
        """Gather the kept entries again if anything but the write-back wrote the layers' rho."""
        if self.versions != [rho._version for rho in self.rhos]:
            with torch.no_grad():
                for rho, index, piece in zip(self.rhos, self.support.local, self.pieces):
                    torch.index_select(rho.reshape(-1), 0, index, out=piece)
            self.versions = [rho._version for rho in self.rhos]

    def _write_back(self, *_) -> None:
        with torch.no_grad():
            for rho, index, piece in zip(self.rhos, self.support.local, self.pieces):
                rho.view(-1).index_copy_(0, index, piece)
        self.versions = [rho._version for rho in self.rhos]

    def owns(self, value) -> bool:  # an optimizer state entry per kept rho (a moment), not a step count
        return torch.is_tensor(value) and value.shape == self.param.shape

    def scattered(self, value: torch.Tensor) -> torch.Tensor:  # over all weights laid end to end, 0 off the support
        return value.new_zeros(sum(rho.numel() for rho in self.rhos)).index_copy_(0, self.support.flat, value)

    def gathered(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.index_select(0, self.support.flat)


class _Buffers:
    """Flat buffers for the weight-sized intermediates of one `_Posterior` pass over a model's layers (sigma,
    alive, s = sigma * alive, s^2, and one for log sigma and then the gradient), each layer's a view into them.
    On a compact `_Support` they hold the kept weights only, with three more (the gathered mu, rho, unless
    `given` as the optimizer's `_KeptRho`, and gradient of the stds) and `stds`, weight-shaped, where the stds are
    scattered: zeros that are never written elsewhere.
    The views each pass needs are made here once (on the small nets here a step's cost is its number of calls).

    Reused from one training step to the next: a fresh weight-sized tensor per intermediate and step cost more
    than its arithmetic (new pages from the allocator), and one operation over the flat buffer replaces one per
    layer (bench/bayes_speed.py). A set is reused only once the backward pass of the graph that saved it ran, or
    that graph is gone (`in_use`): two forward passes before one backward get a set each, and a set overwritten
    while a graph still needs it fails autograd's version check rather than computing a wrong gradient."""
    NAMES = ("sigma", "alive", "s", "s2", "aux")
    COMPACT_NAMES = ("rho", "mu", "grad")

    def __init__(self, like: list[torch.Tensor], squares: tuple[bool, ...], support: _Support | None = None,
                 given: bool = False):
        self.key = [(t.shape, t.dtype, t.device) for t in like]
        self.squares, self.support, self.given = squares, support, given
        dtype, device = like[0].dtype, like[0].device
        shapes = [t.shape for t in like] if support is None else [(c,) for c in support.counts]
        names = self.NAMES if support is None else self.NAMES + self.COMPACT_NAMES[given:]
        # one tensor each (not rows of one): writing one must not bump the others' version counters; but for
        # mu and s side by side on a compact support (the KL's sum of mu^2 + s^2 is one dot product): both are
        # written in the forward pass only, before s is saved
        size = sum(math.prod(s) for s in shapes)
        self.flat = {name: torch.empty(size, dtype=dtype, device=device) for name in names if name not in ("mu", "s")}
        if support is None:
            self.flat["s"] = torch.empty(size, dtype=dtype, device=device)
        else:
            self.mu_s = torch.empty(2 * size, dtype=dtype, device=device)
            self.flat["s"], self.flat["mu"] = self.mu_s[size:], self.mu_s[:size]
        v = self.views = {name: _split(row, shapes) for name, row in self.flat.items()}
        # per layer: its std (sigma^2 for local reparameterisation, else sigma) and what multiplies the std's
        # gradient in d loss / d sigma (2 s, or alive: `by_factor` lists the layers of each, with the 2 or 1)
        self.std = [s2 if square else s for s, s2, square in zip(v["s"], v["s2"], squares)]
        self.factor = [s if square else alive for s, alive, square in zip(v["s"], v["alive"], squares)]
        self.by_factor = [(value, [i for i, square in enumerate(squares) if square == (value == 2)])
                          for value in (2, 1)]
        if support is not None:
            self.stds = torch.zeros(sum(t.numel() for t in like), dtype=dtype, device=device)
            self.outputs = _split(self.stds, [t.shape for t in like])
            self.gather_rows = {name: list(zip(v[name], support.local32)) for name in ("mu", "rho") if name in v}
            # (positions, stds there): one scatter per run of layers that all sample with sigma^2 (or with sigma)
            runs, a = [], 0
            for square, count in zip(squares, support.counts):
                if runs and runs[-1][0] == square:
                    runs[-1][2] += count
                else:
                    runs.append([square, a, a + count])
                a += count
            self.scatter = [(support.flat[a:z], self.flat["s2" if square else "s"][a:z]) for square, a, z in runs]
            self.grad_rows = list(zip(support.local32, v["grad"]))
            self.rho_rows = list(zip(support.local, v["grad"]))
        else:
            self.outputs = self.std
        self._user = None  # weak reference to a token held by the autograd node that saved the buffers
        self._kernel: posterior_kernel.Layers | None = None
        self._kl_weights: tuple[float, torch.Tensor] | None = None

    def gather(self, mus=None, rhos=None) -> torch.Tensor:
        """(compact support) the kept mu (if given) and rho (unless the optimizer's `_KeptRho`) into the flat
        buffers; rho's kept entries."""
        for params_of, name in ((mus, "mu"), (rhos, "rho")):
            if params_of is not None and name in self.gather_rows:
                for param, (kept, index) in zip(params_of, self.gather_rows[name]):
                    torch.index_select(param.reshape(-1), 0, index, out=kept)
        return rhos[0] if self.given else self.flat["rho"]

    def kernel(self) -> posterior_kernel.Layers:
        """The layers as the compiled kernel runs over them (made at first use)."""
        if self._kernel is None:
            support = self.support
            self._kernel = posterior_kernel.Layers(
                [math.prod(shape) for shape, _, _ in self.key] if support is None else support.counts, self.squares,
                None if support is None else support.local32)
        return self._kernel

    def scatter_stds(self) -> None:
        """(compact support) the kept stds into the weight-shaped ones, whose other entries stay 0."""
        for index, std in self.scatter:
            self.stds.index_copy_(0, index, std)

    def gather_std_grads(self, grad_stds) -> None:
        """(compact support) the stds' incoming gradients at the kept weights, into views["grad"] (0: none)."""
        for g, (index, g_kept) in zip(grad_stds, self.grad_rows):
            if g is None:
                g_kept.zero_()
            else:
                torch.index_select(g.reshape(-1), 0, index, out=g_kept)

    def scatter_rho_grads(self, mus, incoming) -> list[torch.Tensor]:
        """(compact support, rho not given) rho's weight-shaped gradients: flat["grad"] at the kept weights, 0
        elsewhere, written into the stds' incoming gradients where there are ones (see `_Posterior.backward`)."""
        d_rho = [torch.zeros_like(mu) if g is None else g.zero_() for mu, g in zip(mus, incoming)]
        for d, (index, d_kept) in zip(d_rho, self.rho_rows):
            d.view(-1).index_copy_(0, index, d_kept)
        return d_rho

    def kl_weights(self, prior_sigma: float) -> torch.Tensor:
        """`_kl_weights` as a tensor (the PyTorch-ops path weighs its sums on the device)."""
        if self._kl_weights is None or self._kl_weights[0] != prior_sigma:
            like = self.flat["aux"]
            self._kl_weights = prior_sigma, torch.tensor(_kl_weights(prior_sigma), dtype=like.dtype,
                                                         device=like.device)
        return self._kl_weights[1]

    def fits(self, like: list[torch.Tensor], support: _Support | None = None, given: bool = False) -> bool:
        """Whether these buffers serve a pass over `like` (the same Posterior's layers: the same `squares`)."""
        return (self.key == [(t.shape, t.dtype, t.device) for t in like] and self.support is support
                and self.given == given)

    def in_use(self) -> bool:
        return self._user is not None and self._user() is not None

    def claim(self) -> object:
        token = _Token()
        self._user = weakref.ref(token)
        return token

    def release(self) -> None:
        self._user = None


def _kl_weights(prior_sigma: float) -> tuple[float, float, float]:
    """The KL = these . (sum of mu^2 + s^2, sum of alive * log sigma, number alive)."""
    return 1 / (2 * prior_sigma ** 2), -1.0, math.log(prior_sigma) - 0.5


def _split(flat: torch.Tensor, shapes: list) -> list[torch.Tensor]:
    """Views of consecutive pieces of a flat tensor, shaped `shapes`."""
    return [piece.view(shape) for piece, shape in zip(flat.split([math.prod(s) for s in shapes]), shapes)]


def _softplus(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """F.softplus(x) (to a float rounding) into `out`, as log1p(exp(min(x, 80))) and then x where that is less:
    torch's CPU softplus kernel is the slowest pass of a Bayesian step, slower than these four together (29 vs
    17 us for 10k weights, 606 vs 506 us for 266k, one thread). softplus(x) > x everywhere, and equals x to float
    precision above 20 (F.softplus's threshold); exp(min(x, 80)) stays finite in float32. x is also clamped from
    below, at ~log of the dtype's smallest normal number (-87 in float32): the result is never below that number
    (where softplus underflows, x < -87, it is ~2e-38 rather than 0), so log and 1 / it stay finite with no pass
    of their own."""
    torch.clamp(x, _SOFTPLUS_FLOOR[x.dtype], 80.0, out=out).exp_().log1p_()
    return torch.maximum(out, x, out=out)


# per dtype: exp of this is above the smallest normal number (and log1p of that is the number itself)
_SOFTPLUS_FLOOR = {dtype: math.log(torch.finfo(dtype).tiny) + 0.5 for dtype in (torch.float16, torch.bfloat16,
                                                                                  torch.float32, torch.float64)}


class _Token:
    """Lives as long as the autograd node that uses a `_Buffers` set (see `_Buffers.in_use`)."""


class _Posterior(torch.autograd.Function):
    """For a list of layers: each one's mu (unchanged), sampling std, sigma * alive (or its square), and
    KL(q || N(0, prior^2)) summed over all their unpruned weights, from one softplus per layer; alive = 1.0 where
    mu != 0, 0.0 where pruned (float masks: bool tensors and `torch.where` cost 5-30x a multiply on CPU).

    KL per unpruned weight, closed form: (sigma^2 + mu^2) / (2 prior^2) - log sigma + log prior - 1/2 (a pruned
    weight has mu = 0 and alive = 0: no term), summed by dot products and norms, which read the weights without
    writing a weight-sized tensor. tests/test_bayes.py checks value and gradient against torch.distributions'
    `kl_divergence` of two Normals. The gradient is written out: d/dmu = mu / prior^2, added in one pass to the
    gradient mu gets from the forward pass through this node; d/dsigma = sigma / prior^2 - 1 / sigma, plus the
    sampling path's; d sigma / d rho = sigmoid(rho) (softplus'); all times alive, so a pruned weight's rho gets
    exactly 0. The KL's upstream gradient stays a tensor: no host sync.

    On a compact support (`buffers.support`, see `Posterior`) the same arithmetic runs on the kept weights,
    gathered first; the stds go out through the weight-shaped `buffers.stds` (0 at every other weight, never
    written there), and rho's gradient is scattered into zeros (or, rho's kept entries given as the optimizer's
    `_KeptRho`, handed back as they are laid out).

    The backward pass writes mu's and rho's gradients into the incoming gradients of mu and of the stds rather
    than into fresh weight-sized tensors (which cost page faults, ~0.2 ms a step at 784 inputs): each of these
    outputs goes to one layer's forward pass only (`Posterior.take`), whose backward hands over a gradient
    that nothing reads after this."""

    @staticmethod
    def forward(ctx, prior_sigma: float, buffers: _Buffers, *params):
        n = len(buffers.squares)
        mus, rhos = params[:n], params[n:]
        b, v, support = buffers.flat, buffers.views, buffers.support
        ctx.fused = posterior_kernel.available(b["sigma"], *mus, *rhos)
        if ctx.fused:
            return _fused_forward(ctx, prior_sigma, buffers, mus, rhos)
        if support is None:  # every weight: from the parameters straight into the flat buffers
            torch._foreach_copy_(v["aux"], rhos)  # (so that one softplus covers every layer)
            _softplus(b["aux"], out=b["sigma"])
            for mu, alive in zip(mus, v["alive"]):
                torch.ne(mu, 0, out=alive)
        else:  # the weights that can be nonzero, gathered (rho's: given as one parameter, or gathered too)
            rho_kept = buffers.gather(mus, rhos)
            _softplus(rho_kept, out=b["sigma"])
            torch.ne(b["mu"], 0, out=b["alive"])
        torch.mul(b["sigma"], b["alive"], out=b["s"])  # (sigma > 0: _softplus; log and 1 / sigma stay finite)
        torch.mul(b["s"], b["s"], out=b["s2"])
        torch.log(b["sigma"], out=b["aux"])
        if support is None:  # sum of mu^2 + s^2
            norms = torch.stack(torch._foreach_norm([*mus, b["s"]]))
            squares = norms.dot(norms)
        else:  # (mu and s lie side by side)
            squares = buffers.mu_s.dot(buffers.mu_s)
        sums = torch.stack([squares, b["alive"].dot(b["aux"]), b["alive"].sum()])
        kl = sums.dot(buffers.kl_weights(prior_sigma))  # sum mu^2 + s^2 over 2 prior^2 - log sigma + ...
        if support is not None:
            buffers.scatter_stds()
        return _outputs(ctx, prior_sigma, buffers, mus, kl, b["sigma"], b["alive"], b["s"],
                        *(rhos if support is None else [rho_kept]))

    @staticmethod
    @torch.autograd.function.once_differentiable  # (its gradient is written out: no graph of its own to differentiate)
    def backward(ctx, *grads):
        buffers = ctx.buffers
        n = len(buffers.squares)
        saved = ctx.saved_tensors  # (autograd's check that no later pass overwrote the buffers)
        # mu's and rho's gradients are written into the incoming gradients of mu and the stds (a fresh
        # weight-sized tensor per step costs its page faults): only into ones that own their memory; a view or
        # an expanded gradient (e.g. of a sum of a std) is copied first. (A hook that keeps one of these
        # internal gradients would see it overwritten: none does.)
        grads = tuple(g if g is None or (g.is_contiguous() and g._base is None)
                      else g.clone(memory_format=torch.contiguous_format) for g in grads[:2 * n]) + grads[2 * n:]
        grad_mus, grad_stds, grad_kl = grads[:n], grads[n:2 * n], grads[2 * n]
        if ctx.fused:
            return None, None, *_fused_backward(ctx, saved[:n], saved[n + 1:], grad_mus, grad_stds, grad_kl)
        mus, (sigma, alive, s), rhos = saved[:n], saved[n:n + 3], saved[n + 3:]
        b, v, support, var_p = buffers.flat, buffers.views, buffers.support, ctx.prior_sigma ** 2
        # d loss / d sigma, in the buffer log sigma was in: grad_kl (s / prior^2 - alive / sigma), plus 2 s g
        # (sigma^2 out) or alive g (sigma out); every term is 0 where pruned (s = alive = 0, sigma > 0)
        d_sigma = b["aux"]
        if grad_kl is None:
            d_sigma.zero_()
        else:
            torch.addcdiv(s, alive, sigma, value=-var_p, out=d_sigma).mul_(grad_kl / var_p)
        if support is not None:  # the stds' gradients at the kept weights
            buffers.gather_std_grads(grad_stds)
            grad_stds = v["grad"]
        for value, layers in buffers.by_factor:
            rows = [(v["aux"][i], buffers.factor[i], grad_stds[i]) for i in layers if grad_stds[i] is not None]
            if rows:
                torch._foreach_addcmul_(*map(list, zip(*rows)), value=value)
        if support is None:
            if all(g is not None for g in grad_stds):  # d sigma / d rho = softplus' = sigmoid, into the stds' grads
                d_rho = list(grad_stds)
                torch._foreach_copy_(d_rho, rhos)
                torch._foreach_sigmoid_(d_rho)
                torch._foreach_mul_(d_rho, v["aux"])
            else:
                d_rho = torch._foreach_mul(torch._foreach_sigmoid(rhos), v["aux"])
        elif buffers.given:  # the gradient of the kept rho, as they are laid out
            d_rho = [torch.sigmoid(rhos[0]).mul_(d_sigma)]
        else:  # rho's gradient: 0 but at the kept weights
            torch.sigmoid(rhos[0], out=b["grad"]).mul_(d_sigma)
            d_rho = buffers.scatter_rho_grads(mus, grads[n:2 * n])
        buffers.release()
        return None, None, *_mu_grads(mus, grad_mus, grad_kl, var_p), *d_rho


def _outputs(ctx, prior_sigma: float, buffers: _Buffers, mus, kl, *saved) -> tuple:
    """`_Posterior.forward`'s end, both ways: `saved` (after the mus) kept for backward; the outputs as fresh view
    objects (autograd sets their grad_fn to this node, and on the buffers' own views that made a cycle, node ->
    ctx.buffers -> view -> node, that kept a graph dropped before its backward, and its buffers, alive for good:
    ~5 MB per `kl(model)` at 784 inputs)."""
    ctx.save_for_backward(*mus, *saved)
    ctx.prior_sigma, ctx.buffers, ctx.token = prior_sigma, buffers, buffers.claim()
    ctx.set_materialize_grads(False)
    return (*mus, *[t.view_as(t) for t in buffers.outputs], kl)


def _mu_grads(mus, grad_mus, grad_kl, var_p: float) -> list:
    """mu's gradient from the forward pass plus the KL's (mu / prior^2 times the KL's upstream gradient), written
    into the incoming gradients where there are ones."""
    if grad_kl is None:
        return list(grad_mus)
    if all(g is not None for g in grad_mus):
        torch._foreach_addcmul_(list(grad_mus), list(mus), [grad_kl] * len(mus), value=1 / var_p)
        return list(grad_mus)
    return [mu * (grad_kl / var_p) if g is None else g.addcmul_(mu, grad_kl, value=1 / var_p)
            for mu, g in zip(mus, grad_mus)]


def _fused_forward(ctx, prior_sigma: float, buffers: _Buffers, mus, rhos) -> tuple:
    """`_Posterior.forward` by the compiled kernel (engine/posterior_kernel.c): the same outputs from one call over
    every layer's weights, or on a compact support over the kept ones, mu read and the stds written at their
    positions in the weights (no gather or scatter of their own)."""
    b, support = buffers.flat, buffers.support
    rho_kept = None if support is None else rhos[0] if buffers.given else buffers.gather(rhos=rhos)
    sums = posterior_kernel.forward(buffers.kernel(), _SOFTPLUS_FLOOR[torch.float32], mu=mus, sigma=b["sigma"],
                                    rho=rhos if support is None else rho_kept, std=buffers.outputs)
    # (written through pointers: their version counters are bumped by hand, for autograd's check that a graph's
    # saved buffers were not overwritten before its backward pass)
    written = [b["sigma"], b["s"], b["s2"]] if support is None else [b["sigma"], buffers.stds]
    torch.autograd.graph.increment_version(written)
    kl = sum(w * v for w, v in zip(_kl_weights(prior_sigma), sums))  # (in double precision)
    kl = torch.scalar_tensor(kl, dtype=b["sigma"].dtype, device=b["sigma"].device)
    return _outputs(ctx, prior_sigma, buffers, mus, kl, b["sigma"], *(rhos if support is None else [rho_kept]))


def _fused_backward(ctx, mus, rhos, grad_mus, grad_stds, grad_kl) -> list:
    """`_Posterior.backward` by the compiled kernel: mu's and rho's gradients, written into the incoming gradients
    of mu and of the stds where there are ones (see there), else into fresh tensors. On a compact support the
    kernel reads the stds' gradients and adds mu's KL term at the kept weights (elsewhere mu is 0) and computes
    rho's gradient there (handed back as the optimizer's `_KeptRho` lays it out, or scattered as there)."""
    buffers, k, var_p = ctx.buffers, 0.0 if grad_kl is None else float(grad_kl), ctx.prior_sigma ** 2
    b, support = buffers.flat, buffers.support
    fresh = dict(memory_format=torch.contiguous_format)  # (the kernel's layout, whatever the parameter's)
    if support is None:
        d_mus = [g if g is not None or grad_kl is None else torch.empty_like(mu, **fresh)
                 for mu, g in zip(mus, grad_mus)]
        d_rhos = d_rho = [torch.empty_like(rho, **fresh) if g is None else g for rho, g in zip(rhos, grad_stds)]
    else:
        d_mus = (None if grad_kl is None else  # (where mu got no gradient: its KL term over zeros)
                 [torch.zeros_like(mu, **fresh) if g is None else g for mu, g in zip(mus, grad_mus)])
        d_rho = torch.empty_like(rhos[0]) if buffers.given else b["grad"]
    posterior_kernel.backward(buffers.kernel(), _SOFTPLUS_FLOOR[torch.float32], k, var_p, mu=mus, sigma=b["sigma"],
                              rho=rhos if support is None else rhos[0], g_std=grad_stds, d_rho=d_rho,
                              g_mu=grad_mus, d_mu=d_mus)
    written = [t for t in (d_rhos if support is None else [d_rho]) + (d_mus or []) if t is not None]
    torch.autograd.graph.increment_version(written)  # (as in forward)
    if support is not None:
        d_rhos = [d_rho] if buffers.given else buffers.scatter_rho_grads(mus, grad_stds)
        d_mus = list(grad_mus) if d_mus is None else d_mus
    buffers.release()
    return d_mus + d_rhos


class BayesLinear(nn.Linear, BayesLayer):
    """nn.Linear with a Gaussian weight; local reparameterisation (each example its own weight sample)."""
    square = True

    @classmethod
    def from_layer(cls, layer: nn.Linear, options: Options) -> "BayesLinear":
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None,
                  device=layer.weight.device, dtype=layer.weight.dtype)
        new.load_state_dict(layer.state_dict())
        new._init_bayes(options)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, var_w = self._mean_std()
        # training: one node, its gradient written out; evaluation (no grad) skips the backward's intermediates
        if x.dim() == 2 and torch.is_grad_enabled():
            if self.sample is None and self.noise_scale == 1.0 and posterior_kernel.normals_available(x):
                noise = self._key()  # (drawn with the pre-activations' noise: lte_local_noise)
            else:
                noise = self._eps(x, (len(x), self.out_features))
            return _LocalReparameterisation.apply(x, mu, self.bias, var_w, noise, self._tiny)
        mean = F.linear(x, mu, self.bias)
        var = F.linear(x * x, var_w, self._tiny.expand(self.out_features))  # + _TINY
        return torch.addcmul(mean, var.sqrt(), self._eps(mean))


class _LocalReparameterisation(torch.autograd.Function):
    """x mu^T + b + sqrt(v) * eps, v = x^2 sigma^2^T + _TINY, for a batch of rows x, the gradient written out:
    one autograd node with five matrix products where autograd through the formula made eight nodes (their
    transposes, detaches and accumulations cost more than the arithmetic at batch 60; bench/bayes_speed.py).
    d out / d v = eps / (2 sqrt(v)): the forward pass keeps it (e), from 2 sqrt(v) computed as sqrt(4 v), so no
    weight-sized tensor is ever scaled by 1/2, and the 4 is addmm's alpha and beta (one operation less per layer).
    eps: the noise, or (float32 on the CPU) an int, the key of the compiled generator's normals, which
    posterior_kernel.local_noise_ draws while it adds them in, in one pass for the four elementwise operations."""

    @staticmethod
    def forward(ctx, x, mu, bias, var_w, eps, tiny):
        x2 = x * x
        mean, var4 = F.linear(x, mu, bias), torch.addmm(tiny, x2, var_w.t(), beta=4, alpha=4)  # (4 v: exact)
        if isinstance(eps, int) and posterior_kernel.local_noise_serves(mean, var4):
            out, e = mean, torch.empty_like(mean)  # the key of the compiled generator's normals: drawn in the pass
            posterior_kernel.local_noise_(var4, out, e, eps)
        else:
            if isinstance(eps, int):  # (bf16 products under autocast: the same normals, drawn first)
                eps = posterior_kernel.normal_(torch.empty(mean.shape, dtype=torch.float32), eps)
            std2 = var4.sqrt_()  # 2 sqrt(v)
            out = torch.addcmul(mean, std2, eps, value=0.5)  # (eps's dtype under autocast, as before)
            e = eps.div(std2)  # (eps may be a view of stored noise)
        if any(ctx.needs_input_grad[:4]):
            ctx.save_for_backward(x, x2, mu, var_w, e)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, x2, mu, var_w, e = ctx.saved_tensors
        if not x.dtype == grad.dtype == mu.dtype:  # bf16 input under autocast: the products in mu's dtype
            grad, x, x2, e = (t.to(mu.dtype) for t in (grad, x, x2, e))
        grad_v = grad * e  # d out / d v = eps / (2 sqrt(v)) = e
        grad_x = grad.mm(mu).addcmul_(x, grad_v.mm(var_w), value=2) if ctx.needs_input_grad[0] else None
        grad_mu = grad.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        grad_var_w = grad_v.t().mm(x2) if ctx.needs_input_grad[3] else None
        return grad_x, grad_mu, grad_bias, grad_var_w, None, None


class BayesConv2d(nn.Conv2d, BayesLayer):
    """nn.Conv2d with a Gaussian weight, sampled per forward pass (S at once as a grouped convolution)."""
    square = False

    @classmethod
    def from_layer(cls, layer: nn.Conv2d, options: Options) -> "BayesConv2d":
        if layer.padding_mode != "zeros":
            raise ConfigError("model.bayesian", True, f"convolutions with padding_mode {layer.padding_mode!r} "
                              "are not supported (zeros only)")
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                  layer.dilation, layer.groups, layer.bias is not None, device=layer.weight.device,
                  dtype=layer.weight.dtype)
        new.load_state_dict(layer.state_dict())
        new._init_bayes(options)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.samples
        mu, sigma = self._mean_std()
        if s == 1:
            return self._conv_forward(x, mu + sigma * self._eps(mu), self.bias)
        # S weight samples over S blocks of the batch: block i of the input meets sample i, as one
        # convolution with S*groups groups over the blocks laid side by side along the channels
        n = x.shape[0] // s
        w = mu + sigma * self._eps(mu.expand(s, *mu.shape))
        xs = x.view(s, n, *x.shape[1:]).transpose(0, 1).reshape(n, s * x.shape[1], *x.shape[2:])
        bias = None if self.bias is None else self.bias.repeat(s)
        out = F.conv2d(xs, w.reshape(s * w.shape[1], *w.shape[2:]), bias, self.stride, self.padding, self.dilation,
                       s * self.groups)
        return out.view(n, s, -1, *out.shape[2:]).transpose(0, 1).reshape(s * n, -1, *out.shape[2:])


# ---------------------------------------------------------------- models
def convert(model: nn.Module, options: Options) -> nn.Module:
    """Swap the prunable layers of `model` (in place) for Bayesian ones, keeping names and weights (as mu)."""
    for name in M.prunable(model):
        module_name = name.rpartition(".")[0]
        layer = M.owner(model, name)
        if type(layer) is nn.Linear:
            new = BayesLinear.from_layer(layer, options)
        elif type(layer) is nn.Conv2d:
            new = BayesConv2d.from_layer(layer, options)
        else:
            raise ConfigError("model.bayesian", True, f"layer {module_name or 'root'} is a {type(layer).__name__}: "
                              "Bayesian layers exist for nn.Linear and nn.Conv2d")
        if module_name:
            parent, _, attr = module_name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
        else:
            raise ConfigError("model.bayesian", True, "the model is a single layer; wrap it in a module")
    shared = Posterior([layer for _, layer in layers(model)])
    for layer in shared.layers:
        layer.posterior = shared
    model.bayes_options = options
    return model


def layers(model: nn.Module) -> list[tuple[str, BayesLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BayesLayer)]


def is_bayesian(model: nn.Module) -> bool:
    return any(isinstance(m, BayesLayer) for m in model.modules())


def options_of(model: nn.Module) -> Options:
    return getattr(model, "bayes_options", None) or Options.of()


def posteriors(model: nn.Module) -> list[Posterior]:
    """The Posterior groups of a model's Bayesian layers (one for a converted model)."""
    return list({id(layer.posterior): layer.posterior for _, layer in layers(model)}.values())


def kl(model: nn.Module) -> torch.Tensor:
    """KL(q || prior) summed over the unpruned weights of every Bayesian layer of `model`."""
    return sum(group.kl() for group in posteriors(model))


def seed_noise(model: nn.Module, seed: int | None) -> None:
    """Draw every Bayesian layer's noise from its own generator seeded from (seed, layer) (None: torch's
    global generator), so a run's trainings and evaluations repeat exactly."""
    for name, layer in layers(model):
        layer.generator = None if seed is None else torch.Generator(layer.weight.device).manual_seed(
            derive_seed(seed, "bayes-noise", name))


def start_training(model: nn.Module, n_train: int, seed: int, masks: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
                   optimizer: torch.optim.Optimizer | None = None) -> Callable[[], torch.Tensor] | None:
    """For one training of a Bayesian net (the trainer calls it): seed its noise from the training's seed
    and return the KL part of the negative ELBO per training example, its warm-up starting now. None for
    a deterministic net. `masks`: (parameter, what the trainer multiplies its gradient by) for the masked
    parameters, so that the posterior of a sparse ticket computes on its kept weights only (`Posterior`),
    for as long as the returned penalty lives; `optimizer`, the training's, then steps rho's kept entries only
    (`_KeptRho`: it holds them in place of the layers' rho for that time)."""
    if not is_bayesian(model):
        return None
    seed_noise(model, seed)
    warmup = options_of(model).kl_warmup
    groups = posteriors(model)
    by_param = {id(p): m for p, m in masks}
    calls = [0]

    def penalty() -> torch.Tensor:
        weight = 1.0 if calls[0] >= warmup else (calls[0] + 1) / warmup
        calls[0] += 1
        # the KL the step's forward pass computed on the way (from the sigmas it sampled with)
        kl_all = groups[0].take_kl()
        for group in groups[1:]:
            kl_all = kl_all + group.take_kl()
        return kl_all * (weight / n_train)

    for group in groups:
        group.restrict(by_param, penalty, optimizer)
    return penalty


def end_training(model: nn.Module) -> None:
    """The training `start_training` began is over (the trainer calls it however the training ends: finished,
    cancelled or failed): rho goes back into the training's optimizer and the posterior computes over every
    weight again. Not left to the penalty's garbage collection: a kept traceback (a notebook after Ctrl-C, a
    failed job's future) holds the penalty, and a later training of the model with another optimizer would
    then step a rho that its forward pass no longer reads. Nothing for a deterministic net."""
    for group in posteriors(model):
        group._let_go()


@contextlib.contextmanager
def noise(model: nn.Module, scale: float):
    """Scale every Bayesian layer's noise (0: the deterministic net with weights mu) inside the block."""
    saved = [(layer, layer.noise_scale) for _, layer in layers(model)]
    for layer, _ in saved:
        layer.noise_scale = scale
    try:
        yield model
    finally:
        for layer, old in saved:
            layer.noise_scale = old


def sigmas(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{weight name: posterior std} from a Bayesian state dict (0 where the mean is pruned)."""
    return {n[:-len("rho")] + "weight": F.softplus(rho) * (weights[n[:-len("rho")] + "weight"] != 0)
            for n, rho in weights.items() if n.endswith("rho") and n[:-len("rho")] + "weight" in weights}


# ---------------------------------------------------------------- prediction and its uncertainty
@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, samples: int | None = None, rows: int = 2048,
            batched: bool | None = None) -> torch.Tensor:
    """log of the MC predictive mean over `samples` weight samples (default: the model's mc_samples), [N, C].

    Batched: each chunk of inputs is repeated S times and pushed through once. Else one pass per sample, with
    the same noise (`BayesLayer._eps`): equal results to float rounding. None picks per model what measured
    faster (bench/bayes_speed.py): one pass per sample for nets with convolutions on CPU, where the grouped
    convolution over the samples and the copies it needs cost more than S plain passes (0.7x), batched
    otherwise (1.1-1.2x for lenet300 on CPU; on a GPU one launch for all samples is the point). A
    deterministic net is evaluated once (S = 1)."""
    s = options_of(model).mc_samples if samples is None else samples
    s = s if is_bayesian(model) else 1
    bayes_layers = [layer for _, layer in layers(model)]
    conv = [layer for layer in bayes_layers if isinstance(layer, BayesConv2d)]
    if batched is None:
        batched = not (conv and x.device.type == "cpu")
    was_training = model.training
    model.eval()
    saved = [(layer, layer.generator) for layer in bayes_layers]
    seed_noise(model, PREDICT_SEED)  # the same weights always get the same metrics
    try:
        chunk = max(1, rows // s)  # the same chunks either way: the noise of a linear layer is per row
        if batched:
            for layer in conv:
                layer.samples = s
        out = []
        for i in range(0, len(x), chunk):
            xb = x[i:i + chunk]
            if batched:
                logits = model(xb.repeat(s, *[1] * (xb.dim() - 1))).float()
                logp = F.log_softmax(logits, -1).view(s, len(xb), -1)
            else:
                passes = []
                for k in range(s):
                    for layer in bayes_layers:
                        layer.sample = (k, s)
                    passes.append(F.log_softmax(model(xb).float(), -1))
                logp = torch.stack(passes)
            out.append(torch.logsumexp(logp, 0) - math.log(s))
        return torch.cat(out)
    finally:
        for layer in bayes_layers:
            layer.samples, layer.sample, layer._all_samples = 1, None, None
        for layer, g in saved:  # a training that evaluates on the way continues its own noise
            layer.generator = g
        model.train(was_training)


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """Confidence (max predictive probability) binned in `bins` equal-width bins over (0, 1]:
    per bin the count, mean confidence and accuracy; ECE = sum over bins of count/N x |accuracy - confidence|."""
    conf, pred = probs.max(1)
    correct = (pred == y).double()
    conf = conf.double()
    b = torch.clamp(torch.ceil(conf * bins).long() - 1, 0, bins - 1)  # bin i holds (i/bins, (i+1)/bins]
    count = torch.bincount(b, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(0, b, conf)
    acc_sum = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(0, b, correct)
    safe = count.clamp(min=1)
    ece = float((acc_sum - conf_sum).abs().sum() / len(y))
    return {"ece": ece, "bins": bins, "count": count.long().tolist(), "confidence": (conf_sum / safe).tolist(),
            "accuracy": (acc_sum / safe).tolist()}


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> float:
    return reliability(probs, y, bins)["ece"]


def evaluate(model: nn.Module, split, samples: int | None = None) -> dict:
    """Accuracy, NLL and ECE of the MC predictive on a split (`engine.data.Split`), with reliability bins."""
    s = (options_of(model).mc_samples if samples is None else samples) if is_bayesian(model) else 1
    logp = predict(model, split.x, s)
    y = split.y
    rel = reliability(logp.exp(), y)
    return {"accuracy": float((logp.argmax(1) == y).double().mean()),
            "nll": float(F.nll_loss(logp, y, reduction="mean")), "ece": rel["ece"], "reliability": rel,
            "mc_samples": s}
