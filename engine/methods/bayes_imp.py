"""Bayesian IMP: iterative pruning of a mean-field Gaussian net (`--bayesian`, engine.bayes), with rewinding of
both mu and rho, by one of five criteria, and the uncertainty of every level measured.

A ticket's mask covers mu and rho together: a pruned weight has mu exactly 0 and no variance (engine.bayes),
and rewinding restores mu and rho of the survivors (both are in the stored start weights). Criteria, each
pruning the configured fraction of the remaining weights per level (layerwise or global pool; the output layer
at --output-fraction on its own), exactly the counts IMP prunes:

  mu             the smallest |mu| (Bayesian IMP by magnitude)
  sigma          the largest sigma (the most uncertain weights first)
  snr            the smallest signal-to-noise ratio |mu| / sigma
  mu-then-sigma  magnitude first, std second: of a pool that must lose k weights, the 2k with the smallest
                 |mu| are candidates, and the k of them with the largest sigma are pruned (the k candidates
                 with the smallest sigma survive). With 2k >= the pool, every weight is a candidate: it is
                 then the sigma criterion.
  random         uniformly at random (seeded per level)

`--bayes-transplant` takes each level's mask from the deterministic IMP ticket of the same settings instead.
That deterministic run (same config without --bayesian, method imp, no controls: its own run id, trained once
and reused) is also the comparison: with `--bayes-deterministic` (default) it is trained first, and every
level's record holds its accuracy, NLL and ECE beside the Bayesian ticket's and its controls'. Its trainings
are relayed to this run's events as variant "deterministic" (progress bars count them).

Each level's uncertainty is stored as the analysis `uncertainty` (RUN_DIR/analyses/uncertainty.json: test
accuracy, NLL and ECE of the MC predictive over --mc-samples, reliability bins, per variant), rewritten as
each level completes; `lottery show` prints it, and `lottery analyze RUN_ID uncertainty` measures any stored
run (Bayesian or not) the same way.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .. import bayes, models
from .. import masks as M
from ..config import BAYES_FIELDS, RunConfig, option, validate
from ..errors import ConfigError, RunCancelled
from ..registry import ANALYSES, METHODS, AnalysisSpec, MethodSpec
from ..seeding import generator
from ..store import read_object
from ..structured import imp_levels
from .imp import imp_search_cost, levels_to_reach

CRITERIA = ["mu", "sigma", "snr", "mu-then-sigma", "random"]
CANDIDATES = 2  # mu-then-sigma: candidates per weight to prune


@dataclass(frozen=True)
class BayesImpOptions:
    bayes_criterion: str = option("mu", "bayes-imp: which weights each level prunes: mu (smallest |mu|), sigma "
                                  "(largest sigma), snr (smallest |mu|/sigma), mu-then-sigma (of the 2k smallest "
                                  "|mu|, the k with the largest sigma), random", choices=CRITERIA)
    bayes_transplant: bool = option(False, "bayes-imp: take every level's mask from the deterministic IMP ticket "
                                    "of the same settings instead of the criterion")
    bayes_deterministic: bool = option(True, "bayes-imp: train (or reuse) the deterministic IMP run of the same "
                                       "settings and store its tickets' accuracy, NLL and ECE beside each level")

    def __post_init__(self):
        validate(self, "prune.")
        if self.bayes_transplant:  # a setting the run would ignore would still give it another run id
            if self.bayes_criterion != "mu":
                raise ConfigError("prune.bayes_transplant", True, "takes every mask from the deterministic ticket: "
                                  f"--bayes-criterion {self.bayes_criterion} does not apply (leave it at mu)")
            if not self.bayes_deterministic:
                raise ConfigError("prune.bayes_transplant", True, "trains the deterministic run for its masks: "
                                  "--no-bayes-deterministic does not apply")


# ---------------------------------------------------------------- criteria
def prune_step(criterion: str, weights: dict[str, torch.Tensor], mask: M.Mask, cfg, output_name: str,
               gen: torch.Generator | None = None) -> M.Mask:
    """One level of Bayesian IMP: the weights that `criterion` ranks lowest go, in IMP's exact counts."""
    mu = {n: weights[n].abs() for n in mask}
    sigma = bayes.sigmas(weights)
    if criterion == "mu":
        scores = mu
    elif criterion == "sigma":
        scores = {n: -sigma[n] for n in mask}
    elif criterion == "snr":
        scores = {n: mu[n] / sigma[n].clamp_min(torch.finfo(sigma[n].dtype).tiny) for n in mask}
    elif criterion == "mu-then-sigma":
        scores = _mu_then_sigma(mu, sigma, mask, cfg, output_name)
    elif criterion == "random":
        scores = {n: torch.rand(m.shape, generator=gen).to(m.device) for n, m in mask.items()}
    else:
        raise ConfigError("prune.bayes_criterion", criterion, f"allowed: {', '.join(CRITERIA)}")
    return M.prune_step(scores, mask, cfg.prune_fraction, cfg.output_fraction, cfg.scope, output_name)


