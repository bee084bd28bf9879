"""Run configuration: frozen dataclasses, validated on construction.

These dataclasses are the one source of truth for settings. Each field carries its help text and
(where it has a closed set of values) its choices in `metadata`; the CLI's flags (`engine.cli`) and the
explorer's widgets are generated from them. A config hashes, over its non-default fields, to a run id.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError


DEVICE_SYNTAX = r"auto|cpu|mps|cuda(:\d+)?"


def option(default, help: str, *, choices: Callable[[], list[str]] | list[str] | None = None,
           hashed: bool = True, **extra):
    """A dataclass field with help text, optional choices, and whether it changes results (`hashed`).

    Fields that do not change what a run computes (where data is cached, whether downloads are
    allowed) are left out of the run id so the same experiment keeps the same id.
    """
    meta = {"help": help, "choices": choices, "hashed": hashed, **extra}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


# ---------------------------------------------------------------- validation helpers
def _number(name: str, value, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(name, value, f"must be {kind}")
    below = value <= lo if lo_open else value < lo if lo is not None else False
    above = value >= hi if hi_open else value > hi if hi is not None else False
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(name, value, f"must be {kind} in {left}{lo_s}, {hi_s}{right}")


def _choice(name: str, value, allowed: list[str]):
    if value not in allowed:
        raise ConfigError(name, value, f"allowed: {', '.join(allowed)}")


def _known_datasets():
    from . import data
    return data.dataset_choices()


def _known_models():
    from . import models  # noqa: F401  (fills the registry)
    from .registry import MODELS
    return MODELS.names()


def _known_methods():
    from . import methods  # noqa: F401
    from .registry import METHODS
    return METHODS.names()


def _method(name):
    from . import methods  # noqa: F401
    from .registry import METHODS
    return METHODS.get(name, "prune.method")


def _known_controls():
    from . import methods  # noqa: F401
    from .registry import CONTROLS
    return CONTROLS.names()


def _patterns():
    from .structured import PATTERNS
    return PATTERNS


def _refills():
    from .structured import REFILLS
    return REFILLS


def _channel_scores():
    from .structured import CHANNEL_SCORES
    return CHANNEL_SCORES


# ---------------------------------------------------------------- the config groups
@dataclass(frozen=True)
class DataConfig:
    dataset: str = option("digits", "dataset: a registered name, or npz:PATH with x_train, y_train, "
                          "x_test, y_test arrays", choices=_known_datasets)
    val_fraction: float = option(0.1, "fraction of the training set held out for validation "
                                 "(early stopping and selection; test is never used for selection)")
    data_dir: str = option("~/.cache/lottery-explorer/data", "where torchvision datasets are stored",
                           hashed=False)
    download: bool = option(False, "allow downloading torchvision datasets (needs network)", hashed=False)

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError("data.dataset", self.dataset, "must be a non-empty string")
        if self.dataset.startswith("npz:"):
            if not self.dataset[4:]:
                raise ConfigError("data.dataset", self.dataset, "npz: needs a path, e.g. npz:my_data.npz")
        else:
            _choice("data.dataset", self.dataset, [c for c in _known_datasets() if c != "npz:PATH"]
                    + ["npz:PATH"])
        _number("data.val_fraction", self.val_fraction, lo=0, hi=0.5, lo_open=True, hi_open=True)
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data.data_dir", self.data_dir, "must be a directory path")
        if not isinstance(self.download, bool):
            raise ConfigError("data.download", self.download, "must be true or false")


@dataclass(frozen=True)
class ModelConfig:
    model: str = option("lenet300", "architecture", choices=_known_models)
    width: float = option(1.0, "width multiplier for hidden layers / channels")
    hidden: tuple = option((256, 128), "hidden widths of the `mlp` model, comma separated",
                           item_type=int)
    init: str = option("kaiming_normal", "weight initialisation of Linear/Conv layers",
                       choices=["kaiming_normal", "kaiming_uniform", "xavier_normal", "signed_constant",
                                "torch_default"])

    def __post_init__(self):
        _choice("model.model", self.model, _known_models())
        _number("model.width", self.width, lo=0, hi=64, lo_open=True)
        if (not isinstance(self.hidden, tuple) or not self.hidden
                or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 1_000_000
                           for h in self.hidden)):
            raise ConfigError("model.hidden", self.hidden, "must be one or more positive integers")
        _choice("model.init", self.init, choices_of(_field(ModelConfig, "init")))


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = option("adam", "optimizer", choices=["adam", "sgd"])
    lr: float = option(1.2e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum (sgd only)")
    weight_decay: float = option(0.0, "L2 weight decay")
    batch_size: int = option(60, "training batch size")
    epochs: int = option(10, "training epochs per level")
    lr_schedule: str = option("constant", "learning-rate schedule over a level's training",
                              choices=["constant", "cosine", "step"])
    warmup: int = option(0, "linear learning-rate warm-up, in iterations")
    eval_every: int = option(0, "evaluate every N iterations (0: once per epoch)")

    def __post_init__(self):
        _choice("train.optimizer", self.optimizer, ["adam", "sgd"])
        _number("train.lr", self.lr, lo=0, hi=10, lo_open=True)
        _number("train.momentum", self.momentum, lo=0, hi=1, hi_open=True)
        _number("train.weight_decay", self.weight_decay, lo=0, hi=1)
        _number("train.batch_size", self.batch_size, lo=1, hi=1_000_000, integer=True)
        _number("train.epochs", self.epochs, lo=1, hi=100_000, integer=True)
        _choice("train.lr_schedule", self.lr_schedule, ["constant", "cosine", "step"])
        _number("train.warmup", self.warmup, lo=0, integer=True)
        _number("train.eval_every", self.eval_every, lo=0, integer=True)


@dataclass(frozen=True)
class Rewind:
    """Where survivors restart after each pruning step.

    `init`: the original initialisation (Frankle & Carbin). `iter`: the weights after `iteration`
    steps of dense training, continuing the schedule and data order from there (late rewinding).
    `lr`: keep the trained weights and replay the learning-rate schedule (learning-rate rewinding).
    """
    kind: str
    iteration: int = 0

    SYNTAX = "init, iter:K (K a positive integer number of iterations) or lr"

    @classmethod
    def parse(cls, text: str, field_name: str = "prune.rewind") -> "Rewind":
        if text in ("init", "lr"):
            return cls(text)
        m = re.fullmatch(r"iter:(\d+)", text) if isinstance(text, str) else None
        if not m or int(m.group(1)) < 1:
            raise ConfigError(field_name, text, f"allowed: {cls.SYNTAX}")
        return cls("iter", int(m.group(1)))


@dataclass(frozen=True)
class PruneConfig:
    method: str = option("imp", "ticket-finding method", choices=_known_methods)
    levels: int = option(14, "pruning levels (imp)")
    prune_fraction: float = option(0.2, "fraction of the remaining weights pruned per level")
    output_fraction: float = option(0.1, "fraction of the output layer's remaining weights pruned per "
                                    "level (0: never prune the output layer)")
    scope: str = option("layerwise", "rank weights within each layer, across all layers, or with ERK layer "
                        "densities (erk: pruning-at-init methods only)", choices=["layerwise", "global", "erk"])
    pattern: str = option("unstructured", "sparsity pattern of the hidden layers: single weights, whole output "
                          "channels/neurons (the model physically shrinks), or nm (exactly N kept in every M "
                          "consecutive weights along the input dimension); the output layer is always pruned "
                          "weight by weight (imp, oneshot, pruning at init)", choices=_patterns)
    nm: str = option("2:4", "N:M of --pattern nm (1 <= N <= M): the hidden layers' density is N/M, --density does "
                     "not apply; imp keeps one fewer per group each level, M-N levels at most")
    refill: str = option("none", "after each pruning step coarsen the unstructured mask (Chen et al. 2022): refill "
                         "keeps the nnz/fan-in best channels fully dense, regroup dense column blocks for groups of "
                         "rows with similar patterns (imp, oneshot)", choices=_refills)
    channel_score: str = option("l1", "rank channels (--pattern channel, --refill refill) by the l1 norm of their "
                                "row of scores, or by |gamma| of the BatchNorm after the layer (bn: trained nets; "
                                "layers without one use l1)", choices=_channel_scores)
    rewind: str = option("init", f"rewind point: {Rewind.SYNTAX}")
    density: float = option(0.1, "target density: of the hidden layers (oneshot, earlybird), of all prunable "
                            "weights (pruning at init)")
    synflow_rounds: int = option(100, "synflow: scoring rounds (density after round t = rho^(t/rounds))")
    dst_interval: int = option(100, "rigl/set: update the mask every this many iterations (Delta T)")
    dst_fraction: float = option(0.3, "rigl/set: initial drop fraction alpha, decayed by a cosine")
    dst_end: float = option(0.75, "rigl/set: stop updating the mask after this fraction of training")
    search_epochs: int = option(20, "cts: epochs of mask search (each costs about one training epoch)")
    search_lr: float = option(0.1, "cts: Adam learning rate of the mask logits")
    cs_rounds: int = option(3, "cs: rounds of --epochs each, the temperature annealed (beta 1 -> 200) per round")
    cs_penalty: float = option(1e-8, "cs: weight lambda of the mask penalty lambda x sum sigmoid(beta s) "
                               "(its scale depends on the model's size)")
    earlybird_eps: float = option(0.1, "earlybird: draw the ticket when the last 5 epochs' masks differ by less "
                                  "than this fraction of entries")
    controls: tuple = option(("reinit", "random"), "controls trained beside every ticket, comma "
                             "separated (none: no controls)", choices=_known_controls, item_type=str)

    def __post_init__(self):
        _choice("prune.method", self.method, _known_methods())
        _number("prune.levels", self.levels, lo=1, hi=100, integer=True)
        _number("prune.prune_fraction", self.prune_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        _number("prune.output_fraction", self.output_fraction, lo=0, hi=1, hi_open=True)
        _choice("prune.scope", self.scope, ["layerwise", "global", "erk"])
        scopes = getattr(_method(self.method), "scopes", ("layerwise", "global"))
        if self.scope not in scopes:
            raise ConfigError("prune.scope", self.scope, f"method {self.method} allows: {', '.join(scopes)}")
        self._check_pattern()
        _number("prune.synflow_rounds", self.synflow_rounds, lo=1, hi=10_000, integer=True)
        Rewind.parse(self.rewind)
        _number("prune.density", self.density, lo=0, hi=1, lo_open=True)
        _number("prune.earlybird_eps", self.earlybird_eps, lo=0, hi=1, lo_open=True)
        _number("prune.search_epochs", self.search_epochs, lo=1, hi=100_000, integer=True)
        _number("prune.search_lr", self.search_lr, lo=0, hi=100, lo_open=True)
        _number("prune.cs_rounds", self.cs_rounds, lo=1, hi=100, integer=True)
        _number("prune.cs_penalty", self.cs_penalty, lo=0, hi=1e6)
        _number("prune.dst_interval", self.dst_interval, lo=1, integer=True)
        _number("prune.dst_fraction", self.dst_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        _number("prune.dst_end", self.dst_end, lo=0, hi=1, lo_open=True)
        if not isinstance(self.controls, tuple):
            raise ConfigError("prune.controls", self.controls, "must be a tuple of control names")
        known = _known_controls()
        for c in self.controls:
            if c not in known:
                raise ConfigError("prune.controls", self.controls, f"unknown control {c!r}; allowed: {', '.join(known)}")
        if len(set(self.controls)) != len(self.controls):
            raise ConfigError("prune.controls", self.controls, "each control may appear once")

    def _check_pattern(self):
        from .structured import parse_nm

        _choice("prune.pattern", self.pattern, _patterns())
        parse_nm(self.nm)
        _choice("prune.refill", self.refill, _refills())
        _choice("prune.channel_score", self.channel_score, _channel_scores())
        method = _method(self.method)
        patterns = getattr(method, "patterns", ("unstructured",))
        if self.pattern not in patterns:
            raise ConfigError("prune.pattern", self.pattern, f"method {self.method} allows: {', '.join(patterns)}")
        if self.pattern != "unstructured" and self.scope == "global":
            raise ConfigError("prune.scope", self.scope, f"--pattern {self.pattern} selects within each layer: use "
                              "layerwise (or erk for pruning at init)")
        if self.refill != "none" and not getattr(method, "refills", False):
            raise ConfigError("prune.refill", self.refill, f"method {self.method} allows: none (refill and regroup "
                              "follow imp and oneshot pruning steps)")
        if self.channel_score == "bn" and getattr(method, "starts_from_init", False):
            raise ConfigError("prune.channel_score", self.channel_score, f"{self.method} prunes at initialisation, "
                              "where every BatchNorm gamma is 1: use l1")
        if self.refill != "none" and self.pattern != "unstructured":
            raise ConfigError("prune.refill", self.refill, "coarsens unstructured masks: use --pattern unstructured")

    @property
    def rewind_point(self) -> Rewind:
        return Rewind.parse(self.rewind)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    seed: int = option(0, "random seed (initialisation, data order, controls)")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:N or mps", hashed=False)

    def __post_init__(self):
        for name, cls in GROUPS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, getattr(self, name), f"must be a {cls.__name__}")
        _number("seed", self.seed, lo=0, hi=2**31 - 1, integer=True)
        if not isinstance(self.device, str) or not re.fullmatch(DEVICE_SYNTAX, self.device):
            raise ConfigError("device", self.device, "allowed: auto, cpu, cuda, cuda:N, mps")

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON-ready data (tuples become lists); `from_dict` reads it back."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build a validated config from plain data (config.json, the explorer). Unknown keys are errors."""
        if not isinstance(d, dict):
            raise ConfigError("config", d, "must be a mapping")
        groups = {}
        for name, gcls in GROUPS.items():
            sub = d.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(name, sub, "must be a mapping")
            groups[name] = _build(gcls, sub, prefix=name + ".")
        top = {k: v for k, v in d.items() if k not in GROUPS}
        return _build(cls, top, prefix="", extra=groups)

    def replace(self, **changes) -> "RunConfig":
        """`cfg.replace(**{"train.epochs": 3, "seed": 1})`: a validated copy with dotted-path changes."""
        d = self.to_dict()
        for path, value in changes.items():
            group, _, name = path.rpartition(".")
            target = d[group] if group else d
            if name not in target:
                raise ConfigError(path, value, "is not a config field")
            target[name] = value
        return RunConfig.from_dict(d)

    # ------------------------------------------------------------ identity
    def non_default(self) -> dict:
        """The hashed fields that differ from their defaults, as {group: {field: value}}."""
        out: dict[str, Any] = {}
        for name, gcls in GROUPS.items():
            diff = _diff(getattr(self, name), gcls())
            if diff:
                out[name] = diff
        top = _diff(self, RunConfig(), skip=set(GROUPS))
        out.update(top)
        return out

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.non_default(), sort_keys=True, default=list).encode()
        digest = hashlib.sha256(blob).hexdigest()[:10]
        dataset = re.sub(r"[^a-z0-9]+", "", self.data.dataset.split(":")[0].lower())
        return f"{self.prune.method}-{self.model.model}-{dataset}-{digest}"


GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                           "prune": PruneConfig}


# ---------------------------------------------------------------- settings: what UIs are generated from
@dataclass(frozen=True)
class Setting:
    """One config field as a UI sees it: the CLI makes a flag of it, the explorer a widget."""
    path: str          # "prune.levels" (or "seed" for top-level fields)
    name: str          # "levels"
    type: type         # int, float, str, bool or tuple
    default: Any
    help: str
    choices: list[str] | None
    item_type: type | None  # for tuples

    def parse(self, text):
        """A value from text (a flag, a text box), or ConfigError naming the field."""
        if not isinstance(text, str) or self.type is str:
            return text
        try:
            if self.type is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            if self.type is int:
                return int(text)
            if self.type is float:
                return float(text)
            if self.type is tuple:
                if text.strip().lower() in ("", "none"):
                    return ()
                return tuple(self.item_type(part.strip()) for part in text.split(","))
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(
                self.type, f"comma-separated {getattr(self.item_type, '__name__', 'value')}s")
            raise ConfigError(self.path, text, f"must be {kind}") from None
        return text

    def format(self, value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def settings() -> list[Setting]:
    """Every config field, groups first, in declaration order."""
    out = []
    for group, cls in [*GROUPS.items(), ("", RunConfig)]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls is RunConfig and f.name in GROUPS:
                continue
            out.append(Setting(f"{group}.{f.name}" if group else f.name, f.name, hints[f.name], f.default,
                               f.metadata.get("help", ""), choices_of(f), f.metadata.get("item_type")))
    return out


def config_from_settings(values: dict[str, Any], base: dict | None = None) -> RunConfig:
    """A validated RunConfig from {setting path: value or text}; unspecified settings keep `base`/defaults."""
    d = copy.deepcopy(base) if base else {}
    by_path = {s.path: s for s in settings()}
    for path, value in values.items():
        if path not in by_path:
            raise ConfigError(path, value, "is not a config field")
        group, _, name = path.rpartition(".")
        (d.setdefault(group, {}) if group else d)[name] = by_path[path].parse(value)
    return RunConfig.from_dict(d)


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _diff(obj, default, skip=frozenset()) -> dict:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.name not in skip and f.metadata.get("hashed", True)
            and getattr(obj, f.name) != getattr(default, f.name)}


def _plain(value):
    """Tuples as lists, so a config reads the same from memory and from JSON."""
    return list(value) if isinstance(value, tuple) else value


def _build(cls, values: dict, prefix: str, extra: dict | None = None):
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = dict(extra or {})
    for key, value in values.items():
        if key not in names:
            raise ConfigError(prefix + key, value, f"unknown field; known: {', '.join(names)}")
        if isinstance(names[key].default, tuple) and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples
        kwargs[key] = value
    return cls(**kwargs)
