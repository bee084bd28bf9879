"""Neural persistence (Rieck et al. 2019, "Neural Persistence: A Complexity Measure for Deep Neural
Networks"), computed with gudhi.

Definitions, as in the paper and its reference implementation (BorgwardtLab/Neural-Persistence):
- every |w| is divided by W = the largest |w| over all layers of the network;
- a layer is a complete bipartite graph on its n = n_in + n_out units, filtered from the strongest edge
  down: units are born at 1, an edge enters at |w|/W. In gudhi's ascending convention that is units at
  0 and edges at 1 - |w|/W;
- its zero-dimensional persistence pairs are the merges of the maximum spanning tree: n - 1 pairs
  (0, 1 - |w_e|/W), each of persistence 1 - |w_e|/W. The one component that never dies (the essential
  class) counts with persistence 1 (the reference implementation closes it at 0 in the superlevel
  filtration);
- layer NP = the 2-norm of all n persistences = sqrt(sum_MST (1 - |w_e|/W)^2 + 1), so a layer whose |w| all
  equal W has NP 1; normalised layer NP = NP / sqrt(n - 1); network NP = mean of the normalised layer NPs.

Pruned weights are 0, so their edges enter last (at 1): a unit whose weights are all pruned is joined
only then and adds a persistence of 1. `pairs` hold the n - 1 finite pairs (birth, death) in gudhi's
convention; the essential class is implied (it would be (0, inf), which JSON cannot hold).

Convolutions (not covered by the paper): a conv weight (out, in, *kernel) is read as the bipartite graph
between its input and output channels, an edge weighing the largest |w| of its kernel (the strongest
connection between the two channels). Layers are the prunable Linear/Conv weights (`engine.masks`);
biases and normalisation parameters are not edges and stay out, also out of W.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

from ..masks import Mask, prunable
from ..registry import ANALYSES, AnalysisSpec
from ..store import read_json
from .common import StoredRun, refuse_foreign_masks, save_analysis


def edge_weights(weight: torch.Tensor) -> np.ndarray:
    """|w| as an (n_out, n_in) float64 matrix: Linear weights as they are, conv kernels by their max |w|."""
    w = weight.detach().abs().to("cpu", torch.float64)
    if w.dim() > 2:
        w = w.flatten(2).amax(dim=2)
    if w.dim() != 2:
        raise ValueError(f"a layer needs a 2-D (or conv) weight, got shape {tuple(weight.shape)}")
    return w.numpy()


def layer_persistence(weight_matrix, global_max: float) -> dict:
    """{"pairs": (n-1, 2) array of (birth, death), "np": layer NP, "normalised": NP / sqrt(n - 1)}.

    `weight_matrix`: an (n_out, n_in) array or tensor (a conv weight is reduced by `edge_weights`);
    `global_max`: W, the largest |w| over the whole network.
    """
    w = edge_weights(torch.as_tensor(weight_matrix))
    if not global_max > 0:
        raise ValueError(f"global_max must be positive (the largest |w| of the network), got {global_max}")
    if w.max(initial=0.0) > global_max * (1 + 1e-12):
        raise ValueError(f"global_max {global_max} is below this layer's largest |w| {w.max()}")
    import gudhi  # here, not at the top: every analysis module is imported for the registry when the app's
    # launch panel is made, and gudhi's import (~0.05-0.1 s after torch's) was part of that wait

    n_out, n_in = w.shape
    n = n_in + n_out
    st = gudhi.SimplexTree()
    st.insert_batch(np.arange(n)[None, :], np.zeros(n))
    out_idx, in_idx = np.divmod(np.arange(w.size), n_in)
    st.insert_batch(np.stack([in_idx, n_in + out_idx]), 1.0 - w.ravel() / global_max)
    st.compute_persistence(min_persistence=-1)  # -1: keep zero-length bars (edges at exactly W)
    intervals = st.persistence_intervals_in_dimension(0)
    pairs = intervals[np.isfinite(intervals[:, 1])]
    persistence = pairs[:, 1] - pairs[:, 0]
    value = math.sqrt(float(np.sum(persistence ** 2)) + 1.0)  # + the essential class, persistence 1
    return {"pairs": pairs, "np": value, "normalised": value / math.sqrt(n - 1)}


def _layers(state_dict_or_model, mask: Mask | None) -> dict[str, torch.Tensor]:
    if isinstance(state_dict_or_model, nn.Module):
        sd = state_dict_or_model.state_dict()
        names = list(mask) if mask is not None else prunable(state_dict_or_model)
    else:
        sd = state_dict_or_model
        # A bare state dict does not say which tensors are Linear/Conv weights: take the weights with
        # at least two dimensions (BatchNorm's are vectors), or exactly the mask's layers.
        names = list(mask) if mask is not None else [k for k, v in sd.items()
                                                     if k.endswith("weight") and v.dim() >= 2]
    if not names:
        raise ValueError("no Linear/Conv weights to compute neural persistence of")
    return {n: sd[n] * mask[n] if mask is not None else sd[n] for n in names}


def network_persistence(state_dict_or_model, mask: Mask | None = None) -> dict:
    """{"layers": {name: layer_persistence(...) + "shape"}, "network": mean normalised layer NP}.

    Pruned entries (mask False) count as 0 even if the weights hold something else there.
    """
    layers = _layers(state_dict_or_model, mask)
    edges = {n: edge_weights(w) for n, w in layers.items()}
    global_max = max(float(e.max(initial=0.0)) for e in edges.values())
    if global_max == 0:
        raise ValueError("every weight is zero: neural persistence is undefined")
    out = {n: {**layer_persistence(e, global_max), "shape": list(e.shape)} for n, e in edges.items()}
    return {"layers": out, "network": float(np.mean([r["normalised"] for r in out.values()]))}


def _jsonable(result: dict, digits: int = 7) -> dict:
    """Pairs as rounded lists: the store keeps what a persistence diagram needs, at a readable size."""
    return {"network": result["network"],
            "layers": {n: {"np": r["np"], "normalised": r["normalised"], "shape": r["shape"],
                           "pairs": np.round(r["pairs"], digits).tolist()}
                       for n, r in result["layers"].items()}}


def run_persistence(runs_dir: str | os.PathLike, run_id: str, on_event=None) -> dict:
    """Neural persistence of the dense net and every completed level of a run's tickets.

    Stored as RUN_DIR/analyses/persistence.json. Completed levels never change, so levels already in
    that file are reused and only new ones are computed.
    """
    run = StoredRun(runs_dir, run_id, device="cpu")
    path = run.store.analysis_path("persistence")
    done = {e["level"]: e for e in read_json(path)["levels"]} if path.exists() else {}
    todo = [level for level in run.levels() if level > 0 and level not in done]
    if todo:  # reopening the model costs a data load: only when there are ticket masks to read
        refuse_foreign_masks(run_id, run.config.prune.method, run.store.level_record("ticket", todo[-1])["layers"],
                             run.make_model(), "persistence")
    levels = []
    for level in run.levels():
        if level not in done:
            mask, weights, record = run.level(level)
            done[level] = {"level": level, "density": record["density"],
                           **_jsonable(network_persistence(weights, mask))}
        levels.append(done[level])
    result = {"analysis": "persistence", "run_id": run_id, "levels": levels}
    save_analysis(run.store, "persistence", result, on_event)
    return result


def format_persistence(name: str, a: dict) -> str:
    return f"{name}: network NP by level " + ", ".join(f"{e['level']}: {e['network']:.4f}" for e in a["levels"])


ANALYSES.register("persistence", "neural persistence of every layer and level (Rieck et al. 2019)")(
    AnalysisSpec(format_persistence, compute=lambda runs_dir, run_id, o, on_event=None, cancel=None:
                 run_persistence(runs_dir, run_id, on_event=on_event)))