def _mu_then_sigma(mu, sigma, mask: M.Mask, cfg, output_name: str) -> dict[str, torch.Tensor]:
    """Scores for masks.prune_step: +inf for weights outside each pool's 2k smallest |mu|, -sigma inside,
    with k what prune_step will prune from that pool."""
    hidden = [n for n in mask if n != output_name]
    pools = [([n], cfg.prune_fraction) for n in hidden] if cfg.scope == "layerwise" else [(hidden, cfg.prune_fraction)]
    pools.append(([output_name], cfg.output_fraction))
    scores = {}
    for names, fraction in pools:
        alive = sum(int(mask[n].sum()) for n in names)
        k = math.ceil(fraction * alive)
        candidates = M.keep_global({n: -mu[n] for n in names}, mask, min(CANDIDATES * k, alive), names)
        for n in names:
            scores[n] = torch.where(candidates[n], -sigma[n], torch.full_like(sigma[n], math.inf))
    return scores


# ---------------------------------------------------------------- the deterministic comparison
def deterministic_config(config: RunConfig) -> RunConfig:
    """The same experiment without --bayesian: plain IMP, no controls (its own run id)."""
    d = config.to_dict()
    d["model"] = {k: v for k, v in d["model"].items() if k != "bayesian" and k not in BAYES_FIELDS}
    own = {f.name for f in dataclasses.fields(BayesImpOptions)}
    d["prune"] = {k: v for k, v in d["prune"].items() if k not in own} | {"method": "imp", "controls": []}
    return RunConfig.from_dict(d)


DETERMINISTIC = "deterministic"  # the variant name this run's events give the deterministic run's trainings


def _deterministic_run(ctx) -> tuple[RunConfig, object]:
    from .. import events as ev
    from ..runner import run  # late: the runner imports the methods
    from ..store import RunStore

    det = deterministic_config(ctx.config)
    store = RunStore(ctx.store.root, det.run_id)
    summary = store.summary()
    if summary is None or summary.get("status") != "completed":
        def relay(e):  # its trainings show in this run's progress (counted by own_trainings)
            if isinstance(e, (ev.TrainingStarted, ev.Evaluated, ev.LevelDone)):
                ctx.emit(dataclasses.replace(e, run_id=ctx.store.run_id, variant=DETERMINISTIC))

        # its own run (own lock, own store, resumable)
        if run(det, runs_dir=ctx.store.root, cancel=ctx.cancel, on_event=relay)["status"] != "completed":
            raise RunCancelled("cancelled while training the deterministic comparison")
    else:  # trained before: its levels count as done
        for record in store.records("ticket"):
            ctx.emit(ev.LevelDone(ctx.store.run_id, record["level"], DETERMINISTIC, record, reused=True))
    return det, store


