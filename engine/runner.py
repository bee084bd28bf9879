"""`run(config)`: validate, load, then let the chosen method produce tickets level by level.

The runner owns everything methods should not have to think about: the store (resume, atomic
writes), events, cancellation, the dense baseline (level 0), the rewind point, and the controls
trained beside every ticket. A method is a short function of a `RunContext` (see engine.methods).
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import os
import re
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import batched
from . import data as data_mod
from . import events as ev
from . import masks as M
from . import models, structured, trainer
from .config import DEVICE_SYNTAX, RunConfig
from .errors import ConfigError, LotteryError, RunCancelled
from .registry import CONTROLS, METHODS, MethodSpec
from .seeding import derive_seed
from .store import RunStore, check_writable, load_tensors, save_tensors
from .text import is_text_dataset

DEFAULT_RUNS_DIR = "runs"


def resolve_device(name: str) -> torch.device:
    if not isinstance(name, str) or not re.fullmatch(DEVICE_SYNTAX, name):
        raise ConfigError("device", name, "allowed: auto, cpu, cuda, cuda:N, mps")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", name, "CUDA is not available on this machine; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", name, "MPS is not available on this machine; use auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError("device", name, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


@dataclass
class Trained:
    """A finished training: its summary row, the mask it trained under and its trained weights."""
    record: dict
    mask: M.Mask
    weights: dict[str, torch.Tensor]


class RunContext:
    """What a method sees: the config, the data, and `train_ticket` to train (or reuse) a level."""

    def __init__(self, config: RunConfig, data: data_mod.Dataset, store: RunStore, device: torch.device,
                 make_model: Callable[[], nn.Module], reinit: Callable[[nn.Module, int], None],
                 sink: ev.Sink, cancel):
        self.config, self.data, self.store, self.device = config, data, store, device
        self._make_model, self._reinit = make_model, reinit
        self._sink, self.cancel = sink, cancel
        self.output_name = M.output_layer(make_model())  # builds the model once: shape errors surface here
        self.total_steps = trainer.total_steps(len(data.train), config.train)
        self.init_weights: dict[str, torch.Tensor] = {}
        self.rewind_weights: dict[str, torch.Tensor] | None = None
        self.dense: Trained | None = None
        self.on_saved: Callable[[], None] | None = None  # the runner rewrites summary.json here
        self.model_name = config.model.model
        self.options = config.prune.method_options()  # the method's own options dataclass (or None)
        self.pool = None  # engine.side_by_side.Rendezvous: this run's trainings batch with other runs'
        # a user's module trains one by one: its forward may do what the batched trainer's vmap cannot (.item(), a
        # branch on a value), which its layer types do not tell
        self.own_module = False

    # ------------------------------------------------------------ helpers for methods
    def emit(self, event: ev.Event) -> None:
        if self._sink is not None:
            self._sink(event)

    def model_with(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        model = self._make_model()
        model.load_state_dict(weights)
        return model.to(self.device)

    def fresh_weights(self, *stream) -> dict[str, torch.Tensor]:
        """A new initialisation from an independent seed stream (the reinit control)."""
        model = self._make_model()
        self._reinit(model, derive_seed(self.config.seed, *stream))
        return {k: v.detach().to(self.device) for k, v in model.state_dict().items()}

    def rewind(self, trained: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """(weights to restart survivors from, step to restart at) for the configured rewind point."""
        point = self.config.prune.rewind_point
        if point.kind == "init":
            return self.init_weights, 0
        if point.kind == "iter":
            return self.rewind_weights, point.iteration
        return trained, 0  # learning-rate rewinding: keep the weights, replay the schedule

    def train_ticket(self, level: int, mask: M.Mask, start: dict[str, torch.Tensor], start_step: int,
                     *, search: "MaskSearch | None" = None) -> Trained:
        """Train the ticket (mask, start weights) of `level`, then its controls; reuse stored levels.

        `search` (see MaskSearch) changes the ticket's mask while it trains (dynamic sparse training,
        strong tickets); the mask stored, and given to the controls, is the final one."""
        controls = trained_controls(self.config) if level > 0 else ()
        capture = level == 0 and self.config.prune.rewind_point.iteration  # late rewinding's step hook
        if (controls or self.pool is not None) and search is None and not capture \
                and self.config.train.batched == "auto" and not self.own_module:
            # the ticket's mask is known before it trains: the controls can train beside it (a search's final
            # mask is not, and it changes the ticket's mask every step: those train one after another)
            stored = self.store.level_record("ticket", level) is not None
            ticket_mask = self.store.load_mask("ticket", level, self.device) if stored else mask
            plan = [("ticket", mask, start, start_step)] + [
                (name, *CONTROLS.get(name, "prune.controls")(self, level, ticket_mask, start, start_step))
                for name in controls]
            trained = self.train_together(level, plan)
            return trained["ticket"]
        ticket = self.train_variant("ticket", level, mask, start, start_step, search=search)
        for name in controls:
            c_mask, c_start, c_step = CONTROLS.get(name, "prune.controls")(self, level, ticket.mask, start,
                                                                             start_step)
            self.train_variant(name, level, c_mask, c_start, c_step)
        return ticket

    def train_together(self, level: int, plan: list[tuple]) -> dict[str, Trained]:
        """Train the variants of `plan` [(variant, mask, start, start step)] of one level (reusing stored ones)
        as one batched computation (engine.batched) when `--batched auto` finds that faster, else one by one.

        Each ends as it would alone (its own mask, init, data-order seed, start step; to float rounding) and is
        stored, with its events and metrics rows, in plan order as if trained one after another: the first
        variant's evaluations stream live, the others' are replayed once the batch is done."""
        todo = [p for p in plan if self.store.level_record(p[0], level) is None]
        # alone, a single training gains nothing from batching; in a pool it may batch with other runs' trainings
        fewest = 1 if self.pool is not None else 2
        if len(todo) < fewest or batched.auto_reason(
                model := self.model_with(plan[0][2]),  # the architecture the members share (each brings its weights)
                self.data, self.config.train) is not None:
            return {v: self.train_variant(v, level, mask, start, step) for v, mask, start, step in plan}
        done = {v: self.train_variant(v, level, mask, start, step) for v, mask, start, step in plan
                if all(v != t[0] for t in todo)}  # stored ones: reused (and announced) first, as one by one would
        rid, first = self.store.run_id, todo[0][0]
        replay: dict[str, list] = {v: [] for v, *_ in todo}

        def on_eval(i, point):
            if todo[i][0] == first:
                self._evaluated(level, first, point)
            else:
                replay[todo[i][0]].append(point)

        members = [batched.Member(start, mask, derive_seed(self.config.seed, "train", v, level), step)
                   for v, mask, start, step in todo]
        self.emit(ev.TrainingStarted(rid, level, first, M.density(todo[0][1]), todo[0][3], self.total_steps))
        train = batched.train_batched if self.pool is None else self.pool.train  # with other runs' trainings
        out = train(model, self.data, self.config.train, members, on_eval=on_eval, cancel=self.cancel)
        keys = list(plan[0][2])  # the state dict's order, as model.state_dict() gives it
        for i, (v, mask, start, step) in enumerate(todo):
            if v != first:
                self.emit(ev.TrainingStarted(rid, level, v, M.density(mask), step, self.total_steps))
                for point in replay[v]:
                    self._evaluated(level, v, point)
            result = out.results[i]
            result.seconds /= len(todo)  # each member's share of the batch's time
            done[v] = self._save(v, level, mask, {k: out.weights[k][i].clone() for k in keys}, result, step)
        return done

    # ------------------------------------------------------------ one training, stored (or reused)
    def train_variant(self, variant: str, level: int, mask: M.Mask, start, start_step: int, *,
                      search: "MaskSearch | None" = None) -> Trained:
        stored = self.store.level_record(variant, level)
        if stored is not None:
            mask, weights = self.store.load_level(variant, level, self.device)
            self.emit(ev.LevelDone(self.store.run_id, level, variant, stored, reused=True))
            return Trained(stored, mask, weights)

        model = self.model_with(start)
        if search is None:  # a search decides itself what its start looks like
            M.apply(model, mask)
        self.emit(ev.TrainingStarted(self.store.run_id, level, variant, M.density(mask), start_step,
                                     self.total_steps))

        def on_eval(point):
            self._evaluated(level, variant, point)

        on_step = None
        rewind_k = self.config.prune.rewind_point.iteration
        if variant == "ticket" and level == 0 and rewind_k:
            def on_step(step, m):  # capture the late-rewinding point during dense training
                if step == rewind_k:
                    self.rewind_weights = {k: v.detach().clone() for k, v in m.state_dict().items()}

        grad_mask, on_optimizer = mask, None
        if search is not None:  # never at level 0, so it never displaces the rewind capture above
            grad_mask, on_step, on_optimizer = search.prepare(model), search.on_step, search.attach
        seed = derive_seed(self.config.seed, "train", variant, level)
        with self.pool.solo if self.pool is not None else contextlib.nullcontext():  # one at a time beside others
            result = trainer.train(model, self.data, self.config.train, grad_mask, seed=seed, start_step=start_step,
                                   on_step=on_step, on_eval=on_eval, cancel=self.cancel, on_optimizer=on_optimizer)
        if search is not None:
            mask = search.finish(model)
        return self._save(variant, level, mask, {k: v.detach() for k, v in model.state_dict().items()}, result,
                          start_step)

    def _evaluated(self, level: int, variant: str, point: dict) -> None:
        """One evaluation of a training: a metrics row and an event."""
        self.store.append_metrics({"type": "eval", "level": level, "variant": variant, **point})
        self.emit(ev.Evaluated(self.store.run_id, level, variant, point["iteration"], point["epoch"],
                               point["train_loss"], point["val_loss"], point["val_accuracy"], point["test_accuracy"]))

    def _save(self, variant: str, level: int, mask: M.Mask, weights: dict[str, torch.Tensor],
              result: trainer.TrainResult, start_step: int) -> Trained:
        """Store a finished training (its record last: it marks the level complete), then announce it."""
        rid = self.store.run_id
        density = M.density(mask)
        record = {
            "level": level, "variant": variant, "density": density, "sparsity": 1 - density,
            "kept_weights": M.kept(mask), "prunable_weights": M.total(mask),
            "test_accuracy": result.final["test_accuracy"], "test_loss": result.final["test_loss"],
            "val_accuracy": result.final["val_accuracy"], "val_loss": result.final["val_loss"],
            "early_stop_iteration": result.early_stop_iteration,
            "early_stop_test_accuracy": result.at_early_stop["test_accuracy"],
            "early_stop_val_accuracy": result.at_early_stop["val_accuracy"],
            "train_seconds": round(result.seconds, 4), "start_step": start_step, "iterations": result.iterations,
            "layers": M.layer_densities(mask),
        }
        if self.rewind_weights is not None and variant == "ticket" and level == 0:
            save_tensors(self.store.weights_path("rewind"), self.rewind_weights)
        self.store.save_level(variant, level, mask, weights, record)
        if self.on_saved is not None:  # first: the summary never lags behind what is stored
            self.on_saved()
        self.store.append_metrics({"type": "level", **record})
        self.emit(ev.LevelDone(rid, level, variant, record, reused=False))
        return Trained(record, mask, weights)


class MaskSearch:
    """How a method changes a ticket's mask while the trainer trains it (dynamic sparse training, strong
    tickets). The runner calls `prepare(model)` on the model built from the start weights (the initial
    mask not applied); it returns what the trainer multiplies gradients by (None: nothing). Then
    `attach(optimizer)` once the optimizer exists, `on_step(step, model)` after every step, and
    `finish(model)` at the end: it leaves `model` holding the ticket's plain weights (pruned ones exactly
    0) and returns the final bool mask, which is what is stored."""

    def prepare(self, model: nn.Module):
        raise NotImplementedError

    def attach(self, optimizer) -> None:
        pass

    def on_step(self, step: int, model: nn.Module) -> None:
        pass

    def finish(self, model: nn.Module) -> M.Mask:
        raise NotImplementedError


# ---------------------------------------------------------------- the summary a user reads
def trained_controls(config: RunConfig) -> tuple[str, ...]:
    """The controls a run trains: none for methods whose tickets are never trained (strong tickets)."""
    return config.prune.controls if method_spec(config).trains_controls else ()


def method_spec(config: RunConfig) -> MethodSpec:
    return METHODS.get(config.prune.method, "prune.method")


ROW_KEYS = ("level", "density", "sparsity", "test_accuracy", "test_loss", "val_accuracy", "val_loss",
            "early_stop_iteration", "early_stop_test_accuracy", "train_seconds", "start_step", "iterations", "layers")


def build_summary(config: RunConfig, store: RunStore, status: str, *, model_name: str, device: str,
                  error: str | None = None) -> dict:
    def rows(variant):
        return [{k: r[k] for k in ROW_KEYS} for r in store.records(variant)]

    ticket_rows = rows("ticket")
    dense = next((r for r in ticket_rows if r["level"] == 0), None)
    summary = {
        "run_id": store.run_id, "status": status, "method": config.prune.method, "model": model_name,
        "dataset": config.data.dataset, "seed": config.seed, "device": device,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.non_default(),
        "dense": dense,
        "levels": [r for r in ticket_rows if r["level"] > 0],
        "controls": {name: rows(name) for name in trained_controls(config)},
    }
    if error:
        summary["error"] = error
    return summary


# ---------------------------------------------------------------- which model
def check_own_module(model, dataset: data_mod.Dataset, batch_size: int) -> None:
    """Refuse, in one line naming what is wrong and what is allowed, a user's module the runner cannot train and
    prune: before anything is stored, rather than as a traceback deep in training or in the store's writes.

    Every Linear/Conv weight is pruned (engine.masks.prunable), so each must be a plain float32 parameter of its
    own that trains; the module must map a batch of the data set's inputs to one tensor of logits."""
    def refuse(allowed: str):
        raise ConfigError("model", type(model).__name__, allowed)

    def said(e: Exception) -> str:  # what an exception of the user's code says, in one line
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or ['no message'])[0]}"

    if isinstance(model, type) and issubclass(model, nn.Module):
        raise ConfigError("model", model.__name__, f"is the class {model.__name__}; pass an instance: "
                          f"model={model.__name__}()")
    if not isinstance(model, nn.Module):
        refuse("must be a torch.nn.Module")
    if isinstance(model, torch.jit.ScriptModule):  # its layers are script modules, not the Linear/Conv pruned here
        refuse("is a TorchScript module; pass the module before torch.jit.script")
    tensors = dict(model.state_dict(keep_vars=True))
    lazy = next((n for n, t in tensors.items() if torch.nn.parameter.is_lazy(t)), None)
    if lazy is not None:
        refuse(f"{lazy!r} is an uninitialised lazy parameter; run one forward pass on a batch first")
    odd = next(((n, t.dtype) for n, t in tensors.items() if t.is_floating_point() and t.dtype != torch.float32), None)
    if odd is not None:
        refuse(f"{odd[0]!r} is {str(odd[1]).replace('torch.', '')}; the data and training are float32: call "
               ".float() on the module first")
    first: dict[tuple, str] = {}  # (storage, offset) -> the first name holding it
    for n, t in tensors.items():
        if t.numel():
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            if key in first:
                refuse(f"{n!r} and {first[key]!r} are one tied tensor; tied weights are not supported (the store "
                       "writes each tensor once and every pruned weight has its own mask): untie them")
            first[key] = n
    names, params = M.prunable(model), dict(model.named_parameters())
    if hasattr(model, "prunable_names"):  # the module's own list: a slip in it is named as such
        check_prunable_names(model, names, refuse)
    if not names:
        refuse("has no Linear or Conv1d/2d/3d layer to prune")
    for n in names:
        if n not in params:
            refuse(f"{n!r} is not a plain parameter (held by torch.nn.utils.prune or a parametrization such as "
                   "weight_norm): remove that first, the masks here do its work")
        if not params[n].requires_grad:
            refuse(f"{n!r} is frozen (requires_grad=False); every Linear/Conv weight trains under its mask: "
                   "unfreeze it, or name the layers to prune in a prunable_names() method of the module")
    # a batch, copied (a forward that changes it is caught below); a batch-sized one, so that layers some examples
    # use (a mixture of experts) are likely called
    x, y = dataset.train.x[:64].clone(), dataset.train.y[:64]
    probe = copy.deepcopy(model).to(x.device)  # a copy: the user's module and its buffers stay as they are
    called: list[str] = []  # the prunable layers in the order forward calls them
    for n in names:
        if M.owner(probe, n) is not probe:  # (the module's own hook runs after every layer: it tells no order)
            M.owner(probe, n).register_forward_hook(lambda *_, n=n: called.append(n))
    logits = f"of logits, shape (N, {dataset.num_classes})" if y.dim() == 1 else "of logits"
    for training in (True, False):  # training steps in train mode, evaluations in eval mode
        mode = "" if training else "in eval mode, "
        try:
            out = probe.train(training)(x)
        except Exception as e:
            refuse(f"{mode}forward failed on a batch of the data set's inputs, shape {tuple(x.shape)} "
                   f"{str(x.dtype).replace('torch.', '')} ({said(e)})")
        if not torch.equal(x, dataset.train.x[:len(x)]):
            refuse("forward changes its input in place (x.mul_(), x += ...); evaluation passes it views of the data "
                   "set, which would change with every evaluation: use out-of-place operations (x = x * 2)")
        if not isinstance(out, torch.Tensor):
            refuse(f"{mode}forward returns a {type(out).__name__}; it must return one tensor {logits}: return only "
                   "the logits")
        if y.dim() == 1 and (out.dim() != 2 or len(out) != len(x) or out.shape[1] < dataset.num_classes):
            flat = " (e.g. return out.flatten(1))" if out.dim() > 2 and len(out) == len(x) else ""
            refuse(f"{mode}forward returns shape {tuple(out.shape)} for {len(x)} examples; the labels run "
                   f"0..{dataset.num_classes - 1}: it must return logits of shape (N, {dataset.num_classes}) (or more "
                   f"outputs){flat}")
        if training:  # the trainer masks every Linear/Conv weight's gradient: each must get one
            try:
                out.float().sum().backward()
            except Exception as e:
                refuse(f"backward from forward's output failed ({said(e)})")
            grads = dict(probe.named_parameters())
            dead = next((n for n in names if grads[n].grad is None), None)
            if dead is not None:  # (on a batch of 64: a layer only some examples use, a mixture's expert, is
                # likely used; a step that leaves one out gives it no gradient and no update, as the trainer sees)
                refuse(f"{dead!r} gets no gradient from forward's output (its layer is never called, or its "
                       "result is not used); every Linear/Conv weight trains under its mask: remove that layer or "
                       "use it")
    # (an output layer used through F.linear(x, self.fc.weight), a cosine head, is never called: nothing to check)
    if names[-1] in called and called[-1] != names[-1]:
        if hasattr(model, "prunable_names"):
            refuse(f"its forward ends in {called[-1]!r}, but prunable_names() lists {names[-1]!r} last, which is "
                   f"taken as the output layer (pruned at --output-fraction): list {called[-1]!r} last in "
                   "prunable_names()")
        refuse(f"its forward ends in {called[-1]!r}, but {names[-1]!r} is its last Linear/Conv in module order, "
               "which is taken as the output layer (pruned at --output-fraction): create the output layer last in "
               "__init__")
    # last, once the checks above passed: a training step's own batch size (BatchNorm1d refuses a batch of 1 in
    # train mode)
    if batch_size < len(x):
        try:
            probe.train()(x[:batch_size])
        except Exception as e:
            refuse(f"forward failed on a batch of {batch_size} (train.batch_size) in train mode ({said(e)}): train with a "
                   "batch size it takes (BatchNorm needs 2 examples at least)")


