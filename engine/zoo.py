"""Model zoos: many networks of one architecture, trained at once, stored as one run.

    lottery zoo --model mlp --hidden 64,32 --dataset digits --members 64 [--seed S] [--epochs E] [--json]
    lottery zoo --ticket RUN_ID [--level L] --members 16        # a ticket zoo
    lottery zoo ... --members 64 --families 8 [--spawn-step K]  # a family zoo (dense)
    lottery show ZOO_ID                                          # members' accuracy summary, stored generations

Two kinds:
- *dense*: member i starts from its own initialisation (seed stream ("zoo", "init", i)) and sees its own data
  order (("zoo", "order", i)): independent seeds, what DeepWeightFlow learns a distribution from; with
  `--families F`, member i starts from family f = i mod F's init (member f's seed stream) and, up to
  `--spawn-step`, is one network with its family (trained with member f's order): several members per basin;
- *ticket*: every member retrains a stored ticket (its mask) from the run's rewind point (init, iter:K,
  or for learning-rate rewinding the previous level's trained weights) with its own data order; members
  share one mask and, when the rewind point is stable, one basin. The model, data and training settings
  are the ticket run's (training flags given on the command line override them).

Members are trained in chunks of `--chunk` by `engine.batched.train_batched` (one vmap computation per
chunk); a finished chunk is stored at once, so an interrupted zoo resumes from its last finished chunk (its
record names its members: a resume with another --chunk trains only the members still missing).

Store layout (a zoo is a run folder like any other; `lottery list` lists it, `lottery show` summarises it):

    RUNS_DIR/ZOO_ID/                   ZOO_ID = zoo-MODEL-DATASET-HASH (hash of the options and config)
      config.json       {"kind": "zoo", "zoo": ZooOptions fields (level resolved), "config": RunConfig}
      summary.json      status, kind ("dense"/"ticket"), members, test/val accuracy statistics
      metrics.jsonl     every member's evaluation points ({"type": "eval", "member": i, ...})
      chunks/CCC/       while training: weights.safetensors (stacked [c, ...]) + record.json (its members;
                        written last)
      weights.safetensors   when complete: {parameter: [N, *shape]}, member i at index i, pruned entries 0
      members.json      when complete: one record per member (seeds, final and early-stop metrics)
      mask.safetensors  ticket zoos: the mask every member shares
      analyses/         zoo-level analyses (barriers naive vs re-basined: `zoo_barriers`)

Reading a zoo (DeepWeightFlow, the explorer): `z = load_zoo(runs_dir, zoo_id)` gives `z.weights` (stacked),
`z.mask` (None for dense), `z.members` (records), `z.config` (its RunConfig: model, data, train),
`z.model()` (the architecture), `z.data` (the dataset, loaded once) and `z.dir` (store what you derive
from the zoo under it).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import itertools
import json
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import events as ev
from .config import RunConfig, option, validate
from .errors import ConfigError, LotteryError, RunCancelled, Unsupported
from .registry import ANALYSES, AnalysisSpec
from .seeding import derive_seed
from .store import (RunStore, StoreDamaged, check_writable, load_tensors, read_json, read_object, read_objects,
                    save_tensors, write_json)

KIND = "zoo"  # config.json's "kind": how the store tells a zoo from a ticket run


@dataclass(frozen=True)
class ZooOptions:
    """What `lottery zoo` (and the explorer's train-zoo button) asks for, besides the model/data/training config."""
    members: int = option(16, "networks in the zoo (at least 2)", lo=2, hi=100_000)
    ticket: str | None = option(None, "make a ticket zoo: RUN_ID of a stored run whose ticket every member retrains "
                                "from the run's rewind point, each with its own data order")
    level: int | None = option(None, "ticket zoo: the ticket's level (default: the run's last completed level)", lo=0)
    families: int | None = option(None, "dense zoo: members in this many families (member i in family i mod F); "
                                  "a family's members share one init and, up to --spawn-step, one training: "
                                  "several members per basin", lo=1, hi=100_000)
    spawn_step: int = option(0, "family zoo: the step where a family's members part (before it they are one "
                             "network, trained with its first member's data order)", lo=0)
    chunk: int = option(32, "members trained together as one batched computation (and stored together: the "
                        "unit a cancelled zoo resumes from)", lo=1, hi=100_000, hashed=False)

    def __post_init__(self):
        validate(self)
        if self.level is not None and self.ticket is None:
            raise ConfigError("level", self.level, "applies to ticket zoos: give --ticket RUN_ID")
        if self.families is not None and self.ticket is not None:
            raise ConfigError("families", self.families, "applies to dense zoos (a ticket zoo's members already "
                              "share one start): leave out --ticket or --families")
        if self.families is not None and self.families > self.members:
            raise ConfigError("families", self.families, f"at most --members ({self.members})")
        if self.spawn_step and self.families is None:
            raise ConfigError("spawn_step", self.spawn_step, "applies to family zoos: give --families F")


# ---------------------------------------------------------------- planning (everything that can fail, before writing)
@dataclass
class _Plan:
    zoo_id: str
    config: RunConfig
    options: ZooOptions       # level resolved for ticket zoos
    kind: str                 # "dense" or "ticket"
    start: dict | None        # ticket zoo: the shared start weights
    start_step: int
    mask: dict | None


def zoo_config(options: ZooOptions, values: dict | RunConfig | None = None, *, runs_dir=None) -> RunConfig:
    """The RunConfig a zoo trains with: for a dense zoo, `values` ({setting path: value}) or a RunConfig;
    for a ticket zoo, the ticket run's config with `values` overriding training settings and seed only."""
    from .settings import config_from_settings, flag_of, setting_values

    if isinstance(values, RunConfig):
        if options.ticket is None:
            return values
        values = {p: v for p, v in setting_values(values.to_dict()).items() if p.startswith("train.")}
    values = dict(values or {})
    if options.ticket is None:
        return config_from_settings(values)
    store, _ = ticket_level(options, runs_dir)  # a bad ticket or level answers here, before any data is loaded
    fixed = [p for p in values if p.split(".")[0] in ("model", "data")]
    if fixed:
        raise ConfigError(flag_of(fixed[0]), values[fixed[0]], "a ticket zoo trains the ticket run's own model and "
                          "data; leave it out (training flags and --seed may change)")
    stored = {k: v for k, v in store.config().items() if k != "custom_model"}
    return config_from_settings(values, base=stored)


def _ticket_store(options: ZooOptions, runs_dir) -> RunStore:
    store = RunStore(runs_dir, options.ticket)
    if not store.exists():
        raise ConfigError("ticket", options.ticket, f"no such run in {runs_dir} (see `lottery list`)")
    stored = store.config()
    if stored.get("kind") == KIND:
        raise ConfigError("ticket", options.ticket, "is a zoo; a ticket zoo needs a run with tickets")
    if "custom_model" in stored:
        raise ConfigError("ticket", options.ticket, f"trained a user's own module ({stored['custom_model']}), "
                          "which the store does not keep")
    return store


def ticket_level(options: ZooOptions, runs_dir) -> tuple[RunStore, int]:
    """A ticket zoo's run and level (the run's last completed one unless `options.level`), checked: cheap (no
    data loaded), so zoo_config refuses a bad ticket or level, and the app's Train zoo answers at once rather than
    from its worker. Errors name the fields (ticket, level); `lottery zoo` names its flags."""
    store = _ticket_store(options, runs_dir)
    levels = [r["level"] for r in store.records("ticket")]
    level = levels[-1] if options.level is None and levels else options.level
    if level not in levels:
        raise ConfigError("level", options.level, f"completed ticket levels of run {options.ticket}: {levels}")
    return store, level


def plan(options: ZooOptions, config: RunConfig, runs_dir, data) -> _Plan:
    """Check everything (ticket run and level, architecture on `data`) and name the zoo; writes nothing."""
    from . import masks as M
    from .batched import check_batchable

    kind = "dense" if options.ticket is None else "ticket"
    start, start_step, mask = None, options.spawn_step, None
    if options.ticket is not None:
        store, level = ticket_level(options, runs_dir)
        options = dataclasses.replace(options, level=level)
        mask = store.load_mask("ticket", level)
        start, start_step = _rewind_point(store, RunConfig.from_dict(
            {k: v for k, v in store.config().items() if k != "custom_model"}), level, mask)
    model = _architecture(config, data)
    try:  # refused here, before the zoo's folder exists (a transformer's dropout failed inside vmap)
        check_batchable(model, data, tested_only=True)
    except Unsupported as e:
        raise Unsupported(f"a zoo trains its members as one batched computation: {e} ({config.model.model}); zoos "
                          "take mlp, lenet300, conv2/4/6, resnet20") from None
    if mask is not None and set(mask) != set(M.prunable(model)):
        raise ConfigError("ticket", options.ticket, "its mask does not fit the zoo's architecture")
    return _Plan(zoo_id(options, config), config, options, kind, start, start_step, mask)


# Options added after zoos were first stored: hashed only when set, so an earlier zoo keeps its id (its command
# finds it again rather than training it anew)
_HASHED_WHEN_SET = ("families", "spawn_step")


def zoo_id(options: ZooOptions, config: RunConfig) -> str:
    """The id of the zoo of `options` (a ticket zoo's with its --level resolved) and `config`."""
    fields = [f for f in dataclasses.fields(options) if f.metadata.get("hashed", True)
              and not (f.name in _HASHED_WHEN_SET and getattr(options, f.name) == f.default)]
    blob = json.dumps({"zoo": {f.name: getattr(options, f.name) for f in fields}, "config": config.non_default()},
                      sort_keys=True, default=list).encode()
    dataset = "".join(c for c in config.data.dataset.split(":")[0].lower() if c.isalnum())
    return f"zoo-{config.model.model}-{dataset}-{hashlib.sha256(blob).hexdigest()[:10]}"


def _rewind_point(store: RunStore, config: RunConfig, level: int, mask) -> tuple[dict, int]:
    """Where the run restarted `level`'s ticket from: (start weights, start step), as RunContext.rewind; a method
    that never reads --rewind (pruning at init, dynamic sparse training, strong tickets) started every ticket
    from theta_0 at step 0, whatever its stored config says (runs stored before the unread rule may say iter:K)."""
    from .settings import read_by, setting_values

    given = setting_values(config.to_dict())
    if level == 0 or not read_by("prune.rewind", config.prune.method, given):  # (the dense net: from its init)
        return load_tensors(store.weights_path("init")), 0
    point = config.prune.rewind_point
    if point.kind == "iter":
        return load_tensors(store.weights_path("rewind")), point.iteration
    if point.kind == "lr":  # learning-rate rewinding: the previous level's trained weights, schedule replayed
        return store.load_level("ticket", level - 1)[1], 0
    return load_tensors(store.weights_path("init")), 0


def _member_init(config: RunConfig, data, i: int) -> dict:
    """Dense zoo member i's initial weights (its own seed stream; a family zoo's family i starts from them)."""
    from . import models

    return models.build(config.model, data.input_shape, data.num_classes,
                        derive_seed(config.seed, "zoo", "init", i)).state_dict()


def _architecture(config: RunConfig, data):
    from . import models

    return models.build(config.model, data.input_shape, data.num_classes, config.seed).to(data.train.y.device)


# ---------------------------------------------------------------- training
def train_zoo(options: ZooOptions, config: RunConfig, *, runs_dir, on_event: ev.Sink = None, cancel=None) -> dict:
    """Train (or resume, or just return) the zoo of `options` and `config`; returns its summary.

    Bad input raises ConfigError before anything is written; a cancel (`cancel.is_set()`) stops after the
    current step with status "cancelled", keeping the finished chunks."""
    from . import data as data_mod
    from .batched import Member, train_batched
    from .runner import resolve_device
    from .trainer import total_steps

    device = resolve_device(config.device)
    data = data_mod.load(config.data, device)
    p = plan(options, config, runs_dir, data)
    total = total_steps(len(data.train), config.train)
    if p.start_step >= total:
        if options.ticket is None:
            raise ConfigError("spawn_step", p.start_step, f"must be below the {total} steps of this training")
        raise ConfigError("ticket", options.ticket, f"its rewind step {p.start_step} is past the {total} steps "
                          "of this training")
    root = check_writable(runs_dir)
    store = RunStore(root, p.zoo_id)
    store.create({"kind": KIND, "zoo": dataclasses.asdict(p.options), "config": config.to_dict()})
    done_summary = store.summary(check_files=False)
    if done_summary and done_summary.get("status") == "completed" and not missing_files(store, done_summary):
        return done_summary  # else (its weights, mask or members.json gone) it trains again
    store.lock()
    if done_summary and done_summary.get("status") == "completed":
        # completed once, but a file of it is gone or damaged: the chunks it was stacked from are gone too, so
        # every member trains again; a members.json left must not count its members as trained meanwhile
        # (`_member_records` reads it first). An intact weights.safetensors stays: `_finish` replaces it
        # atomically, so a cancel before then loses nothing.
        store.path("members.json").unlink(missing_ok=True)
    n, chunk = p.options.members, p.options.chunk
    status, error = "running", None

    def summarise() -> dict:
        return _summary(store, p, status, str(device), error)

    try:
        if p.mask is not None:
            save_tensors(store.path("mask.safetensors"), p.mask)
        # The chunks an earlier, cancelled call stored (each record names its members: --chunk may have been
        # another size then), then the members they lack, in chunks of this call's size.
        stored = _stored_chunks(store)
        have = {m["member"] for _, r in stored for m in r["members"]}
        todo = [i for i in range(n) if i not in have]
        new = [todo[a:a + chunk] for a in range(0, len(todo), chunk)]
        used = {c for c, _ in stored}
        free = (c for c in itertools.count() if c not in used)  # chunk folders to write
        _emit(on_event, ev.RunStarted(p.zoo_id, KIND, len(stored) + len(new), total, len(stored)))
        store.write_summary(summarise())
        template = _architecture(config, data)
        parents = _family_parents(p, template, data, cancel) if p.options.families and new else None
        for c, (_, record) in enumerate(stored):
            _emit(on_event, ev.LevelDone(p.zoo_id, c, KIND, record, reused=True))
        for c, indices in enumerate(new, len(stored)):
            members = []
            for i in indices:
                if parents is not None:
                    init = parents[_family(p, i)]
                elif p.start is not None:
                    init = p.start
                else:
                    init = _member_init(config, data, i)
                members.append(Member({k: v.to(device) for k, v in init.items()}, p.mask,
                                      seed=derive_seed(config.seed, "zoo", "order", i), start_step=p.start_step))
            _emit(on_event, ev.TrainingStarted(p.zoo_id, c, KIND, 1.0, p.start_step, total))
            evals: dict[int, list] = {}

            def on_eval(j, point, indices=indices, c=c):
                store.append_metrics({"type": "eval", "member": indices[j], **point})
                evals.setdefault(point["iteration"], []).append(point)
                if len(evals[point["iteration"]]) == len(members):  # the chunk's mean, one event per evaluation
                    pts = evals.pop(point["iteration"])
                    mean = {k: statistics.fmean(q[k] for q in pts) for k in ("train_loss", "val_loss",
                                                                              "val_accuracy", "test_accuracy")}
                    _emit(on_event, ev.Evaluated(p.zoo_id, c, KIND, point["iteration"], point["epoch"], **mean))

            out = train_batched(template, data, config.train, members, on_eval=on_eval, cancel=cancel)
            records = [_member_record(i, config, p, r) for i, r in zip(indices, out.results)]
            d = _chunk_dir(store, next(free))
            save_tensors(d / "weights.safetensors", out.weights)
            write_json(d / "record.json", {"chunk": c, "members": records, "seconds": out.results[0].seconds})
            store.write_summary(summarise())
            _emit(on_event, ev.LevelDone(p.zoo_id, c, KIND, {"chunk": c, "members": len(indices)}, reused=False))
        _finish(store, n)
        status = "completed"
        summary = summarise()
        store.write_summary(summary)
    except (RunCancelled, KeyboardInterrupt) as e:
        status = "cancelled"
        store.write_summary(summarise())
        _emit(on_event, ev.RunStopped(p.zoo_id, len(_stored_chunks(store, damaged_ok=True))))
        if isinstance(e, KeyboardInterrupt):
            raise
        return summarise()
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        store.write_summary(summarise())
        _emit(on_event, ev.RunFailed(p.zoo_id, error))
        raise
    finally:
        store.unlock()
    _emit(on_event, ev.RunFinished(p.zoo_id, summary))
    return summary


def _family(p: _Plan, i: int) -> int | None:
    """Member i's family in a family zoo (None otherwise): i mod F, so member f starts as the dense zoo's does."""
    return None if p.options.families is None else i % p.options.families


def _family_parents(p: _Plan, template, data, cancel) -> list[dict]:
    """A family zoo's parents' weights, by family: family f starts as the dense zoo's member f (its init) and trains to
    --spawn-step with member f's data order, all families as one batched computation (the same on every call,
    so a resumed zoo's members start from the same parents). The optimizer's state is not handed on: members
    start it afresh, as a rewound ticket does."""
    from .batched import Member, train_batched

    inits = [_member_init(p.config, data, f) for f in range(p.options.families)]
    if not p.start_step:
        return inits
    members = [Member(init, seed=derive_seed(p.config.seed, "zoo", "order", f)) for f, init in enumerate(inits)]
    out = train_batched(template, data, p.config.train, members, stop=p.start_step, cancel=cancel)
    return [out.member(f) for f in range(len(members))]


def _emit(sink, event) -> None:
    if sink is not None:
        sink(event)


def _chunk_dir(store: RunStore, c: int) -> Path:
    return store.path("chunks", f"{c:03d}")


def _stored_chunks(store: RunStore, damaged_ok: bool = False) -> list[tuple[int, dict]]:
    """(number, record) of every chunk stored whole (its record is written last), by number. A damaged record is
    a StoreDamaged that says how to recover, or, with damaged_ok (a summary of what is there), left out."""
    folder = store.path("chunks")
    numbers = sorted(int(d.name) for d in folder.iterdir() if d.name.isdigit()) if folder.exists() else []
    damaged: dict[int, str] = {}
    records = read_objects({c: _chunk_dir(store, c) / "record.json" for c in numbers}, damaged)
    if damaged and not damaged_ok:
        c, problem = next(iter(damaged.items()))
        raise _retrain_hint(problem, store, c)
    return list(records.items())


def _retrain_hint(problem: str, store: RunStore, c: int) -> StoreDamaged:
    """A damaged chunk: the finished chunks are kept, so only this one's members need training again."""
    return StoreDamaged(f"{problem}; delete {_chunk_dir(store, c)} and run the same command again to retrain its "
                        "members")


def _member_record(i: int, config: RunConfig, p: _Plan, r) -> dict:
    family = _family(p, i)
    init = None if p.start is not None else derive_seed(config.seed, "zoo", "init", i if family is None else family)
    return {"member": i, "init_seed": init, **({} if family is None else {"family": family}),
            "order_seed": derive_seed(config.seed, "zoo", "order", i), "start_step": p.start_step,
            **{k: r.final[k] for k in ("test_accuracy", "test_loss", "val_accuracy", "val_loss")},
            "early_stop_iteration": r.early_stop_iteration,
            "early_stop_test_accuracy": r.at_early_stop["test_accuracy"],
            "early_stop_val_accuracy": r.at_early_stop["val_accuracy"]}


def _finish(store: RunStore, n: int) -> None:
    """All n members stored: write the zoo's one stacked file and member table (member i at index i), then drop
    the chunks."""
    import torch

    stored = _stored_chunks(store)
    where = {}  # member -> (chunk, index in the chunk, record)
    for c, r in stored:
        for j, m in enumerate(r["members"]):
            where.setdefault(m["member"], (c, j, m))
    if sorted(where) != list(range(n)):
        raise LotteryError(f"{store.path('chunks')} holds members {sorted(where)}, not 0..{n - 1}")
    parts = {}
    for c, _ in stored:
        try:
            parts[c] = load_tensors(_chunk_dir(store, c) / "weights.safetensors")
        except StoreDamaged as e:
            raise _retrain_hint(str(e), store, c) from None
    stacked = {k: torch.stack([parts[where[i][0]][k][where[i][1]] for i in range(n)]) for k in parts[stored[0][0]]}
    records = [where[i][2] for i in range(n)]
    seconds = sum(r["seconds"] for _, r in stored)
    save_tensors(store.weights_path("weights"), stacked)
    write_json(store.path("members.json"), {"members": records, "train_seconds": round(seconds, 3)})
    shutil.rmtree(store.path("chunks"))


def missing_files(store: RunStore, summary: dict) -> str | None:
    """What a completed zoo's summary promises that is gone or unreadable (its stacked weights, a ticket zoo's
    mask, members.json listing its members), saying how to recover, or None (also for a zoo not completed).
    `RunStore.missing_files` calls it for zoo summaries, so `lottery list` never calls such a zoo complete."""
    if summary["status"] != "completed":
        return None
    again = f"; run the same `lottery {KIND}` command again to train it again"
    names = set(os.listdir(store.dir))
    wanted = ["weights.safetensors", "members.json"]
    if summary.get("zoo_kind") == "ticket":
        wanted.append("mask.safetensors")
    for name in wanted:
        if name not in names:
            return f"{store.path(name)} is missing, so {KIND} {store.run_id} cannot be used{again}"
    members = store.path("members.json")
    try:
        if not isinstance(read_object(members).get("members"), list):
            return f"{members} is damaged: it lists no members{again}"
    except StoreDamaged as e:
        return f"{e}{again}"
    return None


def _member_records(store: RunStore) -> tuple[list[dict], float]:
    path = store.path("members.json")
    if path.exists():
        m = read_json(path)
        return m["members"], m["train_seconds"]
    chunks = [r for _, r in _stored_chunks(store, damaged_ok=True)]
    return [m for c in chunks for m in c["members"]], sum(c["seconds"] for c in chunks)


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
            "q1": q[0], "q3": q[2]}


