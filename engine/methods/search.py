"""What the mask-search methods (cs, cts) share: progress events while they search, and a stored record
of the search (analyses/search.json: its cost in training steps and seconds, and its curve), which
`lottery show` prints and the leaderboard reads as the method's search cost.

A search is reported as variant "search" of level 1, so the explorer's live view follows it like any
training; it is not a stored level. The mask it selects is stored (RUN_DIR/search-mask.safetensors, after
the search record) so a run resumed before its ticket finished training does not search again.
"""
from __future__ import annotations

import time
from typing import Callable

from .. import events as ev
from ..analysis.common import save_analysis
from ..masks import Mask
from ..registry import ANALYSES, AnalysisSpec
from ..store import load_tensors, read_json, save_tensors

VARIANT = "search"


class SearchLog:
    """Announce a search, relay its evaluations, and store its record when it ends."""

    def __init__(self, ctx, method: str, total_steps: int):
        self.ctx, self.method, self.total_steps = ctx, method, total_steps
        self.curve: list[dict] = []
        self.t0 = time.perf_counter()
        ctx.emit(ev.TrainingStarted(ctx.store.run_id, 1, VARIANT, 1.0, 0, total_steps))

    def evaluated(self, point: dict, **extra) -> None:
        """`point` as the trainer's on_eval gives it (iteration, epoch, losses, accuracies) plus extras."""
        self.curve.append({**point, **extra})
        self.ctx.emit(ev.Evaluated(self.ctx.store.run_id, 1, VARIANT, point["iteration"], point["epoch"],
                                   point["train_loss"], point["val_loss"], point["val_accuracy"],
                                   point["test_accuracy"]))

    def save(self, **result) -> dict:
        record = {"analysis": "search", "method": self.method, "run_id": self.ctx.store.run_id,
                  "steps": self.total_steps, "seconds": round(time.perf_counter() - self.t0, 4),
                  "curve": self.curve, **result}
        save_analysis(self.ctx.store, "search", record, self.ctx.emit)
        return record


def searched_mask(ctx, search: Callable[[], Mask]) -> Mask:
    """The ticket's mask from a stored level or a stored search, else from `search()` (then stored)."""
    if ctx.store.level_record("ticket", 1) is not None:
        return ctx.store.load_level("ticket", 1, ctx.device)[0]
    path = ctx.store.weights_path("search-mask")
    if path.exists() and ctx.store.analysis_path("search").exists():
        return load_tensors(path, ctx.device)
    mask = search()
    save_tensors(path, mask)  # after the search record: its presence means the search is complete
    return mask


def recorded_search_cost(summary: dict, level: dict, store) -> tuple[int, float]:
    """A mask search's cost (cs, cts): its stored record's training steps and seconds."""
    record = read_json(store.analysis_path(VARIANT))
    return record["steps"], record["seconds"]


def format_search(name: str, a: dict) -> str:
    extra = "".join(f", {k.replace('_', ' ')} {100 * a[k]:.2f}%" for k in ("natural_density", "expected_density")
                    if a.get(k) is not None)
    return f"{name}: {a['method']} mask search, {a['steps']} steps in {a['seconds']:.1f} s{extra}"


ANALYSES.register(VARIANT, "a mask search's record: cost, curve and densities (written by cs and cts)")(
    AnalysisSpec(format_search))
