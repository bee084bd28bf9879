"""An ipywidgets launcher for classic notebooks: `explorer.widgets.launcher()`.

The same settings as the Panel launch panel (generated from the engine's config), the same
`RunSession` underneath. Without Panel's periodic callback, a background job (explorer.jobs) applies
the run's events to the widgets four times a second (ipywidgets may be updated from any thread).
"""
from __future__ import annotations

import html

import ipywidgets as W

import engine
from engine.formatting import format_summary
from engine.settings import READ_UNDER_VALUES, Setting, config_from_settings, read_by, run_settings

from .jobs import Job
from .launch import PRIMARY
from .session import RunSession


def _widget(s: Setting) -> W.Widget:
    label = s.path.split(".")[-1].replace("_", " ")
    style = {"description_width": "110px"}
    if s.type is tuple and s.choices:
        return W.SelectMultiple(options=s.choices, value=tuple(s.default), description=label, style=style,
                                rows=len(s.choices))
    if s.choices and s.path != "data.dataset":
        return W.Dropdown(options=s.choices, value=s.default, description=label, style=style)
    if s.type is bool:
        return W.Checkbox(value=s.default, description=label, style=style)
    if s.type is int:
        return W.IntText(value=s.default, description=label, style=style)
    if s.type is float:
        return W.FloatText(value=s.default, description=label, style=style)
    return W.Text(value=s.format(s.default), description=label, style=style)


class Launcher(W.VBox):
    """Settings, Launch/Cancel, a progress bar, a status line and the finished run's table."""

    def __init__(self, runs_dir="runs"):
        self.runs_dir = runs_dir
        self.settings = {s.path: s for s in run_settings()}
        self.fields = {path: _widget(s) for path, s in self.settings.items()}
        for path, w in self.fields.items():
            w.tooltip = self.settings[path].help
        self.launch_button = W.Button(description="Launch", button_style="primary")
        self.cancel_button = W.Button(description="Cancel", button_style="warning", disabled=True)
        self.progress = W.FloatProgress(value=0, min=0, max=100, description="progress")
        self.status = W.HTML("Ready.")
        self.output = W.Output()
        self.session: RunSession | None = None
        for path in ("prune.method", *READ_UNDER_VALUES):  # (--nm shows with --pattern nm chosen)
            self.fields[path].observe(lambda change: self._show_method_options(), "value")
        self._show_method_options()
        self.launch_button.on_click(lambda _: self.launch())
        self.cancel_button.on_click(lambda _: self.cancel())
        more = W.Accordion(children=[W.VBox([w for p, w in self.fields.items() if p not in PRIMARY])])
        more.set_title(0, "More settings")
        super().__init__([*(self.fields[p] for p in PRIMARY), more,
                          W.HBox([self.launch_button, self.cancel_button]), self.progress, self.status,
                          self.output])

    def _show_method_options(self) -> None:
        """A method's own options are shown (and sent) only while it is chosen, as in the Panel launch panel."""
        for path, w in self.fields.items():
            w.layout.display = None if self._applies(path) else "none"

    def _applies(self, path: str) -> bool:
        given = {p: self.fields[p].value for p in READ_UNDER_VALUES}
        return read_by(path, self.fields["prune.method"].value, given)

    def values(self) -> dict:
        """{setting path: value} of the settings the chosen method reads (engine.settings.read_by): the others
        keep their defaults, so they cannot change the run id."""
        return {p: tuple(w.value) if isinstance(w.value, (list, tuple)) else w.value
                for p, w in self.fields.items() if self._applies(p)}

    def config(self) -> engine.RunConfig:
        return config_from_settings(self.values())

    def launch(self) -> RunSession | None:
        try:
            cfg = self.config()
        except engine.ConfigError as e:
            self._error(str(e))
            return None
        self.session = RunSession(cfg, self.runs_dir)
        self.session.start()
        self.launch_button.disabled, self.cancel_button.disabled = True, False
        session = self.session
        Job(lambda job: self._follow(session), name=f"follow-{session.run_id}")
        return self.session

    def _error(self, text: str) -> None:
        self.status.value = f"<b style='color:#b00'>error:</b> {html.escape(text, quote=False)}"  # as typed

    def cancel(self) -> None:
        if self.session is not None:
            self.session.cancel()

    def _follow(self, session: RunSession) -> None:
        while True:
            session.drain()
            self.progress.value = session.progress
            self.status.value = f"<b>{session.status}</b> — {html.escape(session.message, quote=False)}"
            if session.status in ("completed", "cancelled", "failed") and not session.alive:
                break
            session.join(0.25)
        session.drain()
        self.launch_button.disabled, self.cancel_button.disabled = False, True
        try:
            summary = engine.RunStore(self.runs_dir, session.run_id).summary()
        except engine.LotteryError as e:  # the store damaged since the run's own checks (StoreDamaged names the file)
            self._error(str(e))
            return
        if summary:
            with self.output:
                print(format_summary(summary))

    def wait(self, timeout: float | None = None) -> None:
        """Block until the launched run ends (for scripts and tests)."""
        if self.session is not None:
            self.session.join(timeout)


def launcher(runs_dir="runs") -> Launcher:
    return Launcher(runs_dir)
