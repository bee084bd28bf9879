"""The leaderboard: every method on the same model, data and training budget, at the same densities.

`compare(base, methods, densities, seeds)` runs (or reuses, via the run store) one run per method and
seed — IMP once to the lowest density, reading the level nearest each target; the other methods once
per density — and tabulates test accuracy (mean, std over seeds), the search cost before the ticket's
own training (training steps and seconds), and the deltas of the controls trained beside each ticket.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from .config import PruneConfig, RunConfig, choices_of, option, validate
from .errors import ConfigError
from .executors import EXECUTORS
from .registry import METHODS
from .settings import config_from_settings, read_by, setting_values
from .store import RunStore


@dataclass(frozen=True)
class CompareOptions:
    """What `lottery compare` and the app's Leaderboard tab ask for (one set of defaults)."""
    methods: tuple = option(("imp", "oneshot", "snip", "grasp", "synflow", "rigl", "set", "cs", "cts", "edgepopup"),
                            "methods compared, comma separated (one of each family by default)",
                            choices=METHODS.names, item_type=str, unique=True, check=lambda v, path: _some(v, path))
    densities: tuple = option((0.2, 0.05, 0.01), "target densities, comma separated", item_type=float, lo=0, hi=1,
                              lo_open=True, hi_open=True, unique=True, check=lambda v, path: _some(v, path))
    seeds: int = option(3, "seeds 0..N-1 per method and density", lo=1, hi=1000)
    executor: str = option("local", "where the runs train: local (this process, one after another), processes "
                           "(--workers local processes) or dask (a cluster at --scheduler, else a LocalCluster of "
                           "--workers processes); results land in the one --runs-dir", choices=list(EXECUTORS))
    workers: int = option(2, "worker processes for --executor processes, or dask without --scheduler", lo=1, hi=256)
    scheduler: str = option("", "a Dask scheduler's address (tcp://HOST:8786) for --executor dask; its workers "
                            "must see the same --runs-dir", check=lambda v, path: _check_scheduler(v, path))

    def __post_init__(self):
        validate(self)
        # an executor setting the chosen executor never reads is refused, as a run's unread settings are: ignored,
        # a sweep meant for a cluster (or for a pool of workers) trained here, one run after another
        if self.scheduler and self.executor != "dask":
            raise ConfigError("scheduler", self.scheduler, f"only --executor dask reads it (--executor "
                              f"{self.executor} trains on this machine): add --executor dask, or leave it out")
        default_workers = type(self).__dataclass_fields__["workers"].default
        if self.workers != default_workers and (self.executor == "local" or self.scheduler):
            reason = ("--executor local trains in this process, one run after another" if self.executor == "local"
                      else "the cluster at --scheduler has its own workers")
            raise ConfigError("workers", self.workers, f"{reason}: --workers is read by --executor processes, and "
                              "by --executor dask without --scheduler (a LocalCluster)")


# the address schemes distributed.comm knows that reach a scheduler on another process or machine
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def _check_scheduler(value: str, path: str) -> None:
    """A Dask scheduler's address, [SCHEME://]HOST:PORT, checked here so a typo is a one-line error before any
    work (distributed raised a bare ValueError on 'HOST' or 'http://...', only when the sweep connected)."""
    if not value:
        return
    scheme, _, location = value.rpartition("://")
    host, _, port = location.rpartition(":")
    if (scheme or "tcp") not in DASK_SCHEMES or not host.strip("[]") or not port.isdigit() \
            or not 1 <= int(port) <= 65535:
        raise ConfigError(path, value, f"must be a Dask scheduler's address [SCHEME://]HOST:PORT (SCHEME one of "
                          f"{', '.join(DASK_SCHEMES)}; PORT 1-65535), as `dask scheduler` prints it: tcp://HEAD:8786")


def _some(value: tuple, path: str) -> None:
    if not value:
        raise ConfigError(path, value, "must name at least one")


