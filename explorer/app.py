"""The Lottery Ticket Explorer app: launch panel, live training, ticket views and the run browser.

    lottery serve                      # or: panel serve explorer/app.py
    ExplorerApp(runs_dir="runs")       # in a notebook cell: the same views, inline

Runs train on worker threads; a periodic callback (4 Hz) drains their events into the views, so the
event loop never waits for training. Closing the browser tab cancels that page's run.
"""
from __future__ import annotations

import os
import time

import holoviews as hv
import numpy as np
import panel as pn
import param

from engine.store import RunStore

# absolute imports: `panel serve explorer/app.py` runs this file as a script, not as part of the package
from explorer import engine_import, plots
from explorer.browser import RunBrowser

POLL_MS = 250        # drain run events 4 times a second
LIVE_PERIOD_S = 1.0  # redraw the live curves at most once a second
RUNS_DIR_ENV = "LOTTERY_RUNS_DIR"


class ExplorerApp(pn.viewable.Viewer):
    runs_dir = param.String(default="runs")

    def __init__(self, **params):
        params.setdefault("runs_dir", os.environ.get(RUNS_DIR_ENV, "runs"))
        super().__init__(**params)
        self.browser = RunBrowser(self.runs_dir)
        # The launch panel and the analyses need the engine's torch side: see explorer.engine_import.
        self.launcher = self.analyses = self.leaderboard = self.hardware = None
        self._sidebar = pn.Column(_loading(), sizing_mode="stretch_width")
        self._analyses_tab = pn.Column(_loading(), sizing_mode="stretch_width")
        self._leaderboard_tab = pn.Column(_loading(), sizing_mode="stretch_width")
        self._hardware_tab = pn.Column(_loading(), sizing_mode="stretch_width")
        # Live curves stream through a Pipe into DynamicMaps: Bokeh updates the data in place (tens of ms)
        # instead of rebuilding the plot (hundreds of ms that would stall the event loop).
        self.live_pipe = hv.streams.Pipe(data=[])
        self.live = pn.pane.HoloViews(hv.DynamicMap(plots.learning_curve, streams=[self.live_pipe]),
                                      sizing_mode="stretch_width", css_classes=["live-plot"])
        self.loss = pn.pane.HoloViews(hv.DynamicMap(plots.loss_curve, streams=[self.live_pipe]),
                                      sizing_mode="stretch_width", css_classes=["loss-plot"])
        self._curve_sent = 0.0
        self.accuracy = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["accuracy-plot"])
        self.early_stop = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["early-stop-plot"])
        self.density = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["density-plot"])
        self.heatmap = pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=["mask-plot"])
        self.run_select = pn.widgets.Select(label="run", options=[], sizing_mode="stretch_width")
        self.level_select = pn.widgets.Select(label="level", options=[], width=120)
        self.layer_select = pn.widgets.Select(label="layer", options=[], width=220)
        self.run_select.param.watch(lambda e: self._on_run_choice(), "value")
        self.level_select.param.watch(lambda e: self._on_level_or_layer(), "value")
        self.layer_select.param.watch(lambda e: self._on_level_or_layer(), "value")
        self.browser.param.watch(lambda e: self.refresh_views(), "selected")
        self._stale: set[str] = set()
        self._tabs = self.tabs()
        self._tabs.param.watch(lambda e: self.draw_visible(), "active")
        self._seen = (None, -1, "")
        self._curve_key = None
        self._mask_cache: dict = {}
        self._callback = None
        self._engine = engine_import.current  # None: not served by `lottery serve`, imported right here
        self._waiting_for_engine = self._engine is not None and not self._engine.ready()
        if not self._waiting_for_engine:
            self._attach_engine()
        self.refresh_views()

    def _attach_engine(self) -> None:
        """Put the launch panel, the analyses, the leaderboard and the hardware probes in place of their
        "loading engine…" notes."""
        from explorer.analyses import AnalysisPanel
        from explorer.hardware import HardwarePanel
        from explorer.launch import LaunchPanel
        from explorer.leaderboard import LeaderboardPanel

        self.launcher = LaunchPanel(self.runs_dir)
        self.analyses = AnalysisPanel(self.runs_dir)
        self.leaderboard = LeaderboardPanel(self.runs_dir, base_config=self.launcher.config)
        self.hardware = HardwarePanel(self.runs_dir)
        self._sidebar[:] = [self.launcher]
        self._analyses_tab[:] = [self.analyses]
        self._leaderboard_tab[:] = [self.leaderboard]
        self._hardware_tab[:] = [self.hardware]

    def _take_engine_when_imported(self) -> None:
        """(tick) Attach the engine's panels once it is imported and the page has loaded: panels put in
        before the browser has loaded the page can fail to reach it."""
        if not (self._engine.future.done() and pn.state.loaded):
            return
        self._waiting_for_engine = False
        error = self._engine.future.exception()
        if error is None:
            self._attach_engine()
            self.draw_visible()
            return
        failed = pn.pane.Alert(f"The engine failed to load: {error!r}", alert_type="danger",
                               css_classes=["run-error"])
        for column in (self._sidebar, self._analyses_tab, self._leaderboard_tab, self._hardware_tab):
            column[:] = [failed]

    # ------------------------------------------------------------ live updates
    def start_polling(self) -> None:
        """Drain run events on the event loop every POLL_MS (needs a Panel session or a notebook comm)."""
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.tick, period=POLL_MS)

    def stop(self) -> None:
        """Cancel this page's run and stop polling (the session is gone)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        if self.launcher is not None:
            self.launcher.cancel()
            for worker in (self.analyses, self.leaderboard, self.hardware):
                worker.cancel_event.set()

    def tick(self) -> None:
        if self._waiting_for_engine:
            self._take_engine_when_imported()
        if self.launcher is None:
            return
        self.launcher.drain()
        self.analyses.poll()
        self.hardware.poll()
        if self.leaderboard.poll():  # the comparison stored new runs
            self.browser.refresh()
            self.hardware.refresh_runs()
        s = self.launcher.session
        if s is None:
            return
        done = s.status in ("completed", "cancelled", "failed")
        key = (s.run_id, s.level, s.variant, len(s.curve))
        if key != self._curve_key and (done or time.monotonic() - self._curve_sent >= LIVE_PERIOD_S):
            self._curve_key, self._curve_sent = key, time.monotonic()
            self.live_pipe.send(list(s.curve))
        state = (s.run_id, s.levels_done, s.status)
        if state != self._seen:
            self._seen = state
            self.browser.refresh()
            self.hardware.refresh_runs()
            self.refresh_views(focus=s.run_id)

    # ------------------------------------------------------------ views
    # Only the visible tab's plots are rebuilt (building a HoloViews plot costs tens of milliseconds on the
    # event loop); the others are marked stale and drawn when their tab is opened.
    TAB_NAMES = ("Live", "Accuracy", "Early stopping", "Masks", "Analyses", "Leaderboard", "Hardware", "Runs")

    def refresh_views(self, focus: str | None = None) -> None:
        """The store changed (a level finished, a run was selected or deleted): update the run choice and
        redraw what is visible."""
        ids = [s["run_id"] for s in self.browser.summaries]
        current = focus if focus in ids else self.run_select.value if self.run_select.value in ids else \
            (self.browser.selected[0] if self.browser.selected else ids[0] if ids else None)
        self._stale = {"Accuracy", "Early stopping", "Masks", "Analyses"}
        self.run_select.options = ids
        if self.run_select.value != current:
            self.run_select.value = current  # triggers _on_run_choice
        else:
            self._on_run_choice()  # the same run may have new levels

    def draw_visible(self, everything: bool = False) -> None:
        """Draw the stale plots of the active tab (or of every tab)."""
        active = self.TAB_NAMES[self._tabs.active]
        for name in [n for n in self.TAB_NAMES if n in self._stale and (everything or n == active)]:
            if name == "Analyses" and self.analyses is None:
                continue  # stays stale: drawn once the engine is in
            self._stale.discard(name)
            if name == "Accuracy":
                self.accuracy.object = plots.accuracy_vs_density(self.browser.chosen())
            elif name == "Early stopping":
                self.early_stop.object = plots.early_stop_vs_density(self.browser.chosen())
            elif name == "Masks":
                self._draw_run()
            elif name == "Analyses":
                self.analyses.show(self.run_select.value, self.level_select.value, self.layer_select.value)

    def _summary(self, run_id):
        return next((s for s in self.browser.summaries if s["run_id"] == run_id), None)

    def _on_run_choice(self) -> None:
        summary = self._summary(self.run_select.value)
        rows = ([summary["dense"]] if summary and summary.get("dense") else []) + (summary or {}).get("levels", [])
        levels = [r["level"] for r in rows]
        layers = list(rows[0]["layers"]) if rows else []
        old = self.level_select.options
        following = not old or self.level_select.value == old[-1]  # on the newest level: stay on the newest
        self.level_select.options = levels
        if levels and (following or self.level_select.value not in levels):
            self.level_select.value = levels[-1]
        self.layer_select.options = layers
        if layers and self.layer_select.value not in layers:
            self.layer_select.value = layers[0]
        self._stale |= {"Masks", "Analyses"}
        self.draw_visible()

    def _on_level_or_layer(self) -> None:
        self._stale |= {"Masks", "Analyses"}
        self.draw_visible()

    def _draw_run(self) -> None:
        """The Masks tab: per-layer densities of the chosen run and the chosen layer's mask."""
        run_id, level, layer = self.run_select.value, self.level_select.value, self.layer_select.value
        self.density.object = plots.density_bars(self._summary(run_id))
        mask = self._mask(run_id, level, layer) if None not in (run_id, level, layer) else None
        self.heatmap.object = plots.mask_heatmap(mask, layer or "", level or 0)

    def _mask(self, run_id, level, layer):
        """A layer's mask from the store; finished levels never change, so they are cached."""
        key = (run_id, level, layer)
        if key not in self._mask_cache:
            store = RunStore(self.runs_dir, run_id)
            if store.level_record("ticket", level) is None:
                return None
            mask = store.load_mask("ticket", level)
            self._mask_cache[key] = mask[layer].numpy().astype(np.uint8) if layer in mask else None
        return self._mask_cache[key]

    def tabs(self) -> pn.Tabs:
        masks = pn.Column(self.density, pn.Row(self.run_select, self.level_select, self.layer_select),
                          self.heatmap, sizing_mode="stretch_width")
        return pn.Tabs(("Live", pn.Column(self.live, self.loss, sizing_mode="stretch_width")),
                       ("Accuracy", self.accuracy), ("Early stopping", self.early_stop),
                       ("Masks", masks), ("Analyses", pn.Column(pn.Row(self.run_select, self.level_select,
                                                                         self.layer_select), self._analyses_tab)),
                       ("Leaderboard", self._leaderboard_tab), ("Hardware", self._hardware_tab),
                       ("Runs", self.browser), dynamic=True, sizing_mode="stretch_width")

    def __panel__(self):  # inline in a notebook
        return pn.Row(pn.Column(self._sidebar, width=320), self._tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.FastListTemplate:
        """The served page: the same views in a FastListTemplate."""
        return pn.template.FastListTemplate(title="Lottery Ticket Explorer", sidebar=[self._sidebar],
                                            main=[self._tabs], sidebar_width=340, accent="#1f4e79")


def _loading() -> pn.pane.Markdown:
    return pn.pane.Markdown("Loading engine…", css_classes=["engine-loading"], sizing_mode="stretch_width")


def session_app(runs_dir: str | None = None) -> pn.template.FastListTemplate:
    """One app per browser session: its own launcher and run, polling, and cleanup when the tab closes."""
    app = ExplorerApp(**({"runs_dir": runs_dir} if runs_dir else {}))
    app.start_polling()
    if engine_import.current is not None:  # `lottery serve`: the engine is imported once a page has loaded
        engine_import.current.pages += 1
        pn.state.onload(engine_import.current.start)
    pn.state.on_session_destroyed(lambda ctx: app.stop())
    return app.template()


# `panel serve explorer/app.py` runs this file as a script; imported as the package module it skips the check
# (pn.state.served calls inspect.stack(), about 60 ms)
if __name__ != "explorer.app" and pn.state.served:
    pn.extension("tabulator", notifications=False)
    session_app().servable()