def own_trainings(config: RunConfig) -> int:
    """The deterministic run's trainings (dense + levels), trained or reused first (progress totals)."""
    opts = config.prune.method_options()
    return imp_levels(config.prune) + 1 if opts.bayes_deterministic else 0


# ---------------------------------------------------------------- uncertainty of every level
def measure(model: torch.nn.Module, data) -> dict:
    """Test accuracy, NLL and ECE (with reliability bins) of a net's (MC) predictive."""
    m = bayes.evaluate(model, data.test)
    return {k: m[k] for k in ("accuracy", "nll", "ece", "reliability", "mc_samples")}


def level_entry(store, level: int, variants, make_model, data, device, det=None) -> dict | None:
    """The uncertainty record of one stored level: every variant of this run, plus `det` = (config, store) of
    the deterministic ticket at the same level."""
    record = store.level_record("ticket", level)
    if record is None:
        return None
    entry = {"level": level, "density": record["density"], "variants": {}}
    for variant in variants:
        if store.level_record(variant, level) is None:
            continue
        _, weights = store.load_level(variant, level, device)
        model = make_model()
        model.load_state_dict(weights)
        entry["variants"][variant] = measure(model, data)
    if det is not None and det[1].level_record("ticket", level) is not None:
        det_config, det_store = det
        _, weights = det_store.load_level("ticket", level, device)
        model = models.build(det_config.model, data.input_shape, data.num_classes, det_config.seed).to(device)
        model.load_state_dict(weights)
        entry["deterministic"] = {"run_id": det_store.run_id, "density": det_store.level_record("ticket", level)
                                  ["density"], **measure(model, data)}
    return entry


def _record(config: RunConfig, run_id: str, entries: list[dict], det) -> dict:
    """The stored `uncertainty` record, one shape whether bayes-imp writes it as it goes or `lottery analyze`
    measures a stored run (a re-analysis of a bayes-imp run keeps its criterion and deterministic run)."""
    bayesian = config.model.bayesian
    record = {"analysis": "uncertainty", "run_id": run_id, "bayesian": bayesian,
              "mc_samples": config.model.mc_samples if bayesian else 1, "levels": entries}
    if config.prune.method == "bayes-imp":
        opts = config.prune.method_options()
        record |= {"criterion": opts.bayes_criterion, "transplant": opts.bayes_transplant,
                   "deterministic_run": det[1].run_id if det else None}
    return record


def run(ctx) -> None:
    from ..runner import trained_controls

    cfg, opts = ctx.config.prune, ctx.options
    det = _deterministic_run(ctx) if opts.bayes_deterministic else None
    variants = ("ticket", *trained_controls(ctx.config))

    def make_model():
        return ctx.model_with(ctx.init_weights)

    entries = [level_entry(ctx.store, 0, ("ticket",), make_model, ctx.data, ctx.device, det)]
    ctx.store.save_analysis("uncertainty", _record(ctx.config, ctx.store.run_id, entries, det))
    trained = ctx.dense
    for level in range(1, imp_levels(cfg) + 1):
        if opts.bayes_transplant:
            mask = det[1].load_mask("ticket", level, ctx.device)
        else:
            mask = prune_step(opts.bayes_criterion, trained.weights, trained.mask, cfg, ctx.output_name,
                              generator(ctx.config.seed, "bayes-random", level))
        start, start_step = ctx.rewind(trained.weights)
        trained = ctx.train_ticket(level, mask, start, start_step)
        entries.append(level_entry(ctx.store, level, variants, make_model, ctx.data, ctx.device, det))
        # after every level: what is stored is never lost to a later failure
        ctx.store.save_analysis("uncertainty", _record(ctx.config, ctx.store.run_id, entries, det))