def _config(base: RunConfig | dict, method: str, seed: int, density: float | None, levels: int | None) -> RunConfig:
    """`base` is a RunConfig or {setting path: value} (the CLI's flags, validated per method here, so a
    scope only some methods allow, such as erk, applies to those and the others keep their default)."""
    changes = {"prune.method": method, "seed": seed}
    given = _given(base)
    if density is not None and read_by("prune.density", method, given):
        changes["prune.density"] = density
    if levels is not None:
        changes["prune.levels"] = levels
    scope = base.prune.scope if isinstance(base, RunConfig) else dict(base).get("prune.scope", PruneConfig.scope)
    if scope in choices_of(PruneConfig.__dataclass_fields__["scope"]) and read_by("prune.scope", method):
        changes["prune.scope"] = METHODS.get(method, "methods").scope_for(scope)  # (an invalid one: the config says)
    # a setting this method never reads (--rewind for snip, another method's option) keeps its default, as in the
    # method's own run: else it would give the same computation a second run id (engine.settings.read_by)
    if isinstance(base, RunConfig):
        default = setting_values(RunConfig().to_dict())
        unread = {p: default[p] for p, v in given.items() if v != default[p] and not read_by(p, method, given)}
        return base.replace(**{**unread, **changes})
    return config_from_settings({**{p: v for p, v in base.items() if read_by(p, method, given)}, **changes})


def _given(base: RunConfig | dict) -> dict:
    """{setting path: value} of `base` (every setting of a RunConfig; a dict's as typed), for the settings read
    only under others' values (engine.settings.unread_because: --nm under --pattern nm, --hidden by the mlp)."""
    return setting_values(base.to_dict()) if isinstance(base, RunConfig) else dict(base)


def _plan(base: RunConfig | dict, methods: list[str], densities: list[float], seeds: int) -> list[tuple]:
    """(method, the targets a run serves, its config) for every run of the sweep, known before any trains."""
    plan = []
    for method in methods:
        spec = METHODS.get(method, "methods")
        for seed in range(seeds):
            if spec.levels_to_reach is not None:  # one run down to the lowest density; targets read its levels
                levels = spec.levels_to_reach(_config(base, method, seed, None, None).prune, min(densities))
                plan.append((method, densities, _config(base, method, seed, None, levels)))
            elif not read_by("prune.density", method, _given(base)):  # one run serves every target (ks-lottery,
                # transfer, oneshot under --pattern nm)
                plan.append((method, densities, _config(base, method, seed, None, None)))
            else:
                plan += [(method, [d], _config(base, method, seed, d, None)) for d in densities]
    return plan


def _resuming(plan: list[tuple], base: RunConfig | dict, runs_dir) -> list[tuple]:
    """`plan` with each entry whose run is not stored but was by a `lottery compare` from before the unread rule
    given that run (`_stored_before`): the command that stored a sweep resumes it."""
    return [(method, targets, config if RunStore(runs_dir, config.run_id).exists()
             else _stored_before(base, method, config.seed, targets, runs_dir) or config)
            for method, targets, config in plan]


def _stored_before(base: RunConfig | dict, method: str, seed: int, targets: list[float], runs_dir) -> RunConfig | None:
    """The run of `method` and `seed` for `targets` that a `lottery compare` from before the unread rule stored, if
    one is: it gave every run each setting typed, whether its method reads it or not (--rewind iter:2 to snip), and
    a method that never reads the density a run per target (any of them serves). As `lottery run` resumes a run
    stored with a flag it now refuses; a run not stored gets only what it reads (`_config`)."""
    def older(density: float | None, levels: int | None) -> RunConfig:  # (the `_config` of those versions)
        changes = {"prune.method": method, "seed": seed}
        if density is not None:
            changes["prune.density"] = density
        if levels is not None:
            changes["prune.levels"] = levels
        scope = base.prune.scope if isinstance(base, RunConfig) else base.get("prune.scope", PruneConfig.scope)
        if scope in choices_of(PruneConfig.__dataclass_fields__["scope"]):
            changes["prune.scope"] = spec.scope_for(scope)
        return base.replace(**changes) if isinstance(base, RunConfig) else config_from_settings({**base, **changes})

    spec = METHODS.get(method, "methods")
    try:
        if spec.levels_to_reach is not None:
            candidates = [older(None, spec.levels_to_reach(older(None, None).prune, min(targets)))]
        else:
            candidates = [older(d, None) for d in targets]
    except ConfigError:  # (a value those versions took and this one refutes: no run was stored with it)
        return None
    return next((c for c in candidates if RunStore(runs_dir, c.run_id).exists()), None)


