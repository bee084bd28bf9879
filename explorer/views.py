"""The app's run views, each a tab (explorer.tabs): live training curves, accuracy and early stopping vs
density over the chosen runs, one run's masks, and the run browser. Light: JSON summaries.

The first page shows the Live tab, so this module imports neither HoloViews nor pandas (together about a
second of the page's start-up, tests/test_first_page_modules.py): the live curves are plain Bokeh figures,
and the other views import their HoloViews plots (explorer.plots) when first drawn.
"""
from __future__ import annotations

import time

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, NumeralTickFormatter
from bokeh.plotting import figure

from engine.store import RunStore
from explorer import engine_import

LIVE_PERIOD_S = 1.0  # redraw the live curves at most once a second
ENDED = ("completed", "cancelled", "failed")
CURVE_COLUMNS = ["iteration", "train_loss", "val_accuracy", "test_accuracy"]
RUN_ID_PX = 360  # a run select this wide shows a whole run id (~45 characters)


class RunChoice:
    """The run, level and layer that Masks and Analyses show: the same three selects in both tabs.
    `on_change()` is called once per change the user (or a finished level) makes."""

    def __init__(self, browser, on_change):
        self.browser, self.on_change = browser, on_change
        self.run = pn.widgets.Select(label="run", options=[], sizing_mode="stretch_width")
        self.level = pn.widgets.Select(label="level", options=[], width=120)
        self.layer = pn.widgets.Select(label="layer", options=[], width=220)
        self._quiet = False  # while the run's levels and layers are set: one on_change, not three
        self.run.param.watch(lambda e: self._on_run(), "value")
        self.level.param.watch(lambda e: self._on_level(), "value")
        self.layer.param.watch(lambda e: self._changed(), "value")

    @property
    def value(self) -> tuple:
        return self.run.value, self.level.value, self.layer.value

    def summary(self) -> dict | None:
        return next((s for s in self.browser.summaries if s["run_id"] == self.run.value), None)

    def update(self, focus: str | None = None) -> None:
        """The store changed: offer its runs, keeping the chosen one (or `focus`, the run training now)."""
        # not zoos: a zoo has no levels or masks (chosen here, Masks drew nothing and an analysis failed)
        ids = [s["run_id"] for s in self.browser.summaries if s.get("kind") != "zoo"]
        selected = [r for r in self.browser.selected if r in ids]
        current = focus if focus in ids else self.run.value if self.run.value in ids else \
            (selected[0] if selected else ids[0] if ids else None)
        self.run.options = ids
        if self.run.value != current:
            self.run.value = current  # calls _on_run
        else:
            self._on_run()  # the same run may have new levels

    def _rows(self) -> list[dict]:
        summary = self.summary()
        return ([summary["dense"]] if summary and summary.get("dense") else []) + (summary or {}).get("levels", [])

    def _on_run(self) -> None:
        levels = [r["level"] for r in self._rows()]
        old = self.level.options
        following = not old or self.level.value == old[-1]  # on the newest level: stay on the newest
        self._quiet = True
        try:
            self.level.options = levels
            if levels and (following or self.level.value not in levels):
                self.level.value = levels[-1]
            self._offer_layers()
        finally:
            self._quiet = False
        self.on_change()

    def _on_level(self) -> None:
        if self._quiet:
            return
        self._quiet = True
        try:
            self._offer_layers()
        finally:
            self._quiet = False
        self.on_change()

    def _offer_layers(self) -> None:
        """The chosen level's layers: they can differ between levels (a partial-lora run's dense net has its
        base weights, its tickets their adapters; offered the dense net's, the Masks tab drew nothing)."""
        row = next((r for r in self._rows() if r["level"] == self.level.value), None)
        layers = list(row["layers"]) if row else []
        self.layer.options = layers
        if layers and self.layer.value not in layers:
            self.layer.value = layers[0]

    def _changed(self) -> None:
        if not self._quiet:
            self.on_change()

    def row(self) -> pn.FlexBox:
        """The three selects; the level and layer go under the run where the page is too narrow for a whole run
        id beside them (in a Row at 1000 px, the run select showed 'imp-lenet300-digits-6165': ids differ
        only in their last characters)."""
        self.run.styles = {**self.run.styles, "flex": f"1 1 {RUN_ID_PX}px"}
        return pn.FlexBox(self.run, self.level, self.layer, sizing_mode="stretch_width")


