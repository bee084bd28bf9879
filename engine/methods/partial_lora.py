"""Partial-LoRA (Damirchi et al., "The Quest for Winning Tickets in Low-Rank Adapters", arXiv 2512.22495):
sparse LoRA adapters whose per-layer sparsity comes from the pre-trained weights' task-relevant subspaces.

What we could read of the paper: the search tool here holds only its abstract and introduction (arXiv
abstract and HTML first page, several summaries), not its method section. Their claims: LoRA adapters
randomly pruned to a task-specific per-layer sparsity match dense adapters (up to 87% fewer trainable
parameters), and how much sparsity each layer gets matters more than which entries are kept; Partial-LoRA
"identifies sparse low-rank parameters linked to key subspaces of pre-trained weights". The exact ratio rule
was NOT available to us, so the rule below is our own reading of that sentence, chosen because it uses only
the pre-trained weights and a batch of task inputs (no fine-tuning) and gives each layer a ratio in (0, 1]:

  For an adapted layer y = W x (W: out x in, SVD W = U S V^T), the task's inputs X (a batch of training
  examples through the frozen pre-trained model, captured at that layer) excite W's right singular directions
  with energies e_i = ||S_i V_i^T X||^2 (what each direction contributes to the layer's output on this task).
  The layer's task-relevant subspace is the fewest directions whose energies add up to `capture` (default
  0.9) of the total; its subspace ratio = that count / min(out, in). A layer whose output on the task lives in
  a few directions gets a sparse adapter; one that uses many gets a dense one.

`lottery run --method partial-lora --lora-rank 8 --lora-rule subspace-random --density 0.25`:
1. level 0: the runner's full fine-tune of every weight (the reference everything else is measured against).
2. LoRA adapters (`peft` LoraConfig, alpha = rank, no dropout) on the model's prunable modules (Q, K, V,
   attention output, FFN in/out); the encoder is frozen, the task head (what is not under `bert.`) trains.
   Every adapter starts from one seeded initialisation (the ticket's theta_0).
3. the budget: --density is the share of the rank-r adapters' entries that train (--lora-budget adapter;
   1 = dense LoRA), or the share of the model's prunable weights (--lora-budget model: lota's and bert-imp's
   unit, so `lottery compare --methods lota,partial-lora --lora-budget model` compares equal trainable-parameter
   budgets).
4. per-layer ratios at that budget: `uniform-random` gives every layer the same ratio; the `subspace-*` rules
   scale the subspace ratios by one factor (capped at 1) until the budget is met, so every rule at one
   --density trains the same number of entries (up to one entry of rounding per matrix). Both lora_A and
   lora_B of a layer get its ratio, each an exact count round(ratio x entries) (at least 1).
5. which entries: `*-random` draws them with the run's seed (the paper's winning tickets); `subspace-magnitude`
   keeps the largest |entries| of the dense adapter (variant `dense-lora`, trained first from the same
   initialisation) and restarts from that initialisation: one-shot IMP on the adapters.
6. the ticket (level 1) trains with the engine's masks: pruned adapter entries are zeroed before training
   and their gradients multiplied by 0 in engine.trainer, so Adam's state for them stays 0 and they stay
   exactly 0 (--weight-decay must be 0). At the end each adapter is merged into its base weight
   (W + alpha/r B A, peft's LoraLayer.merge) and peft's wrappers removed: the stored weights are a plain model
   of the run's architecture (what `lottery export`, the analyses and the app load); the stored mask is the
   adapter mask ({adapter parameter name: bool}); the trained adapter factors are kept beside them
   (adapters.VARIANT.safetensors) and the ratios, counts and accuracies in the run's "partial-lora" record.

`compare_rules` runs every rule from one base without the full fine-tune (bench/science_ks_lora.py uses it for
the several-seed comparison; the method and it share every function below).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import masks as M
from .. import trainer
from ..config import option, validate
from ..errors import ConfigError
from ..registry import ANALYSES, METHODS, AnalysisSpec, MethodSpec
from ..runner import MaskSearch
from ..seeding import derive_seed
from ..store import load_tensors, save_tensors
from ..transformer import IMPORT_LOCK

DENSE_RANKS = (4, 8, 16)
CAPTURE = 0.9
RULES = ("subspace-random", "uniform-random", "subspace-magnitude")
BUDGETS = ("adapter", "model")
RECORD = "partial-lora"
PROBE = 64  # training examples whose activations give the subspace ratios
ENCODER = "bert."  # what adapter training freezes (heads train in full)


@dataclass(frozen=True)
class PartialLoRAOptions:
    lora_rank: int = option(8, "partial-lora: LoRA rank of every adapter (1 up to the smallest adapted layer's "
                            "size)", lo=1)
    lora_rule: str = option("subspace-random", "partial-lora: which adapter entries train: random at the per-layer "
                            "subspace ratios, random at one uniform ratio, or the largest |entries| of a dense "
                            "adapter trained first at the subspace ratios (--density 1: dense LoRA)",
                            choices=list(RULES))
    lora_capture: float = option(CAPTURE, "partial-lora: share of each layer's output energy on the task that "
                                 "its subspace carries (shapes the subspace ratios)", lo=0, hi=1, lo_open=True)
    lora_budget: str = option("adapter", "partial-lora: what --density counts: the share of the rank-r adapters' "
                              "entries that train (1: dense LoRA) or of the model's prunable weights (equal "
                              "trainable-parameter budgets with lota in lottery compare)", choices=list(BUDGETS))
    lora_reference: bool = option(True, "partial-lora: also train the dense adapter of the same rank (variant "
                                  "dense-lora; always for subspace-magnitude)")

    def __post_init__(self):
        validate(self, "prune.")


# ---------------------------------------------------------------- adapters through peft
def rank_limit(model: nn.Module) -> int:
    params = dict(model.named_parameters())
    return min(min(params[n].shape) for n in M.prunable(model))


def check_rank(model: nn.Module, rank) -> None:
    """LoRA rank must be an integer in 1..min(out, in) of every adapted layer."""
    limit = rank_limit(model)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
        raise ConfigError("prune.lora_rank", rank, f"must be an integer from 1 to {limit} (the smallest adapted "
                          "layer's size)")


def check_ratio(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(field, value, "must be a number in (0, 1]")


def targets(model: nn.Module) -> list[str]:
    """The module names of the prunable Linear layers (what LoraConfig's target_modules gets)."""
    return [n[:-len(".weight")] for n in M.prunable(model)]


def inject(model: nn.Module, rank: int, seed: int) -> nn.Module:
    """Put LoRA adapters (rank `rank`, alpha = rank) on `model`'s prunable layers, in place; only the adapters
    and the task head (what is not under `bert.`) train. lora_A's draw comes from `seed`; lora_B starts at 0."""
    with IMPORT_LOCK:  # peft's first import resolves transformers' lazy names: not thread-safe
        from peft import LoraConfig, inject_adapter_in_model

    check_rank(model, rank)
    names = targets(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=names, lora_dropout=0.0), model)
    for n, p in model.named_parameters():
        p.requires_grad_(is_adapter(n) or not n.startswith(ENCODER))
    return model