def _summary(store: RunStore, p: _Plan, status: str, device: str, error: str | None) -> dict:
    records, seconds = _member_records(store)
    s = {"run_id": p.zoo_id, "kind": KIND, "zoo_kind": p.kind, "status": status, "method": KIND,
         "model": p.config.model.model, "dataset": p.config.data.dataset, "seed": p.config.seed, "device": device,
         "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
         "members": p.options.members, "trained": len(records), "train_seconds": round(seconds, 3),
         "epochs": p.config.train.epochs, "ticket": p.options.ticket, "level": p.options.level,
         "families": p.options.families, "spawn_step": p.options.spawn_step,
         "density": None, "config": p.config.non_default(),
         "test_accuracy": _stats([r["test_accuracy"] for r in records]),
         "val_accuracy": _stats([r["val_accuracy"] for r in records]),
         "levels": [], "dense": None, "controls": {}}  # what readers of ticket runs' summaries expect to find
    if p.mask is not None:
        from . import masks as M
        s["density"] = M.density(p.mask)
    if error:
        s["error"] = error
    return s


# ---------------------------------------------------------------- reading
def is_zoo(store: RunStore) -> bool:
    return store.exists() and store.config().get("kind") == KIND


def refuse_zoo(store: RunStore, instead: str) -> None:
    """ConfigError (bad input: exit 2) for a command that reads ticket levels, given a zoo (members, no levels):
    `instead` says where to look."""
    if is_zoo(store):
        raise ConfigError("RUN_ID", store.dir.name, f"it is a model zoo, not a ticket run: {instead}")


