"""Run configuration: frozen dataclasses, validated on construction from their fields' metadata.

These dataclasses are the one source of truth for settings. Each field is made with `option()`: its help
text, its choices (a list, or a registry's names), its bounds, and whether it changes results; the
validation below, the CLI's flags and the explorer's widgets (engine.settings) are all generated from that.
A method's own settings live in an options dataclass in the method's module (MethodSpec.options) and are
stored flat in the "prune" group, beside PruneConfig's fields. A config hashes, over its non-default
fields, to a run id.

This module imports nothing of the engine but its errors and its registries (which import nothing): every
other module may import it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError
from .registry import CONTROLS, DATASETS, METHODS, MODELS

DEVICE_SYNTAX = r"auto|cpu|mps|cuda(:\d+)?"
PATTERNS = ["unstructured", "channel", "nm"]
REFILLS = ["none", "refill", "regroup"]
CHANNEL_SCORES = ["l1", "bn"]


def option(default, help: str, *, choices: Callable[[], list[str]] | list[str] | None = None, lo=None, hi=None,
           lo_open: bool = False, hi_open: bool = False, check: Callable[[Any, str], None] | None = None,
           hashed: bool = True, item_type: type | None = None, unique: bool = False):
    """A dataclass field with its help text and what `validate` checks.

    choices  allowed values (a list, or a function returning one, e.g. a registry's names); for a tuple
             field, allowed items
    lo, hi   numeric bounds, closed unless lo_open / hi_open
    check    check(value, path) for what metadata cannot say; raises ConfigError
    hashed   False for fields that do not change what a run computes (where data is cached, whether
             downloads are allowed): they stay out of the run id so the same experiment keeps the same id
    item_type, unique: a tuple field's item type, and whether each item may appear once
    """
    meta = {"help": help, "choices": choices, "hashed": hashed, "lo": lo, "hi": hi, "lo_open": lo_open,
            "hi_open": hi_open, "check": check, "item_type": item_type, "unique": unique}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


@functools.cache
def field_types(cls) -> dict[str, tuple[type, bool]]:
    """{field: (type, whether None is allowed)} from the annotations: `int | None` -> (int, True)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
        if args:
            out[name] = (next(a for a in args if a is not type(None)), type(None) in args)
        else:
            out[name] = (typing.get_origin(hint) or hint, False)
    return out


# ---------------------------------------------------------------- validation from the metadata
def _allowed_range(lo, hi, lo_open: bool, hi_open: bool) -> str:
    """The bounds as a person says them: "in (0, 1]" for two, ">= 1" or "< 1" for one (an interval to "inf"
    read as a formula), nothing for none."""
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _number(name: str, value, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    kind = "an integer" if integer else "a number"
    in_range = f"must be {kind}{_allowed_range(lo, hi, lo_open, hi_open)}"
    if value is None:  # a cleared number box in the app ("steps: empty; must be ..."): what it may hold
        raise ConfigError(name, value, in_range)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(name, value, f"must be {kind}")
    below = value <= lo if lo_open else value < lo if lo is not None else False
    above = value >= hi if hi_open else value > hi if hi is not None else False
    if below or above:
        raise ConfigError(name, value, in_range)


def _choice(name: str, value, allowed: list[str]):
    if value not in allowed:
        raise ConfigError(name, value, f"allowed: {', '.join(allowed)}")


def validate(obj, prefix: str = "") -> None:
    """Check every field of the dataclass instance `obj` against its type and `option()` metadata; errors
    name the field as `prefix + name`. Options dataclasses call it from `__post_init__`."""
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        if f.name not in types_ or "help" not in f.metadata:
            continue
        path, value, meta = prefix + f.name, getattr(obj, f.name), f.metadata
        kind, nullable = types_[f.name]
        if value is None and nullable:
            continue
        bounds = {k: meta[k] for k in ("lo", "hi", "lo_open", "hi_open")}
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(path, value, "must be true or false")
        elif kind in (int, float):
            _number(path, value, integer=kind is int, **bounds)
        elif kind is str:
            if not isinstance(value, str):
                raise ConfigError(path, value, "must be a string")
            if choices_of(f) is not None:
                _choice(path, value, choices_of(f))
        elif kind is tuple:
            _check_tuple(path, value, meta, choices_of(f), bounds)
        if meta.get("check") is not None:
            meta["check"](value, path)


def _check_tuple(path: str, value, meta, allowed, bounds) -> None:
    item = meta.get("item_type")
    if not isinstance(value, tuple):
        raise ConfigError(path, value, f"must be a tuple of {getattr(item, '__name__', 'value')}s")
    # The error names the bad item, and the whole value after it; a value of one item is that item, said once
    # (not "0 ... (in (0,))").
    whole = f" (in {value!r})" if len(value) > 1 else ""
    for v in value:
        if allowed is not None and v not in allowed:
            raise ConfigError(path, v, f"allowed: {', '.join(allowed)}{whole}")
        if item in (int, float):
            try:
                _number(path, v, integer=item is int, **bounds)
            except ConfigError as e:
                raise ConfigError(path, v, f"each item {e.allowed}{whole}") from None
    if meta.get("unique") and len(set(value)) != len(value):
        raise ConfigError(path, value, "each item may appear once")


# ---------------------------------------------------------------- checks metadata cannot express
def parse_nm(text: str, field: str = "prune.nm") -> tuple[int, int]:
    """"2:4" -> (2, 4); anything else is a ConfigError naming `field`."""
    m = re.fullmatch(r"(\d+):(\d+)", text) if isinstance(text, str) else None
    if m is None or not 1 <= int(m[1]) <= int(m[2]):
        raise ConfigError(field, text, "must be N:M with 1 <= N <= M, e.g. 2:4")
    return int(m[1]), int(m[2])


def _dataset(value: str, path: str) -> None:
    if not value:
        raise ConfigError(path, value, "must be a non-empty string")
    if value.startswith(("npz:", "text:", "hf:")):
        if not value.partition(":")[2]:
            raise ConfigError(path, value, "needs a path or hub name, e.g. npz:my_data.npz, text:my_texts.jsonl "
                              "or hf:NAME")
    elif value not in dataset_choices():
        head, colon, rest = value.partition(":")
        ext = os.path.splitext(value)[1].lower()
        meant = (f"{head.lower()}:{rest}" if colon and head.lower() in ("npz", "text", "hf")  # NPZ:my.npz
                 else {".npz": f"npz:{value}", ".jsonl": f"text:{value}"}.get(ext))  # a file without its prefix
        raise ConfigError(path, value, f"allowed: {', '.join(dataset_choices())}"
                          f"{f'; did you mean {meant}?' if meant else ''}")


def dataset_choices() -> list[str]:
    return DATASETS.names() + ["npz:PATH", "text:PATH", "hf:NAME"]


def _model(value: str, path: str) -> None:
    if value.startswith("hf:"):  # a Hugging Face folder or cached hub id (engine.transformer), checked on load
        if not value[3:]:
            raise ConfigError(path, value, "hf: needs a folder or hub id, e.g. hf:./my-bert")
    elif value not in MODELS.names():
        raise ConfigError(path, value, f"allowed: {', '.join(MODELS.names() + ['hf:PATH_OR_ID'])} (your own "
                          "nn.Module: engine.run(cfg, model=YourModule()) from Python; README: 'Your own model and "
                          "data')")


def _tokenizer(value: str, path: str) -> None:
    from .text import check_tokenizer_name  # text tasks' names live there (it imports no torch)
    check_tokenizer_name(value)


def _hidden(value: tuple, path: str) -> None:
    if not value or not all(isinstance(h, int) and not isinstance(h, bool) for h in value):
        raise ConfigError(path, value, "must be one or more positive integers")


def _non_empty(value: str, path: str) -> None:
    if not value:
        raise ConfigError(path, value, "must be a directory path")


# ---------------------------------------------------------------- the config groups
@dataclass(frozen=True)
class DataConfig:
    dataset: str = option("digits", "dataset: a registered name, npz:PATH with x_train, y_train, "
                          "x_test, y_test arrays, text:PATH (.jsonl/.npz of your texts and labels) or hf:NAME "
                          "(a hub text dataset, with --download)", check=_dataset)
    val_fraction: float = option(0.1, "fraction of the training set held out for validation "
                                 "(early stopping and selection; test is never used for selection)",
                                 lo=0, hi=0.5, lo_open=True, hi_open=True)
    data_dir: str = option("~/.cache/lottery-explorer/data", "where torchvision datasets are stored",
                           hashed=False, check=_non_empty)
    download: bool = option(False, "allow downloading torchvision datasets and hf:NAME hub text datasets (needs "
                            "network)", hashed=False)
    # text datasets (engine.text): token ids of this tokenizer, padded to max_length
    tokenizer: str = option("minilm", "text datasets: the tokenizer (minilm, or hf:PATH_OR_ID: the same as --model)",
                            check=_tokenizer)
    max_length: int = option(32, "text datasets: tokens per example (longer texts of the built-in tasks are cut, "
                             "yours refused)", lo=8, hi=4096)

    def __post_init__(self):
        validate(self, "data.")


@dataclass(frozen=True)
class ModelConfig:
    model: str = option("lenet300", "architecture (or hf:PATH_OR_ID: a Hugging Face encoder from a local folder or "
                        "the local hub cache, offline)", check=_model)
    width: float = option(1.0, "width multiplier for hidden layers / channels", lo=0, hi=64, lo_open=True)
    hidden: tuple = option((256, 128), "hidden widths of the `mlp` model, comma separated",
                           item_type=int, lo=1, hi=1_000_000, check=_hidden)
    init: str = option("kaiming_normal", "weight initialisation of Linear/Conv layers",
                       choices=["kaiming_normal", "kaiming_uniform", "xavier_normal", "signed_constant",
                                "torch_default"])
    # the Bayesian variant (engine.bayes): mean-field Gaussian weights trained on the ELBO
    bayesian: bool = option(False, "mean-field Gaussian (Bayes by Backprop) Linear/Conv2d layers trained on the "
                            "ELBO, evaluated by the Monte-Carlo predictive (engine.bayes)")
    prior_sigma: float = option(1.0, "bayesian: std of the N(0, s^2) prior on every weight", lo=0, hi=100,
                                lo_open=True)
    sigma_init: float = option(1e-3, "bayesian: initial posterior std of every weight", lo=0, hi=100, lo_open=True)
    rho_lr: float = option(1e-2, "bayesian: learning rate of rho (sigma = softplus(rho)); the means use --lr",
                           lo=0, hi=10, lo_open=True)
    kl_warmup: int = option(0, "bayesian: iterations over which the KL weight rises from 0 to 1 (0: off)", lo=0)
    mc_samples: int = option(16, "bayesian: Monte-Carlo samples of the predictive in every evaluation", lo=1,
                             hi=10_000)

    def __post_init__(self):
        validate(self, "model.")
        if not self.bayesian:  # a Bayesian setting on a deterministic net would change the run id, not the run
            for f in dataclasses.fields(self):
                if f.name in BAYES_FIELDS and getattr(self, f.name) != f.default:
                    raise ConfigError(f"model.{f.name}", getattr(self, f.name), "applies to Bayesian models "
                                      "only: add --bayesian")


BAYES_FIELDS = ("prior_sigma", "sigma_init", "rho_lr", "kl_warmup", "mc_samples")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = option("adam", "optimizer", choices=["adam", "sgd"])
    lr: float = option(1.2e-3, "learning rate", lo=0, hi=10, lo_open=True)
    momentum: float = option(0.9, "SGD momentum (sgd only)", lo=0, hi=1, hi_open=True)
    weight_decay: float = option(0.0, "L2 weight decay", lo=0, hi=1)
    batch_size: int = option(60, "training batch size", lo=1, hi=1_000_000)
    epochs: int = option(10, "training epochs per level", lo=1, hi=100_000)
    lr_schedule: str = option("constant", "learning-rate schedule over a level's training",
                              choices=["constant", "cosine", "step"])
    warmup: int = option(0, "linear learning-rate warm-up, in iterations", lo=0)
    eval_every: int = option(0, "evaluate every N iterations (0: once per epoch)", lo=0)
    # how, not what: batched members end where each would alone (to float rounding), so not in the run id
    batched: str = option("auto", "train a level's ticket and its controls (lottery compare: also a cell's seeds) "
                          "as one batched computation (engine.batched): auto where measured faster and supported, "
                          "off: one after another", choices=["auto", "off"], hashed=False)
    amp: str = option("off", "automatic mixed precision: bf16 runs each step's forward and loss under "
                      "torch.autocast in bfloat16 (meant for CUDA; works on CPU, rarely faster there); weights, "
                      "gradients, optimizer state and evaluation stay float32", choices=["off", "bf16"])

    def __post_init__(self):
        validate(self, "train.")


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
    """What every method shares; each method's own options (MethodSpec.options) are held in `options`,
    stored flat beside these fields and readable as attributes (`cfg.prune.synflow_rounds`)."""
    method: str = option("imp", "ticket-finding method", choices=METHODS.names)
    levels: int = option(14, "pruning levels (imp, bayes-imp, bert-imp)", lo=1, hi=100)
    prune_fraction: float = option(0.2, "fraction of the remaining weights pruned per level (bert-imp: of the original "
                                   "weights)", lo=0, hi=1,
                                   lo_open=True, hi_open=True)
    output_fraction: float = option(0.1, "fraction of the output layer's remaining weights pruned per "
                                    "level (0: never prune the output layer)", lo=0, hi=1, hi_open=True)
    scope: str = option("layerwise", "rank weights within each layer, across all layers, or with ERK layer "
                        "densities (erk: pruning at init, rigl/set, cs/cts, strong tickets)", choices=["layerwise", "global", "erk"])
    pattern: str = option("unstructured", "sparsity pattern of the hidden layers: single weights, whole output "
                          "channels/neurons (the model physically shrinks), or nm (exactly N kept in every M "
                          "consecutive weights along the input dimension); the output layer is always pruned "
                          "weight by weight (imp, oneshot, pruning at init)", choices=PATTERNS)
    nm: str = option("2:4", "N:M of --pattern nm (1 <= N <= M): the hidden layers' density is N/M, --density does "
                     "not apply; imp keeps one fewer per group each level, M-N levels at most",
                     check=lambda v, path: parse_nm(v, path))
    refill: str = option("none", "after each pruning step coarsen the unstructured mask (Chen et al. 2022): refill "
                         "keeps the nnz/fan-in best channels fully dense, regroup dense column blocks for groups of "
                         "rows with similar patterns (imp, oneshot)", choices=REFILLS)
    channel_score: str = option("l1", "rank channels (--pattern channel, --refill refill) by the l1 norm of their "
                                "row of scores, or by |gamma| of the BatchNorm after the layer (bn: trained nets; "
                                "layers without one use l1)", choices=CHANNEL_SCORES)
    rewind: str = option("init", f"rewind point: {Rewind.SYNTAX}", check=lambda v, path: Rewind.parse(v, path))
    density: float = option(0.1, "target density: of the hidden layers (oneshot, earlybird), of the adapter "
                            "entries (partial-lora, --lora-budget), else of all prunable weights", lo=0, hi=1,
                            lo_open=True)
    controls: tuple = option(("reinit", "random"), "controls trained beside every ticket, comma "
                             "separated (none: no controls)", choices=CONTROLS.names, item_type=str, unique=True)
    # every registered method's own options, flat {name: value}; filled with defaults on construction
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self, "prune.")
        spec = METHODS.get(self.method, "prune.method")
        object.__setattr__(self, "options", _method_option_values(self.options))
        if self.scope not in spec.scopes:
            raise ConfigError("prune.scope", self.scope, f"method {self.method} allows: {', '.join(spec.scopes)}")
        if self.pattern not in spec.patterns:
            raise ConfigError("prune.pattern", self.pattern,
                              f"method {self.method} allows: {', '.join(spec.patterns)}")
        if self.pattern != "unstructured" and self.scope == "global":
            raise ConfigError("prune.scope", self.scope, f"--pattern {self.pattern} selects within each layer: use "
                              "layerwise (or erk for pruning at init)")
        if self.refill != "none" and not spec.refills:
            raise ConfigError("prune.refill", self.refill, f"method {self.method} allows: none (refill and regroup "
                              "follow imp and oneshot pruning steps)")
        if self.channel_score == "bn" and spec.starts_from_init:
            raise ConfigError("prune.channel_score", self.channel_score, f"{self.method} prunes at initialisation, "
                              "where every BatchNorm gamma is 1: use l1")
        if self.refill != "none" and self.pattern != "unstructured":
            raise ConfigError("prune.refill", self.refill, "coarsens unstructured masks: use --pattern unstructured")

    def __getattr__(self, name: str):  # only called for names that are not fields: a method option
        if name.startswith("__") or name == "options":
            raise AttributeError(name)
        try:
            return self.options[name]
        except KeyError:
            raise AttributeError(f"PruneConfig has no field or method option {name!r}") from None

    def method_options(self):
        """The options dataclass instance of this config's method (None if it has none)."""
        return options_instance(METHODS.get(self.method, "prune.method").options, self.options)

    @property
    def rewind_point(self) -> Rewind:
        return Rewind.parse(self.rewind)


def method_option_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """{option name: (options class, field)} over every registered method, in registration order."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    core = {f.name for f in dataclasses.fields(PruneConfig)}
    for name, spec in METHODS.items():
        for f in dataclasses.fields(spec.options) if spec.options is not None else ():
            owner = out.get(f.name, (spec.options,))[0]
            if f.name in core or owner is not spec.options:
                raise TypeError(f"option {f.name!r} of method {name} is already a field of PruneConfig or of "
                                f"{owner.__name__}: give it its own name")
            out[f.name] = (spec.options, f)
    return out


def options_instance(cls, values: dict):
    """`cls` (an options dataclass, or None) built from the flat values that name its fields."""
    if cls is None:
        return None
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def _method_option_values(given: dict) -> dict:
    """Every method option's value: `given` where it names one, else its default; validated by building each
    options class (errors name prune.FIELD)."""
    known = method_option_fields()
    if not isinstance(given, dict):
        raise ConfigError("prune.options", given, "must be a mapping of method options")
    for name, value in given.items():
        if name not in known:
            raise ConfigError(f"prune.{name}", value, "unknown field; known: "
                              f"{', '.join([f.name for f in dataclasses.fields(PruneConfig)][:-1] + list(known))}")
    values = {name: given.get(name, f.default) for name, (_, f) in known.items()}
    for cls in dict.fromkeys(cls for name, (cls, _) in known.items() if name in given):  # defaults are valid
        options_instance(cls, values)
    return values


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    seed: int = option(0, "random seed (initialisation, data order, controls)", lo=0, hi=2**31 - 1)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:N or mps", hashed=False,
                         check=lambda v, path: _device(v, path))

    def __post_init__(self):
        for name, cls in GROUPS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, getattr(self, name), f"must be a {cls.__name__}")
        validate(self)
        from .text import check_pairing  # text datasets go with transformer models, tokenised for them
        check_pairing(self.data.dataset, self.model.model, self.data.tokenizer)

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON-ready data (tuples become lists, method options flat in "prune"); `from_dict` reads it."""
        d = dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})
        d["prune"].update(d["prune"].pop("options"))
        return d

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
        """The hashed fields that differ from their defaults, as {group: {field: value}} (method options
        flat in "prune")."""
        out: dict[str, Any] = {}
        default = _default_config(tuple(METHODS.names()))
        for name in GROUPS:
            diff = _diff(getattr(self, name), getattr(default, name))
            if diff:
                out[name] = diff
        top = _diff(self, default, skip=set(GROUPS))
        out.update(top)
        return out

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.non_default(), sort_keys=True, default=list).encode()
        digest = hashlib.sha256(blob).hexdigest()[:10]
        dataset = re.sub(r"[^a-z0-9]+", "", self.data.dataset.split(":")[0].lower())
        model = re.sub(r"[^a-z0-9-]+", "", self.model.model.split(":")[0].lower())  # hf:PATH -> hf
        return f"{self.prune.method}-{model}-{dataset}-{digest}"