def resumes_stored_before(base: dict, methods: list[str], densities: list[float], seeds: int, runs_dir) -> bool:
    """Whether this sweep resumes a run stored before the unread rule (`_resuming`): `lottery compare` then takes the
    typed flags it refuses for a new sweep (a setting none of its methods, or its model, reads)."""
    plan = _plan(base, methods, densities, seeds)
    return [c.run_id for _, _, c in plan] != [c.run_id for _, _, c in _resuming(plan, base, runs_dir)]


def _row(summary: dict, level: dict, search_steps: int, search_seconds: float) -> dict:
    controls = {name: next((r for r in rows if r["level"] == level["level"]), None)
                for name, rows in summary["controls"].items()}
    return {"run_id": summary["run_id"], "density": level["density"], "test_accuracy": level["test_accuracy"],
            "search_steps": search_steps, "search_seconds": round(search_seconds, 3),
            "control_deltas": {n: r["test_accuracy"] - level["test_accuracy"] for n, r in controls.items() if r}}


def compare(base: RunConfig, methods: list[str], densities: list[float], seeds: int, *, runs_dir,
            on_event=None, cancel=None, executor: str = "local", workers: int = 2, scheduler: str = "",
            on_dashboard=None) -> dict:
    """`executor`, `workers`, `scheduler`: where the runs train (engine.executors); `on_dashboard` receives
    the Dask dashboard's address when there is one."""
    from .executors import run_all  # late: the options above are read by the CLI and the app without torch

    CompareOptions(tuple(methods), tuple(densities), seeds, executor, workers, scheduler)  # errors name the flag
    plan = _resuming(_plan(base, methods, densities, seeds), base, runs_dir)
    if not scheduler:  # (a real cluster's client may not hold the data its workers read)
        _check_before_training([c for _, _, c in plan], runs_dir)
    if executor == "local" and seeds > 1 and plan[0][2].train.batched == "auto":
        summaries = _cells_side_by_side(plan, runs_dir, on_event, cancel)
    else:
        summaries = run_all([c for _, _, c in plan], runs_dir, executor=executor, workers=workers,
                            scheduler=scheduler, on_event=on_event, cancel=cancel, on_dashboard=on_dashboard)
    if len(summaries) < len(plan) or any(s["status"] != "completed" for s in summaries):
        return {"status": "cancelled", "rows": []}
    raw: dict[tuple[str, float], list[dict]] = {}
    for (method, targets, _), s in zip(plan, summaries):
        for d in targets:
            level = min(s["levels"], key=lambda lv: abs(lv["density"] - d))
            raw.setdefault((method, d), []).append(_row(s, level, *search_cost(s, level, runs_dir)))
    rows = []
    for (method, d), entries in raw.items():
        accs = [e["test_accuracy"] for e in entries]
        names = sorted({n for e in entries for n in e["control_deltas"]})
        rows.append({
            "method": method, "target_density": d,
            "density": statistics.fmean(e["density"] for e in entries),
            "test_accuracy_mean": statistics.fmean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seeds": len(accs),
            "search_steps": statistics.fmean(e["search_steps"] for e in entries),
            "search_seconds": statistics.fmean(e["search_seconds"] for e in entries),
            "control_deltas": {n: statistics.fmean(e["control_deltas"][n] for e in entries if n in e["control_deltas"])
                               for n in names},
            "runs": sorted({e["run_id"] for e in entries}),
        })
    first = _config(base, methods[0], 0, None, None)
    return {"status": "completed", "model": first.model.model, "dataset": first.data.dataset, "seeds": seeds,
            "densities": densities, "methods": methods, "rows": rows}


