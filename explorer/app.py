"""The Lottery Ticket Explorer app: the launch panel beside the tabs of explorer.tabs.

    lottery serve                      # or: panel serve explorer/app.py
    ExplorerApp(runs_dir="runs")       # in a notebook cell: the same views, inline

Each tab is built on its first visit (its module imported then); only the visible tab is redrawn when the
store or the chosen run changes, the others when opened. Long work (runs, analyses, comparisons, probes)
runs on background jobs (explorer.jobs); a periodic callback (4 Hz) drains their events into the views,
so the event loop never waits for training. Closing the browser tab cancels that page's work.
"""
from __future__ import annotations

import os
import time
import traceback

import panel as pn
import param

# absolute imports: `panel serve explorer/app.py` runs this file as a script, not as part of the package
from explorer import engine_import, offline, tabs
from explorer.browser import RunBrowser
from explorer.views import RunChoice

# The tabs' titles wrap onto more rows where the page is too narrow for them all: Bokeh scrolls them sideways with
# no scroll bar, and at 1400 px the last ones of the thirteen were past the right edge with nothing to say so
WRAP_TAB_TITLES = ".bk-headers-wrapper { flex-wrap: wrap; }"
POLL_MS = 250        # drain background events 4 times a second
ENGINE_POLL_MS = 50  # while the engine imports: its panels go in within this of it being done
STORE_CHECK_S = 2.0  # how often a tick looks for runs added or deleted outside this page (the CLI, a shell)
RUNS_DIR_ENV = "LOTTERY_RUNS_DIR"