def check_prunable_names(model: nn.Module, names, refuse) -> None:
    """`refuse` a module's prunable_names() that is not a list of distinct names of tensors it holds."""
    listed = "a list of the state-dict names of the weights to prune, in forward order, the output layer last"
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        refuse(f"prunable_names() returns a {type(names).__name__}; it must return {listed}")
    if not names:
        refuse(f"prunable_names() returns no names; it must return {listed}")
    for i, n in enumerate(names):
        module, _, attr = n.rpartition(".")
        try:  # a parameter, or a weight torch.nn.utils.prune or a parametrization computes (refused after this)
            held = isinstance(getattr(model.get_submodule(module), attr), torch.Tensor)
        except AttributeError:
            held = False
        if not held:
            params = [p for p, _ in model.named_parameters()]
            refuse(f"prunable_names() gives {n!r}, which is not a parameter of it (its parameters: "
                   f"{', '.join(params[:8])}{', ...' if len(params) > 8 else ''})")
        if n in names[:i]:
            refuse(f"prunable_names() gives {n!r} twice; each weight has one mask: name it once")


def _model_plan(config: RunConfig, dataset: data_mod.Dataset, user_model: nn.Module | None):
    """(make_model, reinit, run_id, model_name, legacy_id) for a registry model or a user's own module; legacy_id:
    the id the code before 2026-12-02 gave the same module's run (CONFIG_ID-customHASH, the hash without the
    module's structure), which `open_context` resumes if it is stored and the new id is not.

    A user's module is part of the experiment's identity: its class, printed structure, parameter shapes and
    initial values are hashed into the run id, so a different module never resumes someone else's run.
    """
    if user_model is None:
        def make_model():
            return models.build(config.model, dataset.input_shape, dataset.num_classes, config.seed)

        def reinit(model, seed):
            models.initialise(model, config.model.init, torch.Generator().manual_seed(seed))

        return make_model, reinit, config.run_id, config.model.model, None

    for key, value in config.non_default().get("model", {}).items():  # would change the run id, not the run
        if key == "model" and is_text_dataset(config.data.dataset):
            continue  # text data is paired with a transformer (engine.text.check_pairing): its tokenizer's ids
        if key == "bayesian":
            raise ConfigError("model.bayesian", value, "Bayesian layers are made from registry models only "
                              "(engine.bayes converts their Linear/Conv2d), not from an own module: leave it out, "
                              "or use a registry model (--model mlp --bayesian)")
        raise ConfigError(f"model.{key}", value, "an own module (model=...) reads no model.* setting: its "
                          "architecture and initial weights are its own")
    check_own_module(user_model, dataset, config.train.batch_size)
    template = copy.deepcopy(user_model).cpu()
    # The module's identity: its class, its printed structure (layer types and their settings: a ReLU swapped for
    # a Tanh is another experiment) and its state (names, shapes, initial values). Code inside forward() is not
    # part of it: a changed forward needs a new class name (or a fresh runs dir) to get a new run.
    h = hashlib.sha256(type(user_model).__qualname__.encode())
    legacy = hashlib.sha256(type(user_model).__qualname__.encode())  # (the id before the structure was hashed)
    h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(template)).encode())  # (a Lambda(<function f at 0x7f..>))
    for k, v in template.state_dict().items():
        for one in (h, legacy):
            one.update(k.encode())
            one.update(str(tuple(v.shape)).encode())
            one.update(v.detach().float().numpy().tobytes())
    name = f"custom:{type(user_model).__name__}"
    # METHOD-CLASS-DATASET-HASH-customHASH: `lottery list` shows whose module it is (not the config's unused
    # registry model); the dataset and settings' hash are the config's own id's last two parts
    *_, dataset_part, digest = config.run_id.split("-")
    cls = re.sub(r"[^a-z0-9]+", "", type(user_model).__name__.lower())[:24] or "module"
    run_id = f"{config.prune.method}-{cls}-{dataset_part}-{digest}-custom{h.hexdigest()[:8]}"

    def reinit(model, seed):
        models.initialise(model, "torch_default", torch.Generator().manual_seed(seed))

    return (lambda: copy.deepcopy(template)), reinit, run_id, name, f"{config.run_id}-custom{legacy.hexdigest()[:8]}"