class LiveView(pn.viewable.Viewer):
    """The launched run's accuracy and loss curves, streamed while it trains.

    Two Bokeh figures over one ColumnDataSource: an update sends only the new points
    (`ColumnDataSource.stream`, a few hundred bytes), no plot or model is rebuilt on the server, so the
    event loop is not held while the run trains; a new training (level, variant) replaces the data.
    """

    def __init__(self, app):
        super().__init__()
        self.app = app
        self.source = ColumnDataSource({c: [] for c in CURVE_COLUMNS})
        self.live = pn.pane.Bokeh(accuracy_figure(self.source), sizing_mode="stretch_width")
        self.loss = pn.pane.Bokeh(loss_figure(self.source), sizing_mode="stretch_width")
        self._training = None  # (session, level, variant) whose points the source holds
        self._sent, self._sent_at = 0, 0.0  # how many of its points, and when they were last sent

    def poll(self) -> bool:
        s = self.app.launcher.session if self.app.launcher is not None else None
        if s is None:
            return False
        training = (s, s.level, s.variant)
        if training == self._training and len(s.curve) == self._sent:
            return False
        if s.status not in ENDED and time.monotonic() - self._sent_at < LIVE_PERIOD_S:
            return False
        self._sent_at = time.monotonic()
        if training != self._training or len(s.curve) < self._sent:  # a new training: its points only
            self.source.data = _columns(s.curve)
            for fig, what in ((self.live.object, "accuracy"), (self.loss.object, "loss")):
                # which training the curves are of: after a run, its last (a control), not the ticket
                fig.title.text = f"Live training: {what}" + (f" (level {s.level} {s.variant})" if s.variant else "")
        else:
            self.source.stream(_columns(s.curve[self._sent:]))
        self._training, self._sent = training, len(s.curve)
        self._fit_ranges()
        return False

    def _fit_ranges(self) -> None:
        """Fixed ranges set from the data: Bokeh's automatic ranges draw no axes for a plot without points,
        and an iteration axis that grows as the data does is all the live curves need. 5% past the last point:
        at the axis's very end, a training evaluated once had its markers cut in half by the plot's edge."""
        data = self.source.data
        self.live.object.x_range.end = self.loss.object.x_range.end = 1.05 * max(data["iteration"], default=0) or 1
        self.loss.object.y_range.end = 1.05 * max((v for v in data["train_loss"] if v == v), default=0) or 1

    def __panel__(self):
        return pn.Column(self.live, self.loss, sizing_mode="stretch_width")


def _columns(points: list[dict]) -> dict[str, list]:
    return {c: [p[c] for p in points] for c in CURVE_COLUMNS}


def _live_figure(title: str, y_label: str, css_class: str):
    fig = figure(title=title, height=320, sizing_mode="stretch_width", x_axis_label="iteration",
                 y_axis_label=y_label, x_range=(0, 1), y_range=(0, 1), tools="pan,wheel_zoom,box_zoom,reset,save",
                 css_classes=[css_class])  # on the figure: Panel's Bokeh pane renders the figure itself
    fig.toolbar.logo = None
    return fig