class ExplorerApp(pn.viewable.Viewer):
    runs_dir = param.String(default="runs")

    def __init__(self, **params):
        params.setdefault("runs_dir", os.environ.get(RUNS_DIR_ENV, "runs"))
        super().__init__(**params)
        self.browser = RunBrowser(self.runs_dir)
        self.choice = RunChoice(self.browser, on_change=self._changed)
        self.tabs = list(tabs.TABS)  # explorer/tabs.py: the tabs, in order
        self.views: dict = {}        # title -> the tab's Viewer, once visited
        self._stale: set[str] = set()  # built tabs to redraw when next shown
        # The launch panel and the engine tabs need the engine's torch side: see explorer.engine_import.
        self.launcher = None
        self._engine = engine_import.current  # None: not served by `lottery serve`, imported right here
        self._engine_error: BaseException | None = None
        self._sidebar = pn.Column(_loading(), sizing_mode="stretch_width")
        self._tab_bar = pn.Tabs(*[(t.title, pn.Column(sizing_mode="stretch_width")) for t in self.tabs],
                                dynamic=True, sizing_mode="stretch_width", stylesheets=[WRAP_TAB_TITLES])
        self._tab_bar.param.watch(lambda e: self._show_active(), "active")
        self.browser.param.watch(lambda e: self.refresh_views(), "selected")
        self._callback = None
        self._engine_watch = None  # the periodic check for the engine's import, while it runs
        self._run_state = None  # the launched run's (id, levels done, status) at the last tick
        self._store_checked = time.monotonic()
        self._waiting_for_engine = self._engine is not None and not self._engine.ready()
        if not self._waiting_for_engine:
            self._attach_engine()
        self.refresh_views()

    # ------------------------------------------------------------ tabs
    def open(self, title: str):
        """Show the tab `title` (tests, notebooks) and return its Viewer (None while it waits for the engine)."""
        self._tab_bar.active = [t.title for t in self.tabs].index(title)
        return self.views.get(title)

    def tab_column(self, title: str) -> pn.Column:
        """What the tab `title` holds: its Viewer once built, else a note."""
        return self._tab_bar[[t.title for t in self.tabs].index(title)]

    def _show_active(self) -> None:
        """Build the visible tab on its first visit; redraw it if the store or the choice changed."""
        tab = self.tabs[self._tab_bar.active]
        if tab.title not in self.views and not self._build(tab):
            return
        if tab.title in self._stale:
            self._stale.discard(tab.title)
            view = self.views[tab.title]
            if hasattr(view, "refresh"):
                view.refresh()

    def _build(self, tab) -> bool:
        column = self._tab_bar[self.tabs.index(tab)]
        if tab.engine and self.launcher is None:  # still importing (or failed): say so, build once it is in
            column[:] = [_engine_failed(self._engine_error) if self._engine_error else _loading()]
            return False
        try:
            self.views[tab.title] = view = tab.build(self)
            # drawn before it goes on the page: refreshed once there, every plot it had drawn was rendered and
            # sent to the browser twice (the Stability tab's four plots: a second of a first visit)
            if hasattr(view, "refresh") and not getattr(view, "draws_when_made", False):
                view.refresh()
        except Exception as e:  # a broken tab says so in its place; the others keep working
            traceback.print_exc()
            self.views.pop(tab.title, None)
            column[:] = [pn.pane.Alert(f"The {tab.title} tab failed to open: {type(e).__name__}: {e}",
                                       alert_type="danger", css_classes=["tab-error"])]
            return False
        column[:] = [view]
        return True

    def _changed(self) -> None:
        """The store or the chosen run changed: every built tab is stale, the visible one is redrawn now."""
        self._stale = set(self.views)
        self._show_active()

    def refresh_views(self, focus: str | None = None) -> None:
        """The store changed (a level finished, a run was selected or deleted): update the run choice and
        redraw what is visible."""
        self.choice.update(focus)  # calls _changed

    # ------------------------------------------------------------ the engine
    def _attach_engine(self) -> None:
        """Put the launch panel in place of its "loading engine…" note; engine tabs build when visited."""
        from explorer.launch import LaunchPanel

        self.launcher = LaunchPanel(self.runs_dir)
        self._sidebar[:] = [self.launcher]
        if self.browser.shown:  # (its notes come from the methods' specs: left out while the engine imported)
            self.browser.refresh()
        self._show_active()

    def _take_engine_when_imported(self) -> None:
        """(engine watch, tick) Attach the engine's panels once it is imported and the page has loaded: panels put in
        before the browser has loaded the page can fail to reach it."""
        if not (self._waiting_for_engine and self._engine.future.done() and pn.state.loaded):
            return
        self._waiting_for_engine = False
        if self._engine_watch is not None:
            self._engine_watch.stop()
            self._engine_watch = None
        self._engine_error = self._engine.future.exception()
        if self._engine_error is None:
            with _rebuilding():
                self._attach_engine()
            return
        self._sidebar[:] = [_engine_failed(self._engine_error)]
        self._show_active()

    # ------------------------------------------------------------ live updates
    def start_polling(self) -> None:
        """Drain background events on the event loop every POLL_MS (needs a Panel session or a notebook comm);
        until the engine is imported, look for it every ENGINE_POLL_MS (a check of a future: nothing to send)."""
        if self._callback is None:
            self._callback = _every(self.tick, POLL_MS)
        if self._waiting_for_engine and self._engine_watch is None:
            self._engine_watch = _every(self._take_engine_when_imported, ENGINE_POLL_MS)

    def stop(self) -> None:
        """Cancel this page's run and the tabs' work, and stop polling (the session is gone)."""
        for callback in (self._callback, self._engine_watch):
            if callback is not None:
                callback.stop()
        self._callback = self._engine_watch = None
        if self.launcher is not None:
            self.launcher.cancel()
        for view in self.views.values():
            if hasattr(view, "stop"):
                view.stop()

    def tick(self) -> None:
        with pn.io.hold():  # the tick's changes go to the browser as one message
            if self._waiting_for_engine:  # (the engine watch usually sees it first)
                self._take_engine_when_imported()
            focus = self._follow_run()
            stored = [view.poll() for view in list(self.views.values()) if hasattr(view, "poll")]
            if focus or any(stored):  # new levels or runs in the store, of this page's runs
                with _rebuilding():
                    self.browser.refresh()
                    self.refresh_views(focus=focus)
            else:
                self._take_outside_changes()

    def _take_outside_changes(self) -> None:
        """Every STORE_CHECK_S: runs added, deleted or grown by something else than this page (a run deleted with
        the CLI stayed listed in Runs, Accuracy and Masks until Refresh was clicked) are re-read. The views are
        redrawn when runs came or went, or a run they show grew; a level stored by a `lottery compare` in a
        terminal, of a run no view shows, updates the Runs table only (a redraw of every view every few seconds
        reset the Masks view's zoom and cost seconds)."""
        if time.monotonic() - self._store_checked < STORE_CHECK_S:
            return
        self._store_checked = time.monotonic()
        changed = self.browser.changed_on_disk()
        if not changed:
            return
        ids = {s["run_id"] for s in self.browser.summaries}
        shown = {self.choice.run.value, *self.browser.selected}
        with _rebuilding():
            self.browser.refresh()
            if changed & shown or ids != {s["run_id"] for s in self.browser.summaries}:
                self.refresh_views()

    def _follow_run(self) -> str | None:
        """Apply the launched run's events; its id when it stored a level or ended (views re-read the store)."""
        if self.launcher is None:
            return None
        self.launcher.drain()
        s = self.launcher.session
        if s is None:
            return None
        state = (s.run_id, s.levels_done, s.status)
        if state == self._run_state:
            return None
        self._run_state = state
        return s.run_id

    # ------------------------------------------------------------ layout
    def __panel__(self):  # inline in a notebook
        return pn.Row(pn.Column(self._sidebar, width=320), self._tab_bar, sizing_mode="stretch_width")

    def template(self) -> pn.template.FastListTemplate:
        """The served page: the same views in a FastListTemplate."""
        return pn.template.FastListTemplate(title="Lottery Ticket Explorer", sidebar=[self._sidebar],
                                            main=[self._tab_bar], sidebar_width=340, accent="#1f4e79",
                                            design=offline.Fast)  # no web font from outside