# ---------------------------------------------------------------- entry point
def open_context(config: RunConfig, *, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR, model: nn.Module | None = None,
                 on_event: ev.Sink = None, cancel=None) -> RunContext:
    """Validate `config`, load its data and open (or create) its run directory with theta_0 in place.

    Everything that can fail on bad input fails here, before the store is touched. Analyses use it to
    train more variants of a stored run (e.g. sanity controls) with the same machinery as `run`.
    """
    if not isinstance(config, RunConfig):
        raise ConfigError("config", type(config).__name__, "must be an engine.RunConfig")
    # (else a wrong kind fails at the first event or step, once the run's folder is stored)
    if on_event is not None and not callable(on_event):
        raise ConfigError("on_event", on_event, "must be a function of one event (e.g. print), or None")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise ConfigError("cancel", cancel, "must have is_set() (a threading.Event), or None")
    if isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile(net): its weights are net's, under
        model = model._orig_mod  # net's names (the README's Net().load_state_dict(ticket)); trained uncompiled
    method_spec(config)
    device = resolve_device(config.device)
    root = check_writable(runs_dir)
    dataset = data_mod.load(config.data, device)
    make_model, reinit, run_id, model_name, legacy_id = _model_plan(config, dataset, model)
    if legacy_id and not RunStore(root, run_id).exists() and RunStore(root, legacy_id).exists():
        run_id = legacy_id  # the same module's run, stored under the id the code before this one gave it
    structured.check_model(config.prune, make_model())
    spec = method_spec(config)
    if spec.check is not None:  # a method's own requirements, before anything is written
        spec.check(config, make_model())

    store = RunStore(root, run_id)
    ctx = RunContext(config, dataset, store, device, make_model, reinit, on_event, cancel)
    ctx.model_name, ctx.own_module = model_name, model is not None
    point = config.prune.rewind_point
    if point.kind == "iter" and point.iteration >= ctx.total_steps:
        raise ConfigError("prune.rewind", config.prune.rewind,
                          f"rewind iteration must be below the {ctx.total_steps} training iterations")
    if store.exists():  # resume: same experiment? (device, data_dir, download may differ: they change no result)
        stored = store.config()
        if RunConfig.from_dict({k: v for k, v in stored.items() if k != "custom_model"}).non_default() != \
                config.non_default() or stored.get("custom_model") != (model_name if model is not None else None):
            raise LotteryError(f"run {run_id} exists with a different config; refusing to mix them")
    store.create(config.to_dict() | ({"custom_model": model_name} if model is not None else {}))
    store.check_data(config.data.dataset, dataset.fingerprint)  # a resume on changed data is refused
    init_path = store.weights_path("init")
    if init_path.exists():
        ctx.init_weights = load_tensors(init_path, device)
    else:
        ctx.init_weights = {k: v.detach().to(device) for k, v in make_model().state_dict().items()}
        save_tensors(init_path, ctx.init_weights)
    if store.weights_path("rewind").exists():
        ctx.rewind_weights = load_tensors(store.weights_path("rewind"), device)
    return ctx


