"""The Leaderboard tab: every method on the same model, data and budget (`engine.compare`), as plots.

Runs are reused from the store, so reopening a leaderboard that was run before only reads summaries.
`accuracy_vs_density` and `cost_vs_accuracy` take the dict `engine.compare.compare` returns and also
display inline in a notebook.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading

import holoviews as hv
import pandas as pd
import panel as pn

import engine
from engine.compare import compare, format_table
from engine.registry import METHODS

from explorer.plots import COMMON, _empty

DEFAULT_METHODS = ["imp", "oneshot", "snip", "grasp", "synflow", "rigl", "set", "cs", "cts", "edgepopup"]
_WORKER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="leaderboard")


def _frame(result: dict | None) -> pd.DataFrame:
    rows = [{"method": r["method"], "density": r["density"], "accuracy": 100 * r["test_accuracy_mean"],
             "std": 100 * r["test_accuracy_std"], "search steps": r["search_steps"],
             "search seconds": r["search_seconds"], "target": r["target_density"]}
            for r in (result or {}).get("rows", [])]
    return pd.DataFrame(rows, columns=["method", "density", "accuracy", "std", "search steps", "search seconds",
                                       "target"])


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
        self.button.on_click(lambda _: self.start())
        self.status = pn.pane.Markdown("", css_classes=["leaderboard-status"], sizing_mode="stretch_width")
        self.accuracy = pn.pane.HoloViews(accuracy_vs_density(None), sizing_mode="stretch_width",
                                          css_classes=["leaderboard-plot"])
        self.cost = pn.pane.HoloViews(cost_vs_accuracy(None), sizing_mode="stretch_width",
                                      css_classes=["cost-plot"])
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.future: cf.Future | None = None
        self.cancel_event = threading.Event()  # set when the page closes
        self.result: dict | None = None

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
        try:
            base = self.base_config()
        except engine.ConfigError as e:
            self.status.object = f"settings: {e}"
            return
        self.status.object = f"comparing {', '.join(methods)} at {densities} ({self.seeds.value} seed(s))..."
        self.cancel_event = threading.Event()
        self.future = _WORKER.submit(compare, base, methods, densities, int(self.seeds.value),
                                     runs_dir=self.runs_dir, cancel=self.cancel_event)

    def poll(self) -> bool:
        """Called on the event loop: True when a finished comparison was just shown."""
        if self.future is None or not self.future.done():
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
        return pn.Column(pn.Row(self.methods, self.densities, self.seeds, self.button, sizing_mode="stretch_width"),
                         self.status, pn.Row(self.accuracy, self.cost, sizing_mode="stretch_width"), self.table,
                         sizing_mode="stretch_width")