def _rebuilding():
    """Around changes that add or replace many models: Bokeh recomputes the page's model graph (a walk over
    every model) once at the end instead of after each one. Not around every tick: the end of a freeze
    always recomputes, changed or not."""
    return pn.io.hold(freeze=True)


def _loading() -> pn.pane.HTML:
    # HTML, not Markdown: the first page's only Markdown pane made it import and build the Markdown parsers
    # (about 0.1 s of the session build)
    return pn.pane.HTML("Loading engine…", css_classes=["engine-loading"], sizing_mode="stretch_width")


def _engine_failed(error: BaseException) -> pn.pane.Alert:
    return pn.pane.Alert(f"The engine failed to load: {one_line(error)}", alert_type="danger",
                         css_classes=["run-error"])


def one_line(error: BaseException) -> str:
    """What a client is shown of an error: its type and first line; the traceback stays in the server's log."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def _every(callback, period_ms: int) -> pn.io.PeriodicCallback:
    """Call `callback` every period_ms on this session's event loop, without flagging the page busy (Panel's
    add_periodic_callback counts every call as busy work, and so sends each open page's busy indicator on and
    off at every call: eight messages a second per page for a poll that mostly finds nothing to do)."""
    callback = pn.io.PeriodicCallback(callback=callback, period=period_ms, background=True)
    callback.start()
    return callback


def session_app(runs_dir: str | None = None) -> pn.template.FastListTemplate:
    """One app per browser session: its own launcher and run, polling, and cleanup when the tab closes. A page
    that cannot be built shows one line; the traceback goes to the server's log, never to the client."""
    if engine_import.current is not None:  # `lottery serve`: a page is being built, the idle import waits
        engine_import.current.pages += 1  # and starts once this page has loaded in the browser (an error page too)
        pn.state.onload(engine_import.current.start)
    try:
        app = ExplorerApp(**({"runs_dir": runs_dir} if runs_dir else {}))
    except Exception as e:
        traceback.print_exc()
        return pn.template.FastListTemplate(title="Lottery Ticket Explorer", design=offline.Fast, main=[pn.pane.Alert(
            f"The explorer could not open its runs: {one_line(e)}", alert_type="danger", css_classes=["run-error"])])
    app.start_polling()
    pn.state.on_session_destroyed(lambda ctx: app.stop())
    return app.template()


# `panel serve explorer/app.py` runs this file as a script; imported as the package module it skips the check
# (pn.state.served calls inspect.stack(), about 60 ms)
if __name__ != "explorer.app" and pn.state.served:
    pn.extension("tabulator", notifications=False)
    session_app().servable()