def run(config: RunConfig, on_event: ev.Sink = None, cancel=None, *, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
        model: nn.Module | None = None, pool=None) -> dict:
    """Run `config` to completion (or resume it) and return its summary.

    `on_event` receives typed events (engine.events); `cancel` is anything with `is_set()` (a
    `threading.Event`): when set, the run stops after the current step with status "cancelled" and
    keeps its completed levels. `model` is an optional user `nn.Module` used instead of the registry's;
    its current weights are the initialisation. Bad settings raise ConfigError before anything is written.
    `pool`: an engine.side_by_side.Rendezvous its trainings batch with (runs side by side in threads).
    """
    ctx = open_context(config, runs_dir=runs_dir, model=model, on_event=on_event, cancel=cancel)
    ctx.pool = pool
    spec = method_spec(config)
    store, run_id = ctx.store, ctx.store.run_id
    store.lock()
    status, error = "running", None
    # Resuming a completed run only reads it: if that fails (a damaged file) or is cancelled, its summary and
    # metrics stay exactly as they were, unless this resume stored a training of its own.
    completed, saved = store.status() == "completed", []

    def summarise() -> dict:
        return build_summary(config, store, status, model_name=ctx.model_name, device=str(ctx.device), error=error)

    def on_saved() -> None:
        saved.append(True)
        store.write_summary(summarise())

    try:
        per_level = 1 + len(trained_controls(config))
        done = sum(len(store.records(v)) for v in ("ticket", *trained_controls(config)))
        search_steps = 0 if store.level_record("ticket", 1) else \
            spec.search_epochs(config) * ctx.total_steps // config.train.epochs
        trainings = 1 + spec.levels(config) * per_level + spec.own_trainings(config)
        ctx.emit(ev.RunStarted(run_id, config.prune.method, trainings, ctx.total_steps, done, search_steps))
        if not completed:
            store.write_summary(summarise())
        ctx.on_saved = on_saved
        ctx.dense = ctx.train_ticket(0, M.ones(ctx.model_with(ctx.init_weights)), ctx.init_weights, 0)
        spec.run(ctx)
        status = "completed"
        summary = summarise()
        store.write_summary(summary)  # before the lock goes: nobody sees a finished run as interrupted
    except (RunCancelled, KeyboardInterrupt) as e:
        status = "completed" if completed and not saved else "cancelled"
        if status == "cancelled":
            store.write_summary(summarise())
        ctx.emit(ev.RunStopped(run_id, len(store.records("ticket"))))
        if isinstance(e, KeyboardInterrupt):
            raise
        return summarise()
    except BaseException as e:
        error = f"{type(e).__name__}: {e}".strip().split("\n")[0]  # one line: clients see it
        if completed and not saved:
            ctx.emit(ev.RunFailed(run_id, error))
            raise
        status = "failed"
        store.write_summary(summarise())
        ctx.emit(ev.RunFailed(run_id, error))
        if not isinstance(e, LotteryError):
            store.append_metrics({"type": "error", "traceback": traceback.format_exc()})
        raise
    finally:
        store.unlock()
    ctx.emit(ev.RunFinished(run_id, summary))
    return summary