@dataclass
class Zoo:
    """A stored, complete zoo."""
    zoo_id: str
    dir: Path
    kind: str                  # "dense" or "ticket"
    config: RunConfig
    options: ZooOptions
    weights: dict              # {parameter: [N, *shape]}
    mask: dict | None          # ticket zoos: the shared mask
    members: list[dict]
    device: object = "cpu"

    def model(self):
        """The zoo's architecture (a module with its own initial weights; load a member into it)."""
        return _architecture(self.config, self.data)

    @functools.cached_property
    def data(self):
        from . import data as data_mod
        return data_mod.load(self.config.data, self.device)

    def member(self, i: int) -> dict:
        from .batched import member_weights
        return member_weights(self.weights, i)

    def __len__(self) -> int:
        return len(self.members)


def load_zoo(runs_dir, zoo_id: str, device="cpu") -> Zoo:
    store = RunStore(runs_dir, zoo_id)
    if not store.exists():
        raise ConfigError("ZOO_ID", zoo_id, f"no such zoo in {runs_dir} (see `lottery list`)")
    stored = store.config()
    if stored.get("kind") != KIND:
        raise ConfigError("ZOO_ID", zoo_id, "is a ticket run, not a zoo (make one with `lottery zoo`)")
    options = ZooOptions(**stored["zoo"])
    if not store.weights_path("weights").exists() or not store.path("members.json").exists():  # (being) trained
        trained = len(_member_records(store)[0])
        raise ConfigError("ZOO_ID", zoo_id, f"is not complete ({trained} of {options.members} members trained); "
                          "run the same `lottery zoo` command again to finish it")
    mask_path = store.path("mask.safetensors")
    return Zoo(zoo_id, store.dir, "dense" if options.ticket is None else "ticket",
               RunConfig.from_dict(stored["config"]),
               options, load_tensors(store.weights_path("weights"), device),
               load_tensors(mask_path, device) if mask_path.exists() else None,
               read_json(store.path("members.json"))["members"], device)