def check(config: RunConfig, model) -> None:
    if not config.model.bayesian or not bayes.is_bayesian(model):
        raise ConfigError("model.bayesian", config.model.bayesian, "bayes-imp prunes Bayesian nets: add --bayesian "
                          "(a registry model; a user's own module is not converted)")


def companion(store) -> tuple[str, str] | None:
    """The deterministic IMP run this run trained (or reused) to compare against, as its record names it."""
    path = store.analysis_path("uncertainty")  # (this record only: the run browser asks on every refresh)
    record = read_object(path) if path.exists() else None
    det = record.get("deterministic_run") if isinstance(record, dict) else None
    return (det, "deterministic comparison") if det else None


METHODS.register("bayes-imp", "Bayesian IMP: a mean-field Gaussian net (--bayesian) pruned by |mu|, sigma, SNR, "
                              "magnitude-then-std or random (--bayes-criterion), mu and rho rewound together, "
                              "NLL/ECE per level beside the deterministic ticket")(
    MethodSpec(run, options=BayesImpOptions, levels=lambda config: imp_levels(config.prune),
               search_cost=imp_search_cost, levels_to_reach=levels_to_reach, check=check,
               own_trainings=own_trainings, companion=companion))


# ---------------------------------------------------------------- the stored record, for any run
def compute(runs_dir, run_id: str, options=None, on_event=None, cancel=None) -> dict:
    """`lottery analyze RUN_ID uncertainty`: accuracy, NLL and ECE of every stored level and variant."""
    from ..analysis.common import StoredRun, save_analysis
    from ..runner import trained_controls

    run_ = StoredRun(runs_dir, run_id)
    variants = ("ticket", *trained_controls(run_.config))
    det = _stored_deterministic_run(run_)
    entries = []
    for level in run_.levels():
        if cancel is not None and cancel.is_set():
            break
        entries.append(level_entry(run_.store, level, variants if level else ("ticket",), run_.make_model,
                                   run_.data, run_.device, det))
    result = _record(run_.config, run_id, entries, det)
    save_analysis(run_.store, "uncertainty", result, on_event)
    return result


def _stored_deterministic_run(run_) -> tuple[RunConfig, object] | None:
    """A bayes-imp run's deterministic comparison, if it is stored (it is never trained by an analysis)."""
    from ..store import RunStore

    if run_.config.prune.method != "bayes-imp":
        return None
    opts = run_.config.prune.method_options()
    if not opts.bayes_deterministic:  # the run chose to go without one (a transplant needs it: refused)
        return None
    det = deterministic_config(run_.config)
    store = RunStore(run_.store.root, det.run_id)
    return (det, store) if store.exists() else None


def format_uncertainty(name: str, a: dict) -> str:
    variants = list(dict.fromkeys(v for e in a["levels"] for v in e["variants"]))
    det = any("deterministic" in e for e in a["levels"])
    head = f"{name}: test accuracy / NLL / ECE ({bayes.ECE_BINS} bins) of the " + (
        f"MC predictive over {a['mc_samples']} samples" if a.get("bayesian") else "deterministic net")
    lines = [head, f"  {'level':>5}  {'density':>8}" + "".join(f"  {v:>22}" for v in variants)
             + (f"  {'deterministic ticket':>22}" if det else "")]
    for e in a["levels"]:
        def cell(m):
            return f"{m['accuracy']:.3f} / {m['nll']:.3f} / {m['ece']:.3f}" if m else "-"
        line = f"  {e['level'] if e['level'] else 'dense':>5}  {100 * e['density']:7.2f}%"
        line += "".join(f"  {cell(e['variants'].get(v)):>22}" for v in variants)
        lines.append(line + (f"  {cell(e.get('deterministic')):>22}" if det else ""))
    return "\n".join(lines)


ANALYSES.register("uncertainty", "accuracy, NLL and ECE of every level's (MC) predictive, per variant "
                                 "(bayes-imp writes it as it goes)")(
    AnalysisSpec(format_uncertainty, compute=compute))
