"""The Analyses tab: run an analysis of the chosen run on a background job, show what is stored."""
from __future__ import annotations

import panel as pn

import engine
from engine import analysis
from engine.analysis import computable
from engine.events import AnalysisProgress
from engine.registry import ANALYSES
from engine.store import RunStore

from explorer import analysis_plots as ap
from explorer.forms import OptionsForm
from explorer.jobs import Job, error_message, one_at_a_time
from explorer.plots import side_by_side

_QUEUE = one_at_a_time("analysis")


class AnalysisPanel(pn.viewable.Viewer):
    """Analyze a stored run; its stored analyses as plots. In the app, `run_choice` (its RunChoice) says
    which run, level and layer; alone (a notebook), `show(run_id, level, layer)` does.

    Each analysis's settings are widgets generated from its options dataclass (the flags of `lottery
    analyze RUN_ID NAME`); a `level` left blank means the level chosen above."""

    def __init__(self, runs_dir, run_choice=None, **params):
        super().__init__(**params)
        self.runs_dir, self.run_choice = runs_dir, run_choice
        self.run_id = self.level = self.layer = None
        self._drawn = False
        self.choice = pn.widgets.Select(label="analysis", options=computable(), value="persistence", width=160)
        self.forms: dict[str, OptionsForm] = {}  # per analysis with options, made when first chosen
        self.options = pn.Row()
        self.choice.param.watch(lambda e: self._show_form(), "value")
        self._show_form()
        self.button = pn.widgets.Button(label="Analyze", color="primary", width=110)
        self.button.on_click(lambda _: self.start())
        self.status = pn.pane.Markdown("", css_classes=["analysis-status"], sizing_mode="stretch_width")
        self.job: Job | None = None
        self.panes = {k: pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=[f"{k}-plot"])
                      for k in ("paths", "barriers", "barrier", "np_levels", "diagram", "earlybird", "sanity")}

    def start(self) -> None:
        if self.run_id is None:
            self.status.object = "Select a run first."
            return
        if self.job is not None:
            self.status.object = "An analysis is already running."
            return
        name, form = self.choice.value, self.form()
        values = form.values() if form is not None else {}
        if "level" in values and values["level"] is None and self.level:  # blank: the chosen ticket level
            values["level"] = self.level
        try:
            options = form.options(values) if form is not None else None
        except engine.ConfigError as e:
            self.status.object = f"**{name}**: {e}"
            return
        self.status.object = f"running **{name}** on {self.run_id}..."
        run_id = self.run_id
        self.job = Job(lambda job: analysis.analyze(name, self.runs_dir, run_id, options, on_event=job.emit,
                                                    cancel=job.cancelled), name=name, executor=_QUEUE)

    def form(self, name: str | None = None) -> OptionsForm | None:
        """The settings of the analysis `name` (default: the chosen one); None when it has none."""
        name = name or self.choice.value
        spec = ANALYSES.get(name, "analysis")
        if spec.options is not None and name not in self.forms:
            self.forms[name] = OptionsForm(spec.options, style={"width": 150})
        return self.forms.get(name)

    def _show_form(self) -> None:
        form = self.form()
        self.options[:] = list(form.widgets.values()) if form is not None else []

    def poll(self) -> bool:
        """Called on the event loop: progress of a running analysis; True when a finished one was stored."""
        if self.job is None:
            return False
        events, finished = self.job.poll()
        steps = [e for e in events if isinstance(e, AnalysisProgress)]
        if steps and not finished:
            self.status.object = f"running **{self.job.name}** on {self.run_id}... {steps[-1].done}/{steps[-1].total}"
        if not finished:
            return False
        job, self.job = self.job, None
        self.status.object = f"**{job.name}** done and stored with the run." if job.error is None else \
            f"**{job.name}** failed: {error_message(job.error)}"
        self.show(self.run_id, self.level, self.layer, force=True)
        return job.error is None

    def stop(self) -> None:
        """The page closed: a long analysis stops at its next check (a queued one never starts)."""
        if self.job is not None:
            self.job.cancel()

    @classmethod
    def for_app(cls, app) -> "AnalysisPanel":
        return cls(app.runs_dir, run_choice=app.choice)

    def refresh(self) -> None:
        """(tab) The chosen run, level or layer changed."""
        self.show(*self.run_choice.value)

    def show(self, run_id, level=None, layer=None, force: bool = False) -> None:
        """Draw the stored analyses of `run_id`; a no-op when nothing changed (levels finishing during a
        run call this often, and rebuilding six plots each time would stall the event loop)."""
        if not force and (run_id, level, layer) == (self.run_id, self.level, self.layer) and self._drawn:
            return
        self._drawn = True
        self.run_id, self.level, self.layer = run_id, level, layer
        store = RunStore(self.runs_dir, run_id) if run_id else None
        damaged: dict[str, str] = {}
        stored = store.analyses(damaged) if store is not None and store.exists() else {}
        if damaged:  # left out of the plots; computing one again replaces its file
            self.status.object = f"unreadable, compute again: {', '.join(damaged)} ({next(iter(damaged.values()))})"
        by_kind: dict = {}
        for result in stored.values():  # per kind: the file of the selected level, else the highest level
            kind, old = result.get("analysis"), by_kind.get(result.get("analysis"))
            if old is None or result.get("level") == level or (
                    old.get("level") != level and (result.get("level") or 0) > (old.get("level") or 0)):
                by_kind[kind] = result
        self.panes["paths"].object = ap.instability_paths(by_kind.get("instability"))
        self.panes["barriers"].object = ap.instability_barriers(by_kind.get("instability"))
        # barrier: a level may hold several (one per control it was interpolated with): all of the chosen level's
        barriers = [r for r in stored.values() if r.get("analysis") == "barrier"]
        shown = level if any(r.get("level") == level for r in barriers) else max(
            (r.get("level") or 0 for r in barriers), default=None)
        self.panes["barrier"].object = ap.barrier([r for r in barriers if r.get("level") == shown])
        self.panes["np_levels"].object = ap.persistence_levels(by_kind.get("persistence"))
        self.panes["diagram"].object = ap.persistence_diagrams(by_kind.get("persistence"), level)
        self.panes["earlybird"].object = ap.earlybird(by_kind.get("earlybird-replay") or by_kind.get("earlybird"))
        self.panes["sanity"].object = ap.sanity(by_kind.get("sanity"))

    def __panel__(self):
        p = self.panes
        above = [self.run_choice.row()] if self.run_choice is not None else []
        return pn.Column(*above, pn.Row(self.choice, self.options, self.button, self.status,
                                        sizing_mode="stretch_width"),
                         side_by_side(p["paths"], p["barriers"]), p["barrier"],
                         p["np_levels"], p["diagram"],
                         p["earlybird"], p["sanity"], sizing_mode="stretch_width")