# What `lottery list --json` adds to a zoo's row: dense or ticket, the ticket run and level a ticket zoo retrains
# (None for a dense zoo), a family zoo's families and spawn step (None and 0 for others; None if stored before them)
LIST_FIELDS = ("zoo_kind", "ticket", "level", "families", "spawn_step")


def list_tail(s: dict) -> str:
    """A zoo's row in `lottery list` after its id and status: dense or ticket (padded so the median test accuracy
    lines up for both kinds), members trained, model, median test accuracy, and the ticket run and level a ticket
    zoo retrains (last: a run id is long)."""
    from .formatting import pct

    tail = (f"{s.get('zoo_kind', '?'):<6} zoo of {s.get('trained')}/{s.get('members')} {s.get('model')}, median test "
            f"{pct((s.get('test_accuracy') or {}).get('median'))}")
    return tail + (f"; retrains {s.get('ticket')} level {s.get('level')}" if s.get("zoo_kind") == "ticket" else
                   f"; {_families_text(s)}" if s.get("families") else "")


def _families_text(s: dict) -> str:
    return f"{s['families']} families, parting at step {s.get('spawn_step', 0)}"


def format_zoo(s: dict) -> str:
    """What `lottery show ZOO_ID` prints."""
    what = (f"ticket zoo of {s['ticket']} level {s['level']} (density {100 * s['density']:.2f}%)"
            if s.get("zoo_kind") == "ticket" else f"dense zoo of {_families_text(s)}" if s.get("families")
            else "dense zoo")
    lines = [f"zoo {s['run_id']}  {s['status']}  ({what}: {s['trained']}/{s['members']} x {s['model']} on "
             f"{s['dataset']}, seed {s['seed']}, {s['epochs']} epochs, {s.get('device', '?')})"]
    if s.get("error"):
        lines.append(f"error: {s['error']}")
    for key in ("test_accuracy", "val_accuracy"):
        st = s.get(key)
        if st:
            lines.append(f"{key.replace('_', ' '):>13}: median {100 * st['median']:.2f}%  mean {100 * st['mean']:.2f}% "
                         f"+- {100 * st['std']:.2f}  quartiles [{100 * st['q1']:.2f}, {100 * st['q3']:.2f}]  "
                         f"range [{100 * st['min']:.2f}, {100 * st['max']:.2f}]")
    lines.append(f"trained in {s['train_seconds']:.1f} s as one batched computation per chunk")
    if "generations" in s:  # `lottery show` adds the stored generations (engine.generate.generation_rows)
        lines.append(f"generations: {len(s['generations'])}" if s["generations"] else
                     f"generations: none yet (`lottery generate {s['run_id']}`)" if s["status"] == "completed" else
                     "generations: none yet (the zoo is not complete: run the same `lottery zoo` command again to "
                     "finish it)")
    for g in s.get("generations", []):
        if "unreadable" in g:
            lines.append(f"  {g['generation']}  unreadable: {g['unreadable']}")
            continue
        lines.append(f"  {g['generation']}  canonicalise {g['canonicalise']}, "
                     f"{'PCA ' + str(g['pca']) if g['pca'] else 'no PCA'}, {g['samples']} samples, {g['steps']} flow "
                     f"steps, seed {g['seed']}: generated median {100 * g['generated_median']:.2f}% vs zoo median "
                     f"{100 * g['zoo_median']:.2f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------- zoo-level analyses
def zoo_barriers(runs_dir, zoo_id: str, pairs: int | list[tuple[int, int]] = 3, points: int = 11, *,
                 seed: int = 0, on_event=None, cancel=None) -> dict:
    """Barriers between members of a zoo, naive and after Git Re-Basin weight matching (engine.rebasin):
    `pairs` disjoint pairs (0, 1), (2, 3), ... or the given (i, j) list, interpolated on the test split.
    Stored as ZOO_DIR/analyses/zoo-barrier.json; `lottery show ZOO_ID` prints its means.
    `cancel.is_set()` is checked between pairs and before saving (RunCancelled; nothing is stored)."""
    import statistics as st

    from .rebasin import barriers

    zoo = load_zoo(runs_dir, zoo_id)
    n = len(zoo)
    if not isinstance(points, int) or points < 2:
        raise ConfigError("points", points, "must be an integer of at least 2 (the two members themselves)")
    if isinstance(pairs, int):
        if not 1 <= pairs <= n // 2:
            raise ConfigError("pairs", pairs, f"must be in [1, {n // 2}] for a zoo of {n} members")
        pairs = [(2 * i, 2 * i + 1) for i in range(pairs)]
    for i, j in pairs:
        if not (0 <= i < n and 0 <= j < n and i != j):
            raise ConfigError("pairs", (i, j), f"members are 0..{n - 1}, two different ones per pair")
    model = zoo.model()
    rows = []

    def check_cancel():
        if cancel is not None and cancel.is_set():
            raise RunCancelled(f"barriers of {zoo_id} cancelled: nothing stored")

    for k, (i, j) in enumerate(pairs):
        check_cancel()
        r = barriers(model, zoo.member(i), zoo.member(j), zoo.data.test, points=points, mask_b=zoo.mask,
                     bn_data=zoo.data.train, seed=seed)
        rows.append({"a": i, "b": j, **r})
        _emit(on_event, ev.AnalysisProgress(zoo_id, "zoo-barrier", k + 1, len(pairs), f"pair {i}-{j}"))
    check_cancel()  # pressed during the last pair: still nothing stored
    result = {"analysis": "zoo-barrier", "run_id": zoo_id, "pairs": rows, "points": points}
    for key in ("naive_error_barrier", "matched_error_barrier", "naive_loss_barrier", "matched_loss_barrier"):
        result[key] = st.fmean(r[key] for r in rows)
    path = RunStore(runs_dir, zoo_id).save_analysis("zoo-barrier", result)
    _emit(on_event, ev.AnalysisReady(zoo_id, "zoo-barrier", str(path)))
    return result


def _format_zoo_barrier(name: str, a: dict) -> str:
    return (f"{name}: mean over {len(a['pairs'])} member pairs: error barrier naive {a['naive_error_barrier']:.4f} -> "
            f"re-basined {a['matched_error_barrier']:.4f}; loss barrier {a['naive_loss_barrier']:.4f} -> "
            f"{a['matched_loss_barrier']:.4f}")


ANALYSES.register("zoo-barrier", "barriers between zoo members, naive and after Git Re-Basin "
                  "(engine.zoo.zoo_barriers)")(
    AnalysisSpec(_format_zoo_barrier))


# ---------------------------------------------------------------- `lottery zoo`
def config_settings():
    """The run settings a zoo takes: model, data, training, seed and device (no pruning; no --batched: a zoo
    always trains batched; no Bayesian or text-data settings: batched training refuses Bayesian layers and the
    transformers text data sets need)."""
    from .config import BAYES_FIELDS
    from .settings import run_settings

    never = {"train.batched", "model.bayesian", "data.tokenizer", "data.max_length",
             *(f"model.{f}" for f in BAYES_FIELDS)}
    return [s for s in run_settings() if s.path.split(".")[0] in ("model", "data", "train", "seed", "device")
            and s.path not in never]


def add_command(sub, common) -> None:
    """`lottery zoo`: flags generated from ZooOptions and the model/data/train config groups."""
    from .cli import options_command

    parser = options_command(sub, common, "zoo", "train a model zoo: many networks of one architecture as one "
                             "batched computation (dense seeds, or a stored ticket retrained with many data orders)",
                             ZooOptions, _cmd_zoo, more=config_settings())
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_zoo(options: ZooOptions, args) -> int:
    import sys

    from .cli import _Progress, errors_name_flags, json_text
    from .settings import refuse_unread_by_model, values_from_args

    values = values_from_args(args, config_settings())
    refused = None
    if options.ticket is None:  # (a ticket zoo refuses every model flag: it trains the ticket run's model)
        try:  # --hidden with conv2 would name a second zoo of the same networks ...
            refuse_unread_by_model(values, values)
        except ConfigError as e:  # ... unless such a zoo was stored before this rule: its command resumes it
            refused = e
    try:
        with errors_name_flags(ZooOptions):  # errors name the fields (ticket, level); the user typed --ticket
            config = zoo_config(options, values, runs_dir=args.runs_dir)
    except ConfigError:
        if refused is not None:  # (an unread flag's value the config refutes too: the unread rule says why)
            raise refused from None
        raise
    if refused is not None and not RunStore(args.runs_dir, zoo_id(options, config)).exists():
        raise refused
    try:
        with errors_name_flags(ZooOptions):
            summary = train_zoo(options, config, runs_dir=args.runs_dir,
                                on_event=_Progress(args.quiet or args.json))
    except KeyboardInterrupt:
        print(f"cancelled: finished chunks are kept in {args.runs_dir}; run the same command to resume",
              file=sys.stderr)
        return 130
    print(json_text(summary) if args.json else format_zoo(summary))
    return {"completed": 0, "cancelled": 130}.get(summary["status"], 1)
