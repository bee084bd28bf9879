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
  0.9) of the total; its ratio = that count / min(out, in). A layer whose output on the task lives in a few
  directions gets a sparse adapter; one that uses many gets a dense one.

The adapters (`peft`, LoraConfig on the model's prunable modules: Q, K, V, attention output, FFN in/out) are
masked with the engine's mask machinery: a mask is {adapter parameter name: bool tensor}, masked entries are
zeroed before training and their gradients multiplied by 0 in engine.trainer (so Adam's state for them stays
0 and they stay exactly 0; weight decay must be 0). Both lora_A and lora_B of a layer get that layer's ratio,
each with an exact count round(ratio x entries) (at least 1). Masking rules at the same per-layer ratios:
random (the paper's winning tickets), magnitude (the largest |entries| of a dense adapter trained first,
restarted from the adapter's initialisation: one-shot IMP on the adapters); at a uniform ratio equal to the
overall density of the subspace ratios: random. Dense LoRA at ranks 4/8/16 is the reference.

`compare_rules` runs the comparison (bench/science_ks_lora.py and the tests call it); this is a library of
experiments, not yet a `lottery run --method`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import masks as M
from .. import trainer
from ..errors import ConfigError

DENSE_RANKS = (4, 8, 16)
CAPTURE = 0.9


def check_rank(model: nn.Module, rank) -> None:
    """LoRA rank must be an integer in 1..min(out, in) of every adapted layer."""
    limit = min(min(p.shape) for n, p in model.named_parameters() if n in set(M.prunable(model)))
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
        raise ConfigError("prune.lora_rank", rank, f"must be an integer from 1 to {limit} (the smallest adapted "
                          "layer's size)")


def check_ratio(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(field, value, "must be a number in (0, 1]")


def targets(model: nn.Module) -> list[str]:
    """The module names of the prunable Linear layers (what LoraConfig's target_modules gets)."""
    return [n[:-len(".weight")] for n in M.prunable(model)]


def add_lora(model: nn.Module, rank: int, seed: int = 0) -> nn.Module:
    """A copy of `model` with LoRA adapters (rank `rank`, alpha = rank) on its prunable layers; only the
    adapters and the task head (what is not under `bert.`) train."""
    from peft import LoraConfig, inject_adapter_in_model

    check_rank(model, rank)
    out = copy.deepcopy(model)
    names = targets(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # lora_A's kaiming draw
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=names, lora_dropout=0.0), out)
    for n, p in out.named_parameters():
        p.requires_grad_(is_adapter(n) or not n.startswith("bert."))
    return out


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if is_adapter(n)}


def layer_of(adapter_name: str) -> str:
    """"bert.encoder.layer.0.attention.self.query.lora_A.default.weight" -> its base layer's weight name
    "bert.encoder.layer.0.attention.self.query.base_layer.weight" without the peft wrapper."""
    return adapter_name.split(".lora_")[0] + ".weight"


def trainable_count(model: nn.Module, mask: M.Mask | None = None) -> int:
    """Adapter entries that train (all of them, or those the mask keeps)."""
    if mask is not None:
        return M.kept(mask)
    return sum(p.numel() for p in adapter_params(model).values())


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


def uniform_like(ratios: dict[str, float], adapters: dict[str, torch.Tensor]) -> dict[str, float]:
    """One ratio for every layer with the same total budget as `ratios` over these adapters."""
    kept = sum(count(ratios[layer_of(n)], p.numel()) for n, p in adapters.items())
    total = sum(p.numel() for p in adapters.values())
    return {layer: kept / total for layer in ratios}


def count(ratio: float, numel: int) -> int:
    """Entries a matrix of `numel` keeps at `ratio` (at least 1); a ratio outside (0, 1] is a one-line error."""
    check_ratio("prune.lora_ratio", ratio)
    return max(1, round(ratio * numel))


# ---------------------------------------------------------------- masks on the adapters
def random_mask(adapters: dict[str, torch.Tensor], ratios: dict[str, float], generator: torch.Generator) -> M.Mask:
    """Exactly count(ratio, entries) random entries of each adapter matrix."""
    out = {}
    for n, p in adapters.items():
        keep = count(ratios[layer_of(n)], p.numel())
        flat = torch.zeros(p.numel(), dtype=torch.bool)
        flat[torch.randperm(p.numel(), generator=generator)[:keep]] = True
        out[n] = flat.view(p.shape)
    return out


def magnitude_mask(trained: dict[str, torch.Tensor], ratios: dict[str, float]) -> M.Mask:
    """The largest |entries| of a trained adapter, count(ratio, entries) per matrix."""
    return {n: M.keep_top(v.detach().abs(), torch.ones_like(v, dtype=torch.bool), count(ratios[layer_of(n)],
                                                                                         v.numel()))
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


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """A plain copy of `model`: every adapter merged into its base weight (peft's LoraLayer.merge: W + scale B A)
    and the peft wrapper replaced by that base Linear, so nothing of the adapter is left to run."""
    from peft.tuners.lora import LoraLayer

    out = copy.deepcopy(model)
    wrapped = [(n, m) for n, m in out.named_modules() if isinstance(m, LoraLayer)]
    for name, m in wrapped:
        m.merge()
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent), attr, m.base_layer)
    return out


# ---------------------------------------------------------------- the comparison
def compare_rules(model: nn.Module, data, cfg, *, rank: int = 16, seed: int = 0, capture: float = CAPTURE,
                  dense_ranks=DENSE_RANKS, probe: int = 64) -> list[dict]:
    """Accuracy vs trainable adapter entries for: dense LoRA at `dense_ranks`; at rank `rank`, random masks at
    the subspace ratios, random masks at the uniform ratio of the same budget, magnitude masks at the
    subspace ratios. `model`: the base model with its task head. Returns one row per rule."""
    rows = []
    for r in dense_ranks:
        m = add_lora(model, r, seed)
        res = train_adapter(m, data, cfg, None, seed=seed)
        rows.append({"rule": f"dense-r{r}", "rank": r, "trainable": trainable_count(m),
                     "test_accuracy": res.final["test_accuracy"]})
    ratios = subspace_ratios(model, data.train.x[:probe], capture)
    start = add_lora(model, rank, seed)
    adapters = adapter_params(start)
    g = torch.Generator().manual_seed(seed)
    dense = copy.deepcopy(start)
    train_adapter(dense, data, cfg, None, seed=seed)
    masks = {"random-subspace": random_mask(adapters, ratios, g),
             "random-uniform": random_mask(adapters, uniform_like(ratios, adapters), g),
             "magnitude-subspace": magnitude_mask(adapter_params(dense), ratios)}
    for rule, mask in masks.items():
        m = copy.deepcopy(start)
        res = train_adapter(m, data, cfg, mask, seed=seed)
        rows.append({"rule": rule, "rank": rank, "trainable": trainable_count(m, mask),
                     "test_accuracy": res.final["test_accuracy"],
                     "layers": {layer_of(n): float(v.float().mean()) for n, v in mask.items() if ".lora_A." in n}})
    return rows