def _check_before_training(configs: list[RunConfig], runs_dir) -> None:
    """What each run would check only once its turn came (the method's own requirements, MethodSpec.check: cs
    needs 2 epochs, lota --weight-decay 0; the model's, structured.check_model), for every planned run before any
    trains: a sweep must not stop at its fifth method with four trained. The runs share their data and model
    settings, so one data set and one model serve every check. A run stored completed trains nothing: it is not
    checked (a leaderboard asked again, every run stored, loads no data set for the checks)."""
    from . import data as data_mod
    from . import models, structured

    configs = [c for c in configs if RunStore(runs_dir, c.run_id).status() != "completed"]
    if not configs:
        return
    first = configs[0]
    dataset = data_mod.load(first.data, "cpu")
    model = models.build(first.model, dataset.input_shape, dataset.num_classes, first.seed)
    for config in configs:
        structured.check_model(config.prune, model)
        check = METHODS.get(config.prune.method, "methods").check
        if check is not None:
            check(config, model)


def _cells_side_by_side(plan: list, runs_dir, on_event, cancel) -> list[dict]:
    """The seeds of each cell (a method at its targets) run side by side, their trainings batched
    (engine.side_by_side); cells one after another. Summaries in plan order, stopping at a cancelled cell."""
    from .side_by_side import run_together

    cells: dict[tuple, list[int]] = {}
    for i, (method, targets, _) in enumerate(plan):
        cells.setdefault((method, tuple(targets)), []).append(i)
    summaries: dict[int, dict] = {}
    for idx in cells.values():
        done = run_together([plan[i][2] for i in idx], runs_dir, on_event=on_event, cancel=cancel)
        summaries.update(zip(idx, done))
        if any(s is None or s["status"] != "completed" for s in done):
            break
    out = []
    for i in range(len(plan)):
        if summaries.get(i) is None:
            break
        out.append(summaries[i])
    return out


def search_cost(summary: dict, level: dict, runs_dir) -> tuple[int, float]:
    """(training steps, seconds) spent finding `level`'s mask, before the ticket's own training, as the
    method counts it (MethodSpec.search_cost)."""
    spec = METHODS.get(summary["method"], "method")
    return spec.search_cost(summary, level, RunStore(runs_dir, summary["run_id"]))


def format_table(result: dict) -> str:
    lines = [f"leaderboard: {result['model']} on {result['dataset']}, {result['seeds']} seed(s); test accuracy "
             "mean ± std, search cost before the ticket's own training, control − ticket deltas (points)"]
    width = max([10] + [len(r["method"]) for r in result["rows"]])  # partial-lora, bayes-imp, ... line up
    lines.append(f"{'method':<{width}} {'target':>7} {'density':>8} {'test acc':>15} {'search steps':>13} "
                 f"{'search s':>9}  controls")
    for r in sorted(result["rows"], key=lambda r: (-r["target_density"], -r["test_accuracy_mean"])):
        deltas = "  ".join(f"{n} {100 * v:+.2f}" for n, v in r["control_deltas"].items())
        lines.append(f"{r['method']:<{width}} {r['target_density']:>7.3f} {r['density']:>8.4f} "
                     f"{100 * r['test_accuracy_mean']:>7.2f} ± {100 * r['test_accuracy_std']:>5.2f} "
                     f"{r['search_steps']:>13.0f} {r['search_seconds']:>9.2f}  {deltas}")
    return "\n".join(lines)