def accuracy_figure(source: ColumnDataSource):
    """Validation (solid) and test (dotted) accuracy of the training in progress."""
    fig = _live_figure("Live training: accuracy", "accuracy (%)", "live-plot")
    # the points are the run's fractions; the axis and hover read them in %, as every accuracy in the app
    fig.yaxis.formatter = NumeralTickFormatter(format="0%")
    val = fig.line("iteration", "val_accuracy", source=source, line_width=2, legend_label="val accuracy")
    fig.line("iteration", "test_accuracy", source=source, line_dash="dotted", color="#ff7f0e",
             legend_label="test accuracy")
    # markers: a training evaluated once (one epoch, a short control) is one point, which a line does not draw
    fig.scatter("iteration", "val_accuracy", source=source, size=4, legend_label="val accuracy")
    fig.scatter("iteration", "test_accuracy", source=source, size=4, color="#ff7f0e", legend_label="test accuracy")
    fig.add_tools(HoverTool(renderers=[val], tooltips=[("iteration", "@iteration"), ("val", "@val_accuracy{0.0%}"),
                                                       ("test", "@test_accuracy{0.0%}")]))
    fig.legend.location = "bottom_right"
    return fig


def loss_figure(source: ColumnDataSource):
    """Mean training loss between evaluations of the training in progress."""
    fig = _live_figure("Live training: loss", "training loss", "loss-plot")
    line = fig.line("iteration", "train_loss", source=source, color="firebrick", line_width=2)
    fig.scatter("iteration", "train_loss", source=source, color="firebrick", size=4)
    fig.add_tools(HoverTool(renderers=[line], tooltips=[("iteration", "@iteration"), ("loss", "@train_loss{0.0000}")]))
    return fig


class AccuracyView(pn.viewable.Viewer):
    """Test accuracy vs density of the runs chosen in the browser (all runs when none is)."""

    def __init__(self, app):
        super().__init__()
        self.app = app
        self.plot = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["accuracy-plot"])
        self._drawn_for: list | None = None  # the summaries the plot shows

    def refresh(self) -> None:
        """Redraw when the chosen runs' summaries changed: the tab is marked stale by any change of the app's
        choice too (a layer picked in Masks), and a plot of a dozen runs takes seconds to reach the page."""
        chosen = self.app.browser.chosen()
        if chosen == self._drawn_for:
            return
        self._drawn_for = chosen
        self.plot.object = self.draw(chosen)

    def draw(self, summaries: list[dict]):
        with engine_import.holoviews_import():  # HoloViews: loaded when a plot of stored runs is first drawn
            from explorer import plots

        return plots.accuracy_vs_density(summaries)

    def __panel__(self):
        return self.plot


class EarlyStopView(AccuracyView):
    """The early-stopping iteration vs density of the chosen runs."""

    def __init__(self, app):
        super().__init__(app)
        self.plot.css_classes = ["early-stop-plot"]

    def draw(self, summaries: list[dict]):
        with engine_import.holoviews_import():
            from explorer import plots

        return plots.early_stop_vs_density(summaries)


class MasksView(pn.viewable.Viewer):
    """Per-layer densities of the chosen run and the chosen layer's mask at the chosen level."""

    def __init__(self, app):
        super().__init__()
        self.app = app
        self.density = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["density-plot"])
        self.heatmap = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["mask-plot"])
        self._masks: dict = {}  # finished levels never change: cached by (run, level, layer)

    def refresh(self) -> None:
        with engine_import.holoviews_import():
            from explorer import plots

        run_id, level, layer = self.app.choice.value
        self.density.object = plots.density_bars(self.app.choice.summary())
        mask = self._mask(run_id, level, layer) if None not in (run_id, level, layer) else None
        self.heatmap.object = plots.mask_heatmap(mask, layer or "", level or 0)

    def _mask(self, run_id, level, layer):
        key = (run_id, level, layer)
        if key not in self._masks:
            store = RunStore(self.app.runs_dir, run_id)
            if store.level_record("ticket", level) is None:
                return None
            mask = store.load_mask("ticket", level)
            self._masks[key] = mask[layer].numpy().astype(np.uint8) if layer in mask else None
        return self._masks[key]

    def __panel__(self):
        return pn.Column(self.density, self.app.choice.row(), self.heatmap, sizing_mode="stretch_width")


def runs(app):
    """The Runs tab: the app's run browser (the app keeps it, since every view reads its runs; it re-reads
    the store itself, so the tab has no refresh of its own)."""
    return pn.Column(app.browser, sizing_mode="stretch_width")
