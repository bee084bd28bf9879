"""The Analyses tab: run an analysis of the chosen run on a worker thread, show what is stored."""
from __future__ import annotations

import concurrent.futures as cf
import threading

import panel as pn

import engine
from engine import analysis
from engine.analysis import ANALYSES
from engine.cli import stored_analyses
from engine.store import RunStore

from explorer import analysis_plots as ap

_WORKER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis")  # one analysis at a time


class AnalysisPanel(pn.viewable.Viewer):
    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.run_id = self.level = self.layer = None
        self._drawn = False
        self.choice = pn.widgets.Select(label="analysis", options=list(ANALYSES), value="persistence", width=160)
        self.rewind_points = pn.widgets.TextInput(label="rewind points (instability)", value="0,25,100,500",
                                                  width=200)
        self.button = pn.widgets.Button(label="Analyze", color="primary", width=110)
        self.button.on_click(lambda _: self.start())
        self.status = pn.pane.Markdown("", css_classes=["analysis-status"], sizing_mode="stretch_width")
        self.future: cf.Future | None = None
        self.cancel_event = threading.Event()  # set when the page closes: a long analysis stops
        self.panes = {k: pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=[f"{k}-plot"])
                      for k in ("paths", "barriers", "np_levels", "diagram", "earlybird", "sanity")}

    def start(self) -> None:
        if self.run_id is None:
            self.status.object = "Select a run first."
            return
        if self.future is not None and not self.future.done():
            self.status.object = "An analysis is already running."
            return
        name = self.choice.value
        try:
            points = analysis.parse_rewind_points(self.rewind_points.value)
        except engine.ConfigError as e:
            self.status.object = f"**{name}**: {e}"
            return
        self.status.object = f"running **{name}** on {self.run_id}..."
        self.cancel_event = threading.Event()
        level = self.level if name in ("sanity", "barrier") and self.level else None  # the selected ticket level
        self.future = _WORKER.submit(analysis.analyze, name, self.runs_dir, self.run_id, rewind_points=points,
                                     level=level, cancel=self.cancel_event)
        self.future.name = name

    def poll(self) -> bool:
        """Called on the event loop: True when a finished analysis was just shown."""
        if self.future is None or not self.future.done():
            return False
        f, self.future = self.future, None
        try:
            f.result()
            self.status.object = f"**{f.name}** done and stored with the run."
        except (engine.LotteryError, ValueError) as e:
            self.status.object = f"**{f.name}** failed: {e}"
        except Exception as e:  # keep the app alive; the message says what happened
            self.status.object = f"**{f.name}** failed: {type(e).__name__}: {e}"
        self.show(self.run_id, self.level, self.layer, force=True)
        return True

    def show(self, run_id, level=None, layer=None, force: bool = False) -> None:
        """Draw the stored analyses of `run_id`; a no-op when nothing changed (levels finishing during a
        run call this often, and rebuilding six plots each time would stall the event loop)."""
        if not force and (run_id, level, layer) == (self.run_id, self.level, self.layer) and self._drawn:
            return
        self._drawn = True
        self.run_id, self.level, self.layer = run_id, level, layer
        store = RunStore(self.runs_dir, run_id) if run_id else None
        stored = stored_analyses(store) if store is not None and store.exists() else {}
        by_kind: dict = {}
        for result in stored.values():  # per kind: the file of the selected level, else the highest level
            kind, old = result.get("analysis"), by_kind.get(result.get("analysis"))
            if old is None or result.get("level") == level or (
                    old.get("level") != level and (result.get("level") or 0) > (old.get("level") or 0)):
                by_kind[kind] = result
        self.panes["paths"].object = ap.instability_paths(by_kind.get("instability"))
        self.panes["barriers"].object = ap.instability_barriers(by_kind.get("instability"))
        self.panes["np_levels"].object = ap.persistence_levels(by_kind.get("persistence"))
        self.panes["diagram"].object = ap.persistence_diagrams(by_kind.get("persistence"), level)
        self.panes["earlybird"].object = ap.earlybird(by_kind.get("earlybird"))
        self.panes["sanity"].object = ap.sanity(by_kind.get("sanity"))

    def __panel__(self):
        p = self.panes
        return pn.Column(pn.Row(self.choice, self.rewind_points, self.button, self.status,
                                sizing_mode="stretch_width"),
                         pn.Row(p["paths"], p["barriers"], sizing_mode="stretch_width"),
                         p["np_levels"], p["diagram"],
                         p["earlybird"], p["sanity"], sizing_mode="stretch_width")