@functools.lru_cache(maxsize=4)
def _default_config(methods: tuple[str, ...]) -> RunConfig:
    """The default config, once per set of registered methods (their options are part of it)."""
    return RunConfig()


def _device(value: str, path: str) -> None:
    if not re.fullmatch(DEVICE_SYNTAX, value):
        raise ConfigError(path, value, "allowed: auto, cpu, cuda, cuda:N, mps")


GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                           "prune": PruneConfig}


def _diff(obj, default, skip=frozenset()) -> dict:
    out = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
           if f.name not in skip and f.name != "options" and f.metadata.get("hashed", True)
           and getattr(obj, f.name) != getattr(default, f.name)}
    if isinstance(obj, PruneConfig):
        fields = method_option_fields()
        out.update({k: _plain(v) for k, v in obj.options.items()
                    if fields[k][1].metadata.get("hashed", True) and v != default.options[k]})
    return out


def _plain(value):
    """Tuples as lists, so a config reads the same from memory and from JSON."""
    return list(value) if isinstance(value, tuple) else value


def _build(cls, values: dict, prefix: str, extra: dict | None = None):
    names = {f.name: f for f in dataclasses.fields(cls) if f.name != "options"}
    kwargs = dict(extra or {})
    options = {}
    for key, value in values.items():
        if cls is PruneConfig and key not in names:
            options[key] = list_to_tuple(value)  # a method option (validated by PruneConfig)
            continue
        if key not in names:
            raise ConfigError(prefix + key, value, f"unknown field; known: {', '.join(names)}")
        kwargs[key] = list_to_tuple(value) if isinstance(names[key].default, tuple) else value
    if cls is PruneConfig:
        kwargs["options"] = options
    return cls(**kwargs)


def list_to_tuple(value):
    return tuple(value) if isinstance(value, list) else value  # JSON has no tuples
