"""Settings: what a command line and a form are generated from.

Any options dataclass whose fields are made with `engine.config.option` (a run's config groups, a
method's options, a command's options such as `compare.CompareOptions`) becomes a list of `Setting`s;
the CLI turns each into a flag (`add_flags`, `values_from_args`), the explorer into a widget, and both
parse what a person typed with `Setting.parse`. Defaults, help and choices are read from the dataclass
only, so a new field appears everywhere at once.

    settings = settings_of(ZooOptions)                 # one Setting per field
    add_flags(parser, settings)                        # --flag per field, default None = "not given"
    opts = build(ZooOptions, values_from_args(args, settings))   # validated by the dataclass
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import GROUPS, PruneConfig, RunConfig, choices_of, field_types, method_option_fields
from .errors import ConfigError
from .registry import METHODS


@dataclass(frozen=True)
class Setting:
    """One field as a UI sees it: the CLI makes a flag of it, the explorer a widget."""
    path: str          # "prune.levels" (or "seed", or a command option's name)
    name: str          # "levels"
    type: type         # int, float, str, bool or tuple
    default: Any
    help: str
    choices: list[str] | None
    item_type: type | None  # for tuples
    nullable: bool = False  # None allowed (typed `int | None`): "not set", e.g. "the last level"

    def parse(self, text):
        """A value from text (a flag, a text box), or ConfigError naming the field."""
        if not isinstance(text, str) or self.type is str:
            return text
        if self.nullable and text.strip().lower() in ("", "none"):
            return None
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
                return tuple((self.item_type or str)(part.strip()) for part in text.split(","))
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(
                self.type, f"comma-separated {getattr(self.item_type, '__name__', 'value')}s")
            raise ConfigError(self.path, text, f"must be {kind}") from None
        return text

    def format(self, value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)

    @property
    def flag(self) -> str:
        return flag_of(self.path)


def setting(cls, f: dataclasses.Field, prefix: str = "") -> Setting:
    kind, nullable = field_types(cls)[f.name]
    return Setting(prefix + f.name, f.name, kind, f.default, f.metadata.get("help", ""), choices_of(f),
                   f.metadata.get("item_type"), nullable)


def settings_of(cls, prefix: str = "", skip=()) -> list[Setting]:
    """One Setting per field of the options dataclass `cls`, in declaration order."""
    return [setting(cls, f, prefix) for f in dataclasses.fields(cls)
            if "help" in f.metadata and f.name not in skip]


def run_settings() -> list[Setting]:
    """Every setting of a run: the config groups' fields in declaration order, every registered method's
    options after the "prune" group's own fields, then the top-level fields (seed, device)."""
    out = []
    for group, cls in GROUPS.items():
        out += settings_of(cls, group + ".")
        if group == "prune":
            out += [setting(owner, f, "prune.") for owner, f in method_option_fields().values()]
    return out + settings_of(RunConfig, skip=set(GROUPS))


def read_by(path: str, method: str, given: dict | None = None) -> bool:
    """Whether runs of `method` read the run setting `path` (`unread_because` says why not). A setting a run
    does not read would still enter its config and change its run id: `lottery run` refuses such a flag; the
    app's forms and the notebook launcher show and send a setting only while the chosen method reads it."""
    return unread_because(path, method, given) is None


# Settings a run reads only under some values of others (engine.structured): {setting: {other: values}}.
READ_UNDER = {"prune.nm": {"prune.pattern": ("nm",)},
              "prune.channel_score": {"prune.pattern": ("channel",), "prune.refill": ("refill",)}}


