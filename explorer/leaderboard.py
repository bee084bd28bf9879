"""The Leaderboard tab: every method on the same model, data and budget (`engine.compare`), as plots.

Runs are reused from the store, so reopening a leaderboard that was run before only reads summaries.
`accuracy_bands` and `cost_vs_accuracy` take the dict `engine.compare.compare` returns and also
display inline in a notebook.
"""
from __future__ import annotations

import holoviews as hv
import pandas as pd
import panel as pn

import engine
from engine import events as ev
from engine.compare import CompareOptions, compare, format_table

from explorer.forms import OptionsForm
from explorer.jobs import Job, error_message
from explorer.plots import COMMON, _empty, code_block, side_by_side


def _frame(result: dict | None) -> pd.DataFrame:
    rows = [{"method": r["method"], "density": r["density"], "accuracy": 100 * r["test_accuracy_mean"],
             "std": 100 * r["test_accuracy_std"], "search steps": r["search_steps"],
             "search seconds": r["search_seconds"]}
            for r in (result or {}).get("rows", [])]
    return pd.DataFrame(rows, columns=["method", "density", "accuracy", "std", "search steps", "search seconds"])


def accuracy_bands(result: dict | None) -> hv.Element:
    """Test accuracy vs density per method (log axis): mean line, band of ± one std over seeds."""
    title = "Leaderboard: test accuracy vs density"
    df = _frame(result)
    if df.empty:
        return _empty(title, "no leaderboard yet: choose methods and densities, then Compare")
    layers = []
    for method, g in df.sort_values("density").groupby("method", sort=False):
        band = hv.Spread(g, "density", ["accuracy", "std"], label=method).opts(alpha=0.2)
        line = hv.Curve(g, "density", "accuracy", label=method).opts(line_width=2)
        dots = hv.Scatter(g, "density", ["accuracy", "std", "method"], label=method).opts(size=7, tools=["hover"])
        layers += [band, line, dots]
    return hv.Overlay(layers).opts(title=title, logx=True, xlabel="density (log)", ylabel="test accuracy (%)",
                                   legend_position="bottom_right", **COMMON)


def cost_vs_accuracy(result: dict | None) -> hv.Element:
    """Search cost (training steps before the ticket's own training) vs test accuracy, per method and density."""
    title = "Search cost vs accuracy"
    df = _frame(result)
    if df.empty:
        return _empty(title, "each method's search cost (training steps before its ticket's own training) "
                             "and accuracy, once Compare has run")
    points = [hv.Scatter(g, "search steps", ["accuracy", "method", "density", "search seconds"], label=method)
              .opts(size=9, tools=["hover"]) for method, g in df.groupby("method", sort=False)]
    return hv.Overlay(points).opts(title=title, xlabel="search cost (training steps)", ylabel="test accuracy (%)",
                                   legend_position="bottom_right", **COMMON)