def add_lora(model: nn.Module, rank: int, seed: int = 0) -> nn.Module:
    """A copy of `model` with adapters (see `inject`)."""
    check_rank(model, rank)
    return inject(copy.deepcopy(model), rank, seed)


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if is_adapter(n)}


def layer_of(adapter_name: str) -> str:
    """"bert.encoder.layer.0.attention.self.query.lora_A.default.weight" -> its base layer's weight name
    "bert.encoder.layer.0.attention.self.query.weight" (without peft's wrapper)."""
    return adapter_name.split(".lora_")[0] + ".weight"


def trainable_count(model: nn.Module, mask: M.Mask | None = None) -> int:
    """Adapter entries that train (all of them, or those the mask keeps)."""
    if mask is not None:
        return M.kept(mask)
    return sum(p.numel() for p in adapter_params(model).values())


def prunable_count(model: nn.Module) -> int:
    """Entries of the model's prunable weights (what lota's and bert-imp's --density counts)."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in M.prunable(model))


def adapter_entries(model: nn.Module, rank: int) -> int:
    """Entries of rank-`rank` adapters on `model`'s prunable layers: r (in + out) per layer."""
    params = dict(model.named_parameters())
    return sum(rank * sum(params[n].shape) for n in M.prunable(model))


@torch.no_grad()
def merge_in_place(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight (peft's LoraLayer.merge: W + scale B A) and put that base
    Linear back in place of peft's wrapper, so nothing of the adapter is left to run."""
    with IMPORT_LOCK:
        from peft.tuners.lora import LoraLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, m in wrapped:
        m.merge()
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, m.base_layer)
    return model


def merge(model: nn.Module) -> nn.Module:
    """A plain copy of `model` with its adapters merged (see merge_in_place)."""
    return merge_in_place(copy.deepcopy(model))


# ---------------------------------------------------------------- per-layer ratios
@torch.no_grad()
def subspace_ratios(model: nn.Module, x: torch.Tensor, capture: float = CAPTURE) -> dict[str, float]:
    """{prunable weight name: ratio} by the rule in the module docstring, from `model`'s pre-trained weights
    and the inputs each layer sees on the examples `x`."""
    check_ratio("prune.lora_capture", capture)
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    hooks = [modules[t].register_forward_hook(lambda m, a, out, t=t: inputs.__setitem__(t, a[0].detach()))
             for t in targets(model)]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    ratios = {}
    for t in targets(model):
        w = modules[t].weight.detach().double()
        _, s, vh = torch.linalg.svd(w, full_matrices=False)
        acts = inputs[t].reshape(-1, w.shape[1]).double()
        energy = ((acts @ vh.T) * s).pow(2).sum(0)
        ordered = energy.sort(descending=True).values.cumsum(0)
        k = int((ordered < capture * ordered[-1]).sum()) + 1
        ratios[f"{t}.weight"] = min(1.0, k / len(s))
    return ratios


def count(ratio: float, numel: int) -> int:
    """Entries a matrix of `numel` keeps at `ratio` (at least 1); a ratio outside (0, 1] is a one-line error."""
    check_ratio("prune.lora_ratio", ratio)
    return max(1, round(ratio * numel))


def budget_of(ratios: dict[str, float], shapes: dict[str, torch.Size]) -> int:
    """Adapter entries kept at per-layer `ratios` ({adapter name: shape} the adapters)."""
    return sum(count(ratios[layer_of(n)], s.numel()) for n, s in shapes.items())


def uniform_like(ratios: dict[str, float], adapters: dict[str, torch.Tensor]) -> dict[str, float]:
    """One ratio for every layer with the same total budget as `ratios` over these adapters."""
    total = sum(p.numel() for p in adapters.values())
    return {layer: budget_of(ratios, {n: p.shape for n, p in adapters.items()}) / total for layer in ratios}


def scaled(ratios: dict[str, float], shapes: dict[str, torch.Size], density: float) -> dict[str, float]:
    """`ratios` times one factor c, each capped at 1, with c chosen (bisection) so that the adapters keep
    `density` of their entries: the shape of the subspace rule at a given budget."""
    check_ratio("prune.density", density)
    sizes: dict[str, int] = {}
    for n, s in shapes.items():
        sizes[layer_of(n)] = sizes.get(layer_of(n), 0) + s.numel()
    target = density * sum(sizes.values())

    def kept(c):
        return sum(min(1.0, c * ratios[layer]) * size for layer, size in sizes.items())

    lo, hi = 0.0, 1.0 / min(ratios.values())  # kept(hi) = every entry
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < target else (lo, mid)
    return {layer: min(1.0, hi * r) for layer, r in ratios.items()}


# ---------------------------------------------------------------- masks on the adapters
def random_mask(adapters: dict, ratios: dict[str, float], generator: torch.Generator) -> M.Mask:
    """Exactly count(ratio, entries) random entries of each adapter matrix (`adapters`: {name: tensor or
    shape})."""
    out = {}
    for n, p in adapters.items():
        shape = torch.Size(getattr(p, "shape", p))
        keep = count(ratios[layer_of(n)], shape.numel())
        flat = torch.zeros(shape.numel(), dtype=torch.bool)
        flat[torch.randperm(shape.numel(), generator=generator)[:keep]] = True
        out[n] = flat.view(shape)
    return out


def magnitude_mask(trained: dict[str, torch.Tensor], ratios: dict[str, float]) -> M.Mask:
    """The largest |entries| of a trained adapter, count(ratio, entries) per matrix."""
    return {n: M.keep_top(v.detach().abs().cpu(), torch.ones(v.shape, dtype=torch.bool),
                          count(ratios[layer_of(n)], v.numel()))
            for n, v in trained.items()}


def train_adapter(model: nn.Module, data, cfg, mask: M.Mask | None, *, seed: int) -> trainer.TrainResult:
    """Train `model`'s adapters (and head) in place; a mask's pruned entries are zeroed first and get no
    gradient, so they stay exactly 0."""
    if cfg.weight_decay != 0:
        raise ConfigError("train.weight_decay", cfg.weight_decay, "partial-lora needs 0: coupled weight decay "
                          "would move pruned adapter entries")
    if mask is not None:
        M.apply(model, mask)
    return trainer.train(model, data, cfg, mask, seed=seed)


class AdapterTraining(MaskSearch):
    """How the runner trains an adapter ticket: `prepare` injects the adapters into the model it built from the
    start weights, zeroes the mask's pruned entries and freezes the encoder (the trainer multiplies the
    adapters' gradients by the mask); `finish` saves the trained factors to `save_to`, merges them into the
    base weights and removes peft's wrappers, so what the runner stores is a plain model."""

    def __init__(self, rank: int, mask: M.Mask, seed: int, save_to=None):
        self.rank, self.mask, self.seed, self.save_to = rank, mask, seed, save_to

    def prepare(self, model: nn.Module):
        inject(model, self.rank, self.seed)
        M.apply(model, self.mask)
        return self.mask

    def finish(self, model: nn.Module) -> M.Mask:
        if self.save_to is not None:
            save_tensors(self.save_to, {n: p.detach() for n, p in adapter_params(model).items()})
        merge_in_place(model)
        for p in model.parameters():
            p.requires_grad_(True)
        return self.mask


# ---------------------------------------------------------------- the method
def adapter_density(config, model: nn.Module) -> float:
    """The share of the rank-r adapters' entries that train, from --density and --lora-budget."""
    opts = config.prune.method_options()
    if opts.lora_budget == "adapter":
        return config.prune.density
    return config.prune.density * prunable_count(model) / adapter_entries(model, opts.lora_rank)


def ratios_for(rule: str, model: nn.Module, x: torch.Tensor, shapes: dict, density: float, capture: float):
    """(per-layer ratios the ticket uses, the raw subspace ratios or None) for `rule` at adapter `density`."""
    if rule == "uniform-random":
        return {layer_of(n): density for n in shapes}, None
    sub = subspace_ratios(model, x, capture)
    return scaled(sub, shapes, density), sub


def partial_lora(ctx) -> None:
    opts: PartialLoRAOptions = ctx.options
    base = ctx.init_weights
    model = ctx.model_with(base)
    density = adapter_density(ctx.config, model)
    init_seed = derive_seed(ctx.config.seed, "lora-init")
    lora = inject(copy.deepcopy(model), opts.lora_rank, init_seed)
    shapes = {n: p.shape for n, p in adapter_params(lora).items()}
    full = {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    x = ctx.data.train.x[:PROBE].to(ctx.device)
    ratios, sub = ratios_for(opts.lora_rule, model, x, shapes, density, opts.lora_capture)
    dense_lora = None
    magnitude = opts.lora_rule == "subspace-magnitude" and density < 1
    if density < 1 and (opts.lora_reference or magnitude):
        path = ctx.store.weights_path("adapters.dense-lora")
        dense_lora = ctx.train_variant("dense-lora", 1, full, base, 0,
                                       search=AdapterTraining(opts.lora_rank, full, init_seed, path))
    if ctx.store.level_record("ticket", 1):
        mask = ctx.store.load_level("ticket", 1, "cpu")[0]
    elif density >= 1:
        mask = full
    elif magnitude:
        mask = magnitude_mask(load_tensors(ctx.store.weights_path("adapters.dense-lora")), ratios)
    else:
        mask = random_mask(shapes, ratios, torch.Generator().manual_seed(derive_seed(ctx.config.seed, "lora-mask")))
    mask = {n: m.to(ctx.device) for n, m in mask.items()}
    ticket = ctx.train_variant("ticket", 1, mask, base, 0, search=AdapterTraining(
        opts.lora_rank, mask, init_seed, ctx.store.weights_path("adapters.ticket")))
    ctx.store.save_analysis(RECORD, {
        "analysis": RECORD, "rank": opts.lora_rank, "rule": opts.lora_rule if density < 1 else "dense",
        "budget": opts.lora_budget, "density": ctx.config.prune.density, "adapter_density": min(1.0, density),
        "capture": opts.lora_capture,
        "trainable": M.kept(ticket.mask), "adapter_entries": M.total(ticket.mask),
        "prunable_weights": prunable_count(model),
        "layers": {layer: {"ratio": ratios[layer] if density < 1 else 1.0,
                           "subspace": sub[layer] if sub is not None else None,
                           "kept": sum(int(m.sum()) for n, m in ticket.mask.items() if layer_of(n) == layer),
                           "entries": sum(m.numel() for n, m in ticket.mask.items() if layer_of(n) == layer)}
                   for layer in dict.fromkeys(layer_of(n) for n in shapes)},
        "test_accuracy": ticket.record["test_accuracy"],
        "full_test_accuracy": ctx.dense.record["test_accuracy"],
        "dense_lora_test_accuracy": dense_lora.record["test_accuracy"] if dense_lora is not None else None,
        "dense_lora_trainable": M.total(full),
    })


def check(config, model) -> None:
    if config.train.weight_decay != 0:
        raise ConfigError("train.weight_decay", config.train.weight_decay, "partial-lora needs 0: coupled weight "
                          "decay would move pruned adapter entries")
    if not any(n.startswith(ENCODER) for n, _ in model.named_parameters()):
        raise ConfigError("model.model", config.model.model, "partial-lora adapts a pre-trained transformer: --model "
                          "minilm, bert-tiny or hf:PATH")
    opts = config.prune.method_options()
    check_rank(model, opts.lora_rank)
    if adapter_density(config, model) > 1:
        most = adapter_entries(model, opts.lora_rank) / prunable_count(model)
        raise ConfigError("prune.density", config.prune.density, f"rank-{opts.lora_rank} adapters hold {most:.4g} "
                          "of the prunable weights: at most that with --lora-budget model (or raise --lora-rank)")


def needs_reference(config) -> bool:
    opts = config.prune.method_options()
    return (opts.lora_reference or opts.lora_rule == "subspace-magnitude") and not \
        (opts.lora_budget == "adapter" and config.prune.density >= 1)


def search_cost(summary: dict, level: dict, store) -> tuple[int, float]:
    """Finding a magnitude mask costs the dense adapter's training; a random one (and the ratios) nothing."""
    if summary["config"].get("prune", {}).get("lora_rule") != "subspace-magnitude":
        return 0, 0.0
    r = store.level_record("dense-lora", 1)
    return (r["iterations"], r["train_seconds"]) if r else (0, 0.0)


def format_record(name: str, r: dict) -> str:
    # the levels' density is the adapter mask's (kept of the adapter entries); under --lora-budget model the user
    # asked a share of the prunable weights, which the line gives first, naming which is which
    adapter = f"{r['trainable']} of {r['adapter_entries']} adapter entries train ({r['adapter_density']:.3f}"
    model = f"{r['trainable'] / r['prunable_weights']:.4f} of the {r['prunable_weights']} prunable weights"
    budget = (f"{model} train (--lora-budget model, asked {r['density']:g}): {adapter}, the levels' density)"
              if r.get("budget") == "model" else f"{adapter}; {model})")
    lines = [f"partial-lora: rank {r['rank']}, rule {r['rule']}, {budget}",
             f"test accuracy {r['test_accuracy']:.3f}; full fine-tune {r['full_test_accuracy']:.3f}"
             + (f"; dense LoRA (rank {r['rank']}, {r['dense_lora_trainable']} entries) "
                f"{r['dense_lora_test_accuracy']:.3f}" if r.get("dense_lora_test_accuracy") is not None else "")]
    ratios = [(layer.replace("bert.encoder.layer.", "").replace(".weight", ""), v["ratio"])
              for layer, v in r["layers"].items()]
    lines.append("per-layer ratio: " + ", ".join(f"{n} {v:.2f}" for n, v in ratios))
    return "\n".join(lines)


METHODS.register("partial-lora", "Partial-LoRA: LoRA adapters on the frozen encoder with masks at per-layer ratios "
                 "from the pre-trained weights' task subspaces (random, uniform or magnitude entries; Damirchi et al. "
                 "2025)")(
    MethodSpec(partial_lora, options=PartialLoRAOptions, trains_controls=False, check=check,
               unread={**dict.fromkeys(("prune.scope", "prune.prune_fraction", "prune.output_fraction"),
                                       "masks its adapters at per-layer ratios from --density and --lora-rule in one "
                                       "step"),
                       "prune.rewind": "trains its adapters from the base weights at step 0"},
               # the dense adapter (variant dense-lora) is a training of its own: counted once, done when reused
               own_trainings=lambda config: 1 if needs_reference(config) else 0,
               search_cost=search_cost))
ANALYSES.register(RECORD, "Partial-LoRA's per-layer ratios, counts and accuracies (written by the method)")(
    AnalysisSpec(format_record))


# ---------------------------------------------------------------- the comparison without the full fine-tune
def compare_rules(model: nn.Module, data, cfg, *, rank: int = 16, densities=(0.25,), seed: int = 0,
                  capture: float = CAPTURE, dense_ranks=DENSE_RANKS, probe: int = PROBE) -> list[dict]:
    """Accuracy vs trainable adapter entries for: dense LoRA at `dense_ranks`; and at rank `rank`, for each
    adapter density: random masks at the scaled subspace ratios, random masks at one uniform ratio, magnitude
    masks (from the dense rank-`rank` adapter) at the subspace ratios. `model`: the base model with its task
    head. Returns one row per (rule, density)."""
    rows = []
    dense_start = None
    for r in sorted(set(dense_ranks) | {rank}):
        m = add_lora(model, r, seed)
        if r == rank:
            dense_start = copy.deepcopy(m)
        res = train_adapter(m, data, cfg, None, seed=seed)
        if r == rank:
            dense_trained = {n: p.detach().clone() for n, p in adapter_params(m).items()}
        if r in dense_ranks:
            rows.append({"rule": "dense", "rank": r, "density": 1.0, "trainable": trainable_count(m),
                         "test_accuracy": res.final["test_accuracy"]})
    shapes = {n: p.shape for n, p in adapter_params(dense_start).items()}
    sub = subspace_ratios(model, data.train.x[:probe], capture)
    g = torch.Generator().manual_seed(seed)
    for d in densities:
        at = scaled(sub, shapes, d)
        masks = {"subspace-random": random_mask(shapes, at, g),
                 "uniform-random": random_mask(shapes, {layer: d for layer in at}, g),
                 "subspace-magnitude": magnitude_mask(dense_trained, at)}
        for rule, mask in masks.items():
            m = copy.deepcopy(dense_start)
            res = train_adapter(m, data, cfg, mask, seed=seed)
            rows.append({"rule": rule, "rank": rank, "density": d, "trainable": trainable_count(m, mask),
                         "test_accuracy": res.final["test_accuracy"],
                         "layers": {layer: float(v) for layer, v in at.items()} if rule != "uniform-random"
                         else {layer: d for layer in at}})
    return rows