def __getattr__(name: str):
    """READ_UNDER_VALUES: the settings whose values decide whether others are read (READ_UNDER, every method's
    MethodSpec.read_under and unread_under, the model and data set of READ_BY_MODEL), which the forms watch;
    derived from those declarations when asked for (the methods register on first lookup), so a method's new
    declaration is watched with no second list."""
    if name == "READ_UNDER_VALUES":
        unders = [*READ_UNDER.values()] + [u for _, spec in METHODS.items() for u in
                                           [*spec.read_under.values(), *(u for u, _ in spec.unread_under.values())]]
        owners = (o for o, _, _ in READ_BY_MODEL.values())
        return tuple(dict.fromkeys([*(p for under in unders for p in under), *owners]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _transformer(model: str) -> bool:
    from .text import is_transformer  # (late: importing engine.text registers its data sets)
    return is_transformer(model)


def _text(dataset: str) -> bool:
    from .text import is_text_dataset
    return is_text_dataset(dataset)


# Settings read by some models or data sets only (engine.models, engine.transformer, engine.text):
# {setting: (the setting naming the model or data set, whether its value reads it, why not)}
READ_BY_MODEL = {
    "model.hidden": ("model.model", lambda m: m == "mlp", "has its own layer sizes (--hidden sets the mlp's)"),
    "model.width": ("model.model", lambda m: not _transformer(m), "is a transformer: its encoder's sizes are its own"),
    "model.init": ("model.model", lambda m: not _transformer(m),
                   "is a transformer: its weights are drawn (or pre-trained) as BERT's"),
    "data.max_length": ("data.dataset", _text, "holds no text to tokenise"),
    "data.tokenizer": ("data.dataset", _text, "holds no text to tokenise"),
}


def model_unread_because(path: str, given: dict | None) -> str | None:
    """Why the model or data set in `given` ({setting path: value}; those missing at their defaults) never reads
    the run setting `path` (--width on a transformer, --hidden on lenet300, --max-length on digits), or None.
    Without `given` every such setting counts as read."""
    if given is None or path not in READ_BY_MODEL:
        return None
    owner, reads, why = READ_BY_MODEL[path]
    value = given.get(owner, _default(owner))
    kind = owner.partition(".")[2]
    return None if reads(value) else f"{kind} {value} {why}, so it never reads {flag_of(path)}"


def refuse_unread_by_model(typed: dict, given: dict) -> None:
    """A one-line ConfigError for the first of the flags `typed` ({setting path: value}) that the model or data set
    in `given` never reads (`model_unread_because`): it would still enter the config and change the id."""
    for path, value in typed.items():
        why = model_unread_because(path, given)
        if why is not None:
            raise ConfigError(flag_of(path), value, f"{why}: leave it out")


def _default(path: str):
    group, _, name = path.rpartition(".")
    return (GROUPS[group] if group else RunConfig).__dataclass_fields__[name].default


def unread_because(path: str, method: str, given: dict | None = None) -> str | None:
    """Why runs of `method` ignore the run setting `path`, or None when they read it. Another method's own option
    (`prune.synflow_rounds` for imp); a shared setting the method's MethodSpec says it never reads: declared in
    its `unread` ({"prune.density": why} for ks-lottery), or implied by its other fields (`_implied_unread`).
    `given` ({setting path: value}: the run's other settings as typed or on a form; those missing at their
    defaults) decides the settings read only under others' values (READ_UNDER: --nm under --pattern nm; a method's
    MethodSpec.read_under: oneshot's --levels under --pattern nm; MethodSpec.unread_under: oneshot's --density
    not under --pattern nm); without it such a setting counts as read.
    Stored configs keep every field as it was, so the ids of runs stored before this rule do not change. A setting
    only some models or data sets read: `model_unread_because`, whatever the method."""
    spec = METHODS.get(method, "prune.method")
    if path in READ_BY_MODEL:
        return model_unread_because(path, given)
    owner = method_option_fields().get(path.removeprefix("prune.")) if path.startswith("prune.") else None
    if owner is not None:
        return None if owner[0] is spec.options else f"its method is {method}"
    flag = flag_of(path)
    why = spec.unread.get(path) or _implied_unread(path, spec)
    if why is not None and path in spec.read_under:  # (oneshot's --levels under --pattern nm)
        why = None if given is None or _under(spec.read_under[path], given) else why
    if why is None and given is not None and path in spec.unread_under:  # (oneshot's --density under --pattern nm)
        under, because = spec.unread_under[path]
        why = because if _under(under, given) else None
    if why is not None:
        return f"{method} {why}, so it never reads {flag}"
    if given is not None and path in READ_UNDER and not _under(READ_UNDER[path], given):
        under = READ_UNDER[path]
        wanted = " or ".join(f"{flag_of(p)} {v}" for p, values in under.items() for v in values)
        has = " and ".join(f"{flag_of(p)} {_given(p, given)}" for p in under)
        return f"this {method} run has {has}, and {flag} applies under {wanted} only, so it never reads {flag}"
    return None


def _given(path: str, given: dict):
    """A prune setting's value in `given`, else its default."""
    return given.get(path, PruneConfig.__dataclass_fields__[path.removeprefix("prune.")].default)


def _under(under: dict[str, tuple], given: dict) -> bool:
    """Whether `given` holds one of the values `under` names ({setting: values})."""
    return any(_given(p, given) in values for p, values in under.items())


def flag_of(path: str) -> str:
    """The command-line flag of the setting `path` (or of a command option's field): "prune.prune_fraction" ->
    "--prune-fraction", "rewind_points" -> "--rewind-points"."""
    return "--" + path.rpartition(".")[2].replace("_", "-")


def _implied_unread(path: str, spec) -> str | None:
    """Why a method's MethodSpec fields say its runs never read the shared setting `path` (None: they may)."""
    steps = spec.levels_to_reach is not None  # levels go down in density, --levels of them (compare's rule too)
    if path == "prune.levels" and not steps:
        return "does not prune level by level"
    if path == "prune.density" and steps:
        return "prunes level by level, --levels and --prune-fraction setting its densities"
    if path == "prune.controls" and not spec.trains_controls:
        return "trains no controls beside its tickets"
    if path == "prune.refill" and not spec.refills:
        return "takes no magnitude pruning step for a refill to coarsen"
    if path == "prune.nm" and "nm" not in spec.patterns:
        return "makes no N:M masks (--pattern nm)"
    if path == "prune.channel_score" and "channel" not in spec.patterns and not spec.refills:
        return "ranks no channels (--pattern channel, --refill refill)"
    if spec.starts_from_init:  # pruning at initialisation, dynamic sparse training
        if path == "prune.rewind":
            return "starts its tickets from theta_0 at step 0"
        if path in ("prune.prune_fraction", "prune.output_fraction"):
            return "selects its mask at initialisation at --density, with no magnitude pruning steps"
    return None


def setting_values(d: dict) -> dict:
    """{setting path: value} of a config as plain data (RunConfig.to_dict(), a config.json, `non_default()`): a
    group's fields as "group.field" (method options as "prune.option"), top-level fields as they are; a group
    that is not a mapping is left out (the config refuses it)."""
    out = {}
    for key, value in d.items():
        if key not in GROUPS:
            out[key] = value
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
    return out


def config_from_settings(values: dict[str, Any], base: dict | None = None) -> RunConfig:
    """A validated RunConfig from {setting path: value or text}; unspecified settings keep `base`/defaults."""
    d = copy.deepcopy(base) if base else {}
    by_path = {s.path: s for s in run_settings()}
    for path, value in values.items():
        if path not in by_path:
            raise ConfigError(path, value, "is not a config field")
        group, _, name = path.rpartition(".")
        if not isinstance(d.setdefault(group, {}) if group else d, dict):  # (a config file's "prune": 3)
            raise ConfigError(group, d[group], "must be a mapping")
        (d[group] if group else d)[name] = by_path[path].parse(value)
    return RunConfig.from_dict(d)


def build(cls, values: dict[str, Any], prefix: str = ""):
    """An instance of the options dataclass `cls` from {field name: value or text} (missing: defaults);
    the dataclass validates it. `prefix` names the fields in errors (e.g. "--" for flags)."""
    by_name = {s.name: s for s in settings_of(cls)}
    unknown = [k for k in values if k not in by_name]
    if unknown:
        raise ConfigError(prefix + unknown[0], values[unknown[0]], f"unknown option; known: {', '.join(by_name)}")
    return cls(**{k: by_name[k].parse(v) for k, v in values.items()})


# ---------------------------------------------------------------- command-line flags
def add_flags(parser: argparse.ArgumentParser, settings: list[Setting]) -> None:
    """One flag per setting; its default is None ("not given"), so `values_from_args` returns only what was
    typed and the dataclass's own default applies otherwise."""
    for s in settings:
        help_text = s.help + (f" {{{', '.join(s.choices)}}}" if s.choices else "")
        if s.default is not None and s.format(s.default) != "":  # None or "": "not set", its help says what then
            help_text += f" (default: {s.format(s.default)})"
        help_text = help_text.replace("%", "%%")
        if s.type is bool:
            parser.add_argument(s.flag, dest=s.path, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.path, default=None, metavar=s.name.upper(), help=help_text)


def values_from_args(args: argparse.Namespace, settings: list[Setting]) -> dict[str, Any]:
    """{setting path: text} of the flags given on the command line."""
    return {s.path: getattr(args, s.path) for s in settings if getattr(args, s.path, None) is not None}
