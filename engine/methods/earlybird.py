"""Early-bird tickets (You et al. 2020): draw the ticket as soon as the pruning mask stops changing.

A dense copy trains from theta_0 (the run's own data order); every epoch the tracker takes the
magnitude mask at --density and compares it with the last four. When all distances fall below
--earlybird-eps the mask is drawn, the search stops, and the ticket is rewound and trained like any
other (with the run's controls). The search's distance matrix is stored as analyses/earlybird.json.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import trainer
from ..analysis.common import dense_seed, save_analysis
from ..analysis.earlybird_tracker import EarlyBirdFound, EarlyBirdTracker, format_earlybird, magnitude_rule
from ..config import option, validate
from ..registry import ANALYSES, METHODS, AnalysisSpec, MethodSpec
from ..store import RunStore, read_json
from .imp import imp_output_density


@dataclass(frozen=True)
class EarlyBirdOptions:
    earlybird_eps: float = option(0.1, "earlybird: draw the ticket when the last 5 epochs' masks differ by less "
                                  "than this fraction of entries", lo=0, hi=1, lo_open=True)

    def __post_init__(self):
        validate(self, "prune.")


def earlybird(ctx) -> None:
    cfg = ctx.config.prune
    if ctx.store.level_record("ticket", 1) is not None:  # resumed: the search is done, the ticket stored
        mask, _ = ctx.store.load_level("ticket", 1, ctx.device)
    else:
        rule = magnitude_rule(cfg.density, imp_output_density(cfg), cfg.scope)
        tracker = EarlyBirdTracker(rule, window=5, eps=ctx.options.earlybird_eps)
        model = ctx.model_with(ctx.init_weights)
        per_epoch = trainer.steps_per_epoch(len(ctx.data.train), ctx.config.train)
        tracker.update(model, 0.0)
        try:
            trainer.train(model, ctx.data, ctx.config.train, None, seed=dense_seed(ctx.config),
                          on_step=tracker.hook(per_epoch, stop=True), cancel=ctx.cancel)
        except EarlyBirdFound:
            pass
        # Never detected: the mask at the end of training, i.e. the one-shot ticket (stored as such).
        mask = tracker.ticket if tracker.detected else rule(model)
        save_analysis(ctx.store, "earlybird", {"analysis": "earlybird", "run_id": ctx.store.run_id,
                                               "search": True, "detected": tracker.detected,
                                               "epochs_total": ctx.config.train.epochs, **tracker.to_dict()},
                      ctx.emit)
    start, start_step = ctx.rewind(ctx.dense.weights)
    ctx.train_ticket(1, mask, start, start_step)


def detection_cost(summary: dict, level: dict, store: RunStore) -> tuple[int, float]:
    """The dense training up to detection (or to its end, where the mask never settled)."""
    search = read_json(store.analysis_path("earlybird"))
    per_epoch = summary["dense"]["iterations"] / search["epochs_total"]
    epochs = search["epochs"][-1]  # the search stopped at detection (or ran to the end)
    return round(epochs * per_epoch), summary["dense"]["train_seconds"] * epochs / search["epochs_total"]


METHODS.register("earlybird", "magnitude ticket at --density drawn when its mask stops changing during dense "
                              "training (You et al.), then rewound and trained")(
    MethodSpec(earlybird, options=EarlyBirdOptions, search_cost=detection_cost))
# its search record (analyses/earlybird.json), read back as an analysis: kind "earlybird", the tracker's record
ANALYSES.register("earlybird", "the earlybird method's search: mask distances by epoch until detection")(
    AnalysisSpec(format_earlybird))
