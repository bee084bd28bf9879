"""The launch panel: widgets generated from the engine's config settings, Launch and Cancel.

One widget per `engine.settings.run_settings()` entry, so a new config field appears here without touching
this file. The settings a lottery-ticket user changes most are shown; the rest sit in "More settings".
"""
from __future__ import annotations

from collections.abc import Mapping

import panel as pn
import param

import engine
from engine.settings import READ_UNDER_VALUES, config_from_settings, read_by, run_settings

from .forms import widget_for, widget_value
from .session import RunSession

PRIMARY = ["model.model", "data.dataset", "prune.method", "prune.levels", "prune.prune_fraction", "prune.scope",
           "prune.rewind", "train.epochs", "seed", "prune.controls"]


class _Widgets(Mapping):
    """Setting path -> its widget, made on first use: making the fifty-odd behind "More settings", which most
    pages never open, was two thirds of building the launch panel (43 -> 15 ms here). A mapping over every
    setting: iterating it makes them all."""

    def __init__(self, settings: dict):
        self.settings = settings
        self._made: dict = {}

    def __getitem__(self, path: str):
        if path not in self._made:
            self._made[path] = widget_for(self.settings[path])  # (KeyError for a path that is no setting)
        return self._made[path]

    def __contains__(self, path) -> bool:
        return path in self.settings

    def made(self, path: str):
        """The widget of `path` if it has been made, else None (without making it)."""
        return self._made.get(path)

    def __iter__(self):
        return iter(self.settings)

    def __len__(self) -> int:
        return len(self.settings)


class LaunchPanel(pn.viewable.Viewer):
    """Start runs on worker threads; show their progress, errors and a Cancel button."""

    session = param.ClassSelector(class_=RunSession, allow_None=True, default=None)
    error = param.String(default="")

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.settings = {s.path: s for s in run_settings()}
        self.widgets = _Widgets(self.settings)  # made when first wanted (PRIMARY's: by the panel's layout)
        self.launch_button = pn.widgets.Button(label="Launch", color="primary", sizing_mode="stretch_width",
                                               css_classes=["launch-button"])
        self.cancel_button = pn.widgets.Button(label="Cancel", color="warning", disabled=True,
                                               sizing_mode="stretch_width", css_classes=["cancel-button"])
        self.launch_button.on_click(lambda _: self.launch())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="primary",
                                               css_classes=["run-progress"])
        self.status = pn.pane.Markdown("Ready. Defaults: LeNet-300-100 on digits, IMP with rewinding to init.",
                                       css_classes=["run-status"], sizing_mode="stretch_width")
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["run-error"],
                                   sizing_mode="stretch_width")
        # The settings beyond PRIMARY (about fifty) go into their card when it is first opened: rendered
        # collapsed, they were most of the launch panel's models, sent to every page that never opens it.
        self.more = pn.Card(title="More settings", collapsed=True, sizing_mode="stretch_width")
        self.more.param.watch(lambda e: self._fill_more(), "collapsed")
        # A method's own options (synflow's rounds, bayes-imp's samples...) are shown and sent only while that
        # method is chosen: another method's option changed on the form would still enter the config and change
        # the run id of a run that never reads it (`lottery run` refuses such a flag)
        # the same for a shared setting the method never reads (--levels with snip chosen: engine.settings.read_by)
        # and one the model or data set never reads (--hidden but on the mlp, --max-length on images)
        self._method_options = [p for p in self.settings if p != "prune.method"]
        for path in ("prune.method", *[p for p in READ_UNDER_VALUES if p in PRIMARY]):
            self.widgets[path].param.watch(lambda e: self._show_method_options(), "value")

    # ------------------------------------------------------------ actions
    def values(self) -> dict:
        """{setting path: value} of the chosen method's run (other methods' options left out: their defaults)."""
        return {path: widget_value(self.widgets[path]) for path in self.settings if self._applies(path)}

    def _applies(self, path: str) -> bool:
        # (--nm is read under --pattern nm only; a widget not made yet holds its default)
        given = {p: self.settings[p].default if (w := self.widgets.made(p)) is None else w.value
                 for p in READ_UNDER_VALUES}
        return read_by(path, self.widgets["prune.method"].value, given)

    def set_values(self, **values) -> None:
        """Set widgets by setting path (tests, notebooks): set_values(**{"train.epochs": 3})."""
        for path, v in values.items():
            w = self.widgets[path]
            w.value = list(v) if isinstance(w, pn.widgets.MultiChoice) else v

    def config(self) -> engine.RunConfig:
        return config_from_settings(self.values())

    def launch(self) -> RunSession | None:
        if self.session is not None and self.session.alive:
            self._show_error("a run is already going on this page; cancel it or wait for it to finish")
            return None
        try:
            cfg = self.config()
        except engine.ConfigError as e:
            self._show_error(str(e))
            return None
        self._show_error("")
        session = RunSession(cfg, self.runs_dir)
        self.session = session
        session.start()
        self._sync()
        return session

    def cancel(self) -> None:
        if self.session is not None:
            self.session.cancel()
            self._sync()

    def drain(self) -> int:
        """Apply the active run's events (called by the app's periodic callback)."""
        if self.session is None:
            return 0
        n = self.session.drain()
        if n:
            self._sync()
        return n

    def _show_error(self, text: str) -> None:
        self.error = text
        self.alert.object = text
        self.alert.visible = bool(text)

    def _sync(self) -> None:
        s = self.session
        running = s is not None and s.status in ("starting", "running")
        self.launch_button.disabled = running
        self.cancel_button.disabled = not running
        if s is None:
            return
        self.progress.value = int(s.progress)
        self.status.object = f"**{s.status}** — {s.message}"
        if s.status == "failed":
            self._show_error(s.error)

    # ------------------------------------------------------------ view
    def _fill_more(self) -> None:
        if not self.more.collapsed and not len(self.more):
            self.more[:] = [self.widgets[p] for p in self.settings if p not in PRIMARY]
            for path in READ_UNDER_VALUES:  # in the card: --nm shows once --pattern nm is chosen
                if path not in PRIMARY:  # (those are watched from the start)
                    self.widgets[path].param.watch(lambda e: self._show_method_options(), "value")
            self._show_method_options()

    def _show_method_options(self) -> None:
        for path in self._method_options:  # (the card's widgets are made when it is first opened)
            if path in PRIMARY or len(self.more):
                self.widgets[path].visible = self._applies(path)

    def __panel__(self):
        return pn.Column(
            "### Launch a run", *[self.widgets[p] for p in PRIMARY], self.more,
            pn.Row(self.launch_button, self.cancel_button, sizing_mode="stretch_width"),
            self.progress, self.status, self.alert, sizing_mode="stretch_width")
