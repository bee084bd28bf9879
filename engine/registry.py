"""One registry type for models, datasets, methods, controls and analyses, and the specs of methods and
analyses.

Each registry maps a name to an object plus a one-line description, so the CLI's `--help`, the
explorer's dropdowns and the error messages all list the same choices. A registry imports the module that
fills it on first lookup, so this module imports nothing of the engine but its errors: every other module
(the config's choice lists included) can read the registries without an import cycle.

A method is one module: it registers one `MethodSpec` saying what it can do, what its own options are and
how its cost is counted; nothing outside that module looks at its name.

    @dataclass(frozen=True)
    class MyOptions:
        rounds: int = option(10, "mine: scoring rounds", lo=1)

    def run(ctx): ...              # ctx.options is a MyOptions
    METHODS.register("mine", "one line of help")(MethodSpec(run, options=MyOptions, scopes=PAI_SCOPES))
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    def __init__(self, kind: str, *modules: str):
        self.kind = kind
        self.modules = modules  # importing them registers the entries: every lookup imports them first
        self._entries: dict[str, Entry[T]] = {}

    def _filled(self) -> dict[str, Entry[T]]:
        for module in self.modules:
            importlib.import_module(module)
        return self._entries

    def register(self, name: str, help: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, obj, help)
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's toy method, registered for the length of the test)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._filled())

    def items(self) -> list[tuple[str, T]]:
        return [(e.name, e.obj) for e in self._filled().values()]

    def describe(self) -> dict[str, str]:
        """{name: one-line help}, for `lottery run --help`."""
        return {e.name: e.help for e in self._filled().values()}

    def get(self, name: str, field: str) -> T:
        """Look a name up; `field` is the config field that holds it, for the error message."""
        entries = self._filled()
        if name not in entries:
            raise ConfigError(field, name, f"known {self.kind}s: {', '.join(entries)}")
        return entries[name].obj


def _one_level(config) -> int:
    return 1


def _no_search(config) -> int:
    return 0


def _free(summary: dict, level: dict, store) -> tuple[int, float]:
    return 0, 0.0


@dataclass(frozen=True)
class MethodSpec:
    """What a ticket-finding method is, as everything outside its module sees it.

    run              run(ctx): produce the tickets with ctx.train_ticket (engine.runner.RunContext); the
                     runner has trained the dense net (ctx.dense) and gives the method's options as
                     ctx.options
    options          a frozen dataclass of the method's own settings (fields made with engine.config.option),
                     or None. They become `lottery run` flags and app widgets, and are stored flat in the
                     "prune" group of config.json. Two methods may share one options class; a field name
                     belongs to one class only.
    scopes           the --scope values it accepts (the first is taken where the default or `compare`'s
                     does not apply: `scope_for`)
    patterns         the --pattern values it accepts
    refills          whether --refill applies (it coarsens the mask after a magnitude pruning step)
    trains_controls  whether controls are trained beside its tickets (a strong ticket is never trained,
                     so trained controls do not compare with it)
    starts_from_init whether its tickets start at theta_0, step 0, whatever --rewind says (pruning at
                     initialisation, dynamic sparse training): sanity controls start there too
    levels           levels(config) -> how many ticket levels a run makes (progress totals, the app)
    search_epochs    search_epochs(config) -> training epochs a mask search costs before the ticket's own
                     training, where a run announces it (progress totals)
    own_trainings    own_trainings(config) -> full trainings of variants the method adds beside the dense
                     net, the tickets and the controls (ks-lottery's embedding fine-tune, head alone and
                     baselines), for progress totals; default 0
    search_cost      search_cost(summary, level_record, store) -> (training steps, seconds) spent finding
                     that level's mask before its own training (the leaderboard); default: nothing
                     (scoring a batch at initialisation is not training)
    levels_to_reach  levels_to_reach(prune_config, density) -> levels needed to reach `density`, for a
                     method whose levels go down in density (the leaderboard runs it once, to the lowest
                     target, and reads each target off its nearest level); None: one run per density
    check            check(config, model): the method's own requirements, raising ConfigError before
                     anything is written; or None
    unread           {shared run setting: why} for the settings (PruneConfig's fields: "prune.density"...) its
                     runs never read beyond those the fields above imply (engine.settings.unread_because derives
                     --levels and --density from levels_to_reach, --controls from trains_controls, --refill from
                     refills, --nm and --channel-score from patterns and refills, --rewind, --prune-fraction and
                     --output-fraction from starts_from_init). `why` completes "METHOD WHY, so it never reads
                     --FLAG"; `lottery run` refuses such a flag typed, the app's forms hide it
    read_under       {setting: {other setting: values}}: settings those rules say it never reads that it does
                     read under these values of others (oneshot's --levels under --pattern nm)
    unread_under     {setting: ({other setting: values}, why)}: settings it reads except under these values
                     of others (oneshot's --density under --pattern nm, where --nm sets its densities); `why`
                     completes "METHOD WHY, so it never reads --FLAG", as in `unread`
    companion        companion(store) -> (run id, what it is) of a run this run trained (or reused) to compare
                     against, or None (bayes-imp: its deterministic IMP run, "deterministic comparison"): the
                     run browser says what that run is for
    """
    run: Callable[[Any], None]
    options: type | None = None
    scopes: tuple[str, ...] = ("layerwise", "global")
    patterns: tuple[str, ...] = ("unstructured",)
    refills: bool = False
    trains_controls: bool = True
    starts_from_init: bool = False
    levels: Callable[[Any], int] = _one_level
    search_epochs: Callable[[Any], int] = _no_search
    own_trainings: Callable[[Any], int] = _no_search
    search_cost: Callable[[dict, dict, Any], tuple[int, float]] = _free
    levels_to_reach: Callable[[Any, float], int] | None = None
    check: Callable[[Any, Any], None] | None = None
    unread: dict[str, str] = field(default_factory=dict, hash=False)
    read_under: dict[str, dict[str, tuple]] = field(default_factory=dict, hash=False)
    unread_under: dict[str, tuple[dict[str, tuple], str]] = field(default_factory=dict, hash=False)
    companion: Callable[[Any], tuple[str, str] | None] | None = None

    def scope_for(self, scope: str) -> str:
        """The scope its run takes when `scope` is wanted but not insisted on (the default, when no scope was
        given; the one scope `compare` has for all its methods): `scope` where it applies, else the first."""
        return scope if scope in self.scopes else self.scopes[0]


@dataclass(frozen=True)
class AnalysisSpec:
    """Something stored with a run under RUN_DIR/analyses/, registered under the "analysis" value its results
    carry.

    format    format(name, result) -> the lines a person reads (`lottery show`, `lottery analyze`, the app)
    compute   compute(runs_dir, run_id, options, on_event=None, cancel=None) -> result dict, stored with
              `RunStore.save_analysis`; None for a record only a method writes (a mask search's), which
              `lottery analyze` does not offer
    options   a frozen dataclass of its settings (engine.config.option fields), or None; the flags of
              `lottery analyze RUN_ID NAME` and the app's widgets are generated from it
    """
    format: Callable[[str, dict], str]
    compute: Callable[..., dict] | None = None
    options: type | None = None


MODELS: Registry = Registry("model", "engine.models")
DATASETS: Registry = Registry("dataset", "engine.data")
METHODS: Registry[MethodSpec] = Registry("method", "engine.methods")
CONTROLS: Registry = Registry("control", "engine.methods")
PRESETS: Registry = Registry("preset", "engine.presets")  # named run settings (`lottery run --preset`)
# analyses, and the records methods store beside them (a mask search's): both are read back as analyses
ANALYSES: Registry[AnalysisSpec] = Registry("analysis", "engine.analysis", "engine.methods", "engine.zoo")
