"""The app's tabs, in order: one line each. A tab's module is imported on the tab's first visit, so the
first page loads only what it shows (no torch, no transformers) and a heavy tab costs nothing until opened.

Adding a tab = its module + one line in TABS:

    # explorer/weight_space.py
    class WeightSpacePanel(pn.viewable.Viewer):
        def __init__(self, runs_dir, **params): ...     # usable on its own in a notebook
        @classmethod
        def for_app(cls, app):                          # what the tab calls, with the app
            return cls(app.runs_dir)
        def refresh(self): ...        # optional: the store or the chosen run changed (called when visible)
        def poll(self) -> bool: ...   # optional: 4 times a second; True when its work stored runs
        def stop(self): ...           # optional: the page closed: cancel its work

    # here, in TABS:
    Tab("Weight space", "explorer.weight_space:WeightSpacePanel.for_app", engine=True),

The factory ("module:callable", any callable taking the app) builds the tab's Viewer on its first visit.
What it may read on the app: `runs_dir`; `browser` (the run browser: `summaries`, `chosen()`, `refresh()`);
`choice` (the run, level and layer chosen in Masks/Analyses: `value`, `row()` to show the selects);
`launcher` (the launch panel: `config()` is its settings as a RunConfig, `session` the run it launched).
`engine=True`: the tab needs the engine's torch side; under `lottery serve` it shows "Loading engine…"
until explorer.engine_import has imported it (and `launcher` is set). Long work goes through
explorer.jobs.Job (a worker, cancel, events drained in poll()), never on the event loop. Heavy imports
(torch, transformers) belong in the tab's module or inside its functions, never in app.py or views.py,
which the first page loads (tests/test_app.py checks that it imports no torch and no engine tab module).
In a test or a notebook, `app.open("Weight space")` shows the tab and returns its Viewer.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from explorer import engine_import


@dataclass(frozen=True)
class Tab:
    title: str
    factory: str           # "module:callable", called with the app on the tab's first visit
    engine: bool = False   # needs the engine's torch side (see explorer.engine_import)

    def build(self, app):
        """Import the tab's module (first visit) and build its Viewer."""
        module, _, name = self.factory.partition(":")
        with engine_import.holoviews_import():  # (tab modules draw with HoloViews)
            make = importlib.import_module(module)
        for part in name.split("."):
            make = getattr(make, part)
        return make(app)


TABS = [
    Tab("Live", "explorer.views:LiveView"),
    Tab("Accuracy", "explorer.views:AccuracyView"),
    Tab("Early stopping", "explorer.views:EarlyStopView"),
    Tab("Masks", "explorer.views:MasksView"),
    Tab("Analyses", "explorer.analyses:AnalysisPanel.for_app", engine=True),
    Tab("Stability", "explorer.stability:StabilityPanel.for_app", engine=True),
    Tab("Leaderboard", "explorer.leaderboard:LeaderboardPanel.for_app", engine=True),
    Tab("Hardware", "explorer.hardware:HardwarePanel.for_app", engine=True),
    Tab("Weight space", "explorer.weight_space:WeightSpacePanel.for_app", engine=True),
    Tab("Bayesian", "explorer.bayes:BayesPanel.for_app", engine=True),
    Tab("Foundation models", "explorer.foundation:FoundationPanel.for_app", engine=True),
    Tab("Embedding & adapter tickets", "explorer.foundation_ii:EmbeddingTicketsPanel.for_app", engine=True),
    Tab("Runs", "explorer.views:runs"),
]
