"""The Leaderboard tab: every method on the same model, data and budget (`engine.compare`), as plots.

Runs are reused from the store, so reopening a leaderboard that was run before only reads summaries.
`accuracy_vs_density` and `cost_vs_accuracy` take the dict `engine.compare.compare` returns and also
display inline in a notebook.
"""
from __future__ import annotations

import concurrent.futures as cf
import queue
import threading

import holoviews as hv
import pandas as pd
import panel as pn

import engine
from engine import events as ev
from engine.compare import compare, format_table
from engine.registry import METHODS

from explorer.plots import COMMON, _empty

DEFAULT_METHODS = ["imp", "oneshot", "snip", "grasp", "synflow", "rigl", "set", "cs", "cts", "edgepopup"]


def _in_background(fn, *args, **kwargs) -> cf.Future:
    """`fn` on its own daemon thread: one page's comparison never queues behind another's, and a long one
    does not keep the server from stopping."""
    future: cf.Future = cf.Future()

    def work():
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to the page, which shows it
            future.set_exception(e)

    threading.Thread(target=work, name="leaderboard", daemon=True).start()
    return future


def _frame(result: dict | None) -> pd.DataFrame:
    rows = [{"method": r["method"], "density": r["density"], "accuracy": 100 * r["test_accuracy_mean"],
             "std": 100 * r["test_accuracy_std"], "search steps": r["search_steps"],
             "search seconds": r["search_seconds"]}
            for r in (result or {}).get("rows", [])]
    return pd.DataFrame(rows, columns=["method", "density", "accuracy", "std", "search steps", "search seconds"])


def accuracy_vs_density(result: dict | None) -> hv.Element:
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
        return _empty(title, "")
    points = [hv.Scatter(g, "search steps", ["accuracy", "method", "density", "search seconds"], label=method)
              .opts(size=9, tools=["hover"]) for method, g in df.groupby("method", sort=False)]
    return hv.Overlay(points).opts(title=title, xlabel="search cost (training steps)", ylabel="test accuracy (%)",
                                   legend_position="bottom_right", **COMMON)


class LeaderboardPanel(pn.viewable.Viewer):
    """Methods, densities and seeds in; compare on a worker thread; table and plots out."""

    def __init__(self, runs_dir, base_config=None, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        # the launch panel's settings (model, data, training budget), when given
        self.base_config = base_config or (lambda: engine.RunConfig())
        self.methods = pn.widgets.MultiChoice(label="methods", options=METHODS.names(), value=list(DEFAULT_METHODS),
                                              sizing_mode="stretch_width")
        self.densities = pn.widgets.TextInput(label="densities", value="0.2,0.05", width=160)
        self.seeds = pn.widgets.IntInput(label="seeds", value=1, start=1, end=20, width=90)
        self.button = pn.widgets.Button(label="Compare", color="primary", width=110)
        self.stop = pn.widgets.Button(label="Cancel", width=90)
        self.button.on_click(lambda _: self.start())
        self.stop.on_click(lambda _: self.cancel_event.set())
        self.status = pn.pane.Markdown("", css_classes=["leaderboard-status"], sizing_mode="stretch_width")
        self.accuracy = pn.pane.HoloViews(accuracy_vs_density(None), sizing_mode="stretch_width",
                                          css_classes=["leaderboard-plot"])
        self.cost = pn.pane.HoloViews(cost_vs_accuracy(None), sizing_mode="stretch_width",
                                      css_classes=["cost-plot"])
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.future: cf.Future | None = None
        self.cancel_event = threading.Event()  # set by Cancel, and when the page closes
        self.result: dict | None = None
        self._events: queue.Queue = queue.Queue()
        self._trainings = 0

    def start(self) -> None:
        if self.future is not None and not self.future.done():
            self.status.object = "A comparison is already running."
            return
        try:
            densities = [float(d) for d in self.densities.value.split(",") if d.strip()]
        except ValueError:
            self.status.object = f"densities: {self.densities.value!r} must be numbers in (0, 1), comma separated"
            return
        methods = list(self.methods.value)
        if not methods:
            self.status.object = "methods: choose at least one"
            return
        if not isinstance(self.seeds.value, int) or self.seeds.value < 1:
            self.status.object = f"seeds: {self.seeds.value!r} must be a positive integer"
            return
        try:
            base = self.base_config()
        except engine.ConfigError as e:
            self.status.object = f"settings: {e}"
            return
        self.status.object = f"comparing {', '.join(methods)} at {densities} ({self.seeds.value} seed(s))..."
        self.cancel_event = threading.Event()
        events = self._events = queue.Queue()
        self._trainings = 0
        self.future = _in_background(compare, base, methods, densities, self.seeds.value, runs_dir=self.runs_dir,
                                     on_event=events.put, cancel=self.cancel_event)

    def poll(self) -> bool:
        """Called on the event loop: progress of a running comparison; True when a finished one was just shown."""
        if self.future is None:
            return False
        finished = self.future.done()  # before draining: no event can come after
        latest = None
        while True:
            try:
                e = self._events.get_nowait()
            except queue.Empty:
                break
            self._trainings += isinstance(e, ev.LevelDone)
            latest = e if isinstance(e, (ev.RunStarted, ev.TrainingStarted)) else latest
        if latest is not None and not finished:
            what = f"{latest.method} run" if isinstance(latest, ev.RunStarted) else \
                f"level {latest.level} {latest.variant}"
            self.status.object = f"comparing... {self._trainings} trainings done (or reused); now {latest.run_id}: {what}"
        if not finished:
            return False
        f, self.future = self.future, None
        try:
            self.result = f.result()
        except engine.LotteryError as e:
            self.status.object = f"compare failed: {e}"
            return True
        except Exception as e:  # keep the app alive; the message says what happened
            self.status.object = f"compare failed: {type(e).__name__}: {e}"
            return True
        if self.result["status"] != "completed":
            self.status.object = "comparison cancelled; finished runs stay in the store"
            return True
        self.status.object = "done (runs are stored and reused next time)"
        self.accuracy.object = accuracy_vs_density(self.result)
        self.cost.object = cost_vs_accuracy(self.result)
        self.table.object = f"```\n{format_table(self.result)}\n```"
        return True

    def __panel__(self):
        return pn.Column(pn.Row(self.methods, self.densities, self.seeds, self.button, self.stop,
                                sizing_mode="stretch_width"),
                         self.status, pn.Row(self.accuracy, self.cost, sizing_mode="stretch_width"), self.table,
                         sizing_mode="stretch_width")