class LeaderboardPanel(pn.viewable.Viewer):
    """Methods, densities and seeds in (CompareOptions: the CLI's defaults); compare on a background job
    (its own thread: one page's comparison never queues behind another's); table and plots out."""

    def __init__(self, runs_dir, base_config=None, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        # the launch panel's settings (model, data, training budget), when given
        self.base_config = base_config or (lambda: engine.RunConfig())
        self.form = OptionsForm(CompareOptions, densities={"width": 160}, seeds={"width": 90})
        self.methods, self.densities, self.seeds = self.form["methods"], self.form["densities"], self.form["seeds"]
        # at least 320 px in the controls' FlexBox: in a Row, the fixed widths beside it squeezed the methods box
        # to ~30 px on a 1000 px page
        self.methods.styles = {**self.methods.styles, "flex": "1 1 320px"}
        self.button = pn.widgets.Button(label="Compare", color="primary", width=110)
        self.stop_button = pn.widgets.Button(label="Cancel", width=90, disabled=True)  # enabled while comparing
        self.button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.status = pn.pane.Markdown("", css_classes=["leaderboard-status"], sizing_mode="stretch_width")
        self.accuracy = pn.pane.HoloViews(accuracy_bands(None), sizing_mode="stretch_width",
                                          css_classes=["leaderboard-plot"])
        self.cost = pn.pane.HoloViews(cost_vs_accuracy(None), sizing_mode="stretch_width",
                                      css_classes=["cost-plot"])
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.job: Job | None = None
        self.result: dict | None = None
        self._trainings = 0

    @classmethod
    def for_app(cls, app) -> "LeaderboardPanel":
        return cls(app.runs_dir, base_config=app.launcher.config)

    def start(self) -> None:
        if self.job is not None:
            self.status.object = "A comparison is already running."
            return
        try:
            opts = self.form.options()
            base = self.base_config()
        except engine.ConfigError as e:
            self.status.object = f"**{e}**"
            return
        methods, densities = list(opts.methods), list(opts.densities)
        self.status.object = (f"comparing {', '.join(methods)} at {densities} ({opts.seeds} seed(s)) on "
                              f"{base.model.model} / {base.data.dataset}, {base.train.epochs} epochs...")
        self.stop_button.disabled = False
        self._trainings = 0
        self.dashboard = ""  # the Dask dashboard's link, when the sweep runs on Dask
        self.job = Job(lambda job: compare(base, methods, densities, opts.seeds, runs_dir=self.runs_dir,
                                           on_event=job.emit, cancel=job.cancelled, executor=opts.executor,
                                           workers=opts.workers, scheduler=opts.scheduler,
                                           on_dashboard=lambda link: setattr(self, "dashboard", link)),
                       name="leaderboard")

    def stop(self) -> None:
        """Cancel (the button, or the page closed): finished runs stay in the store."""
        if self.job is not None:
            self.job.cancel()

    def poll(self) -> bool:
        """Called on the event loop: progress of a running comparison; True when a finished one was just
        shown (its runs are in the store)."""
        if self.job is None:
            return False
        events, finished = self.job.poll()
        self._trainings += sum(isinstance(e, ev.LevelDone) for e in events)
        latest = next((e for e in reversed(events) if isinstance(e, (ev.RunStarted, ev.TrainingStarted))), None)
        if latest is not None and not finished:
            what = f"{latest.method} run" if isinstance(latest, ev.RunStarted) else \
                f"level {latest.level} {latest.variant}"
            self.status.object = f"comparing... {self._trainings} trainings done (or reused); now {latest.run_id}: {what}" \
                + (f" ([Dask dashboard]({self.dashboard}))" if self.dashboard else "")
        if not finished:
            return False
        job, self.job = self.job, None
        self.stop_button.disabled = True
        if job.error is not None:
            self.status.object = f"compare failed: {error_message(job.error)}"
            return True
        self.result = job.result()
        if self.result["status"] != "completed":
            self.status.object = "comparison cancelled; finished runs stay in the store"
            return True
        self.accuracy.object = accuracy_bands(self.result)
        self.cost.object = cost_vs_accuracy(self.result)
        self.table.object = code_block(format_table(self.result))
        self.status.object = "done (runs are stored and reused next time)"  # last: "done" means drawn
        return True

    def __panel__(self):
        return pn.Column(pn.FlexBox(self.methods, self.densities, self.seeds, self.button, self.stop_button,
                                    align_items="flex-start", sizing_mode="stretch_width"),
                         pn.pane.HTML("Each method trains the launch panel's model and data set with its training "
                                      "settings (epochs, optimizer, ...); runs already stored are reused.",
                                      sizing_mode="stretch_width"),
                         pn.Row(self.form["executor"], self.form["workers"], self.form["scheduler"]),
                         self.status, side_by_side(self.accuracy, self.cost), self.table,
                         sizing_mode="stretch_width")
