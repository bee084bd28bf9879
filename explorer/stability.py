"""The Stability tab: the stability story (issue 17) of the runs in a store (engine.analysis.story).

    panel = StabilityPanel("runs")        # in a notebook: displays inline; in the app: the "Stability" tab

For one story (the runs of one setting that differ only in their rewind point and seed) it draws, side by
side: the dense net's error barrier vs rewind point k (each seed and the median, the 2% line); the
interpolation curves between the two trainings from each W_k; ticket test accuracy vs density for rewinding
to init, late rewinding (iter:K) and learning-rate rewinding, each with its reinit control (dashed); and the
instability of each ticket at its own rewind point, with the 2% line. "Run the preset" trains and analyses
the preset's story at one seed on a background job (what is stored is reused). The plots are pure functions
of the rows and records engine.analysis.story reads, so they draw inline in a notebook as well:

    barrier_plot(records)    records: story.dense_instability(...)
    accuracy_plot(rows)      rows: story.story_rows(...)
    ticket_instability_plot(rows)
"""
from __future__ import annotations

import statistics

import holoviews as hv
import pandas as pd
import panel as pn

from engine.analysis import story
from engine.errors import LotteryError
from engine.events import AnalysisProgress

from explorer import analysis_plots as ap
from explorer.inline import follow
from explorer.jobs import Job, error_message
from explorer.plots import COMMON, _empty, as_typed, side_by_side

REWIND_COLOR = {"init": "#d62728", "iter": "#1f77b4", "lr": "#2ca02c"}
THRESHOLD = 100 * story.STABLE_THRESHOLD


def _line(label: str = "stable (2%)") -> hv.HLine:
    return hv.HLine(THRESHOLD, label=label).opts(color="gray", line_dash="dashed", line_width=1)


# ---------------------------------------------------------------- plots (pure: records/rows in, HoloViews out)
def barrier_plot(records: list[dict]) -> hv.Element:
    """The dense net's error barrier (%) vs rewind point k for each seed (thin) and their median (thick)."""
    title = "Dense instability: error barrier vs rewind point k"
    if not records:
        return _empty(title, "no dense instability measured yet: Run the preset")
    elements = []
    for r in records:
        pts = list(zip(r["rewind_points"], [100 * b for b in r["barriers"]]))
        elements.append(hv.Curve(pts, "rewind iteration k", "error barrier (%)", label=f"seed {r['seed']}").opts(
            alpha=0.5, line_width=1, tools=["hover"]))
    common = set.intersection(*(set(r["rewind_points"]) for r in records))
    med = [(k, statistics.median(100 * r["barriers"][r["rewind_points"].index(k)] for r in records))
           for k in sorted(common)]
    if med:
        elements += [hv.Curve(med, "rewind iteration k", "error barrier (%)", label="median").opts(
                         color="black", line_width=3),
                     hv.Scatter(med, "rewind iteration k", "error barrier (%)").opts(color="black", size=8)]
    top = max(THRESHOLD, *(100 * b for r in records for b in r["barriers"])) * 1.15
    return hv.Overlay([*elements, _line()]).opts(title=title, ylim=(0, top), legend_position="top_right", **COMMON)


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["run_id", "rewind", "rewind_kind", "seed", "variant", "level", "density",
                                     "test_accuracy", "barrier"])
    df["setting"] = df["rewind"]
    return df


def accuracy_plot(rows: list[dict]) -> hv.Element:
    """Test accuracy (%) vs density for each rewind (colour): ticket solid, reinit control dashed, mean over
    seeds; the dense net's mean accuracy and, story.MATCH_MARGIN below it, the matching line (grey)."""
    title = "Ticket accuracy vs density: init / late rewinding / LR rewinding"
    df = _frame(rows)
    if df.empty:
        return _empty(title, "no story runs yet: Run the preset")
    elements = []
    dense = df[df.variant == "dense"]
    if not dense.empty:
        d = 100 * dense.test_accuracy.mean()
        elements += [hv.HLine(d).opts(color="black", line_width=1),
                     hv.HLine(d - 100 * story.MATCH_MARGIN).opts(color="gray", line_dash="dashed", line_width=1)]
    tickets = df[df.variant != "dense"]
    for (rewind, kind, variant), g in tickets.groupby(["rewind", "rewind_kind", "variant"], sort=False):
        m = g.groupby("level").agg(density=("density", "mean"), acc=("test_accuracy", "mean"),
                                   seeds=("seed", "nunique")).reset_index().sort_values("density", ascending=False)
        m["acc"] *= 100
        label = f"{rewind} {variant}"
        style = dict(color=REWIND_COLOR.get(kind, "gray"), line_dash="solid" if variant == "ticket" else "dashed")
        elements.append(hv.Curve(m, "density", ["acc", "seeds", "level"], label=label).opts(
            line_width=2, tools=["hover"], **style))
        elements.append(hv.Scatter(m, "density", ["acc", "seeds", "level"], label=label).opts(
            size=5, color=style["color"], tools=["hover"]))
    title = f"Ticket accuracy vs density (black: dense, grey: -{100 * story.MATCH_MARGIN:g} pt)"  # (<= 60 chars)
    return hv.Overlay(elements).opts(title=title, logx=True, invert_xaxis=True, xlabel="density (log)",
                                     ylabel="test accuracy (%)", legend_position="right",
                                     **COMMON)  # (legend inside, it hid the reinit curves)


def ticket_instability_plot(rows: list[dict]) -> hv.Element:
    """Each ticket's error barrier (%) at its own rewind point vs density, mean over seeds, with the 2% line."""
    title = "Ticket instability at its own rewind point"
    df = _frame(rows)
    df = df[(df.variant == "ticket") & df.barrier.notna()]
    if df.empty:
        return _empty(title, "no ticket instability measured yet (learning-rate rewinding has none: no W_k)")
    elements = []
    for (rewind, kind), g in df.groupby(["rewind", "rewind_kind"], sort=False):
        m = g.groupby("level").agg(density=("density", "mean"), barrier=("barrier", "mean")).reset_index()
        m = m.sort_values("density", ascending=False)
        m["barrier"] *= 100
        color = REWIND_COLOR.get(kind, "gray")
        elements += [hv.Curve(m, "density", ["barrier", "level"], label=rewind).opts(color=color, line_width=2,
                                                                                    tools=["hover"]),
                     hv.Scatter(m, "density", ["barrier", "level"], label=rewind).opts(color=color, size=6)]
    top = max(THRESHOLD, 100 * df.barrier.max()) * 1.15
    return hv.Overlay([*elements, _line()]).opts(title=title, logx=True, invert_xaxis=True, ylim=(0, top),
                                                 xlabel="density (log)", ylabel="error barrier (%)",
                                                 legend_position="top_left", **COMMON)


# ---------------------------------------------------------------- the tab
class StabilityPanel(pn.viewable.Viewer):
    """The stories stored in `runs_dir`, drawn side by side; a button that runs the preset's story.

    `preset` and `overrides` (setting paths, e.g. {"train.epochs": 1}) say what the button runs."""
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)

    def __init__(self, runs_dir, preset: str = "stability-story", overrides: dict | None = None, **params):
        super().__init__(**params)
        self.runs_dir, self.preset, self.overrides = runs_dir, preset, dict(overrides or {})
        self.groups: dict[str, list[str]] = {}
        # (in a FlexBox, at least 360 px: beside the buttons in a Row, 1000 px pages cut the story's name short)
        self.story = pn.widgets.Select(label="story", options=[], sizing_mode="stretch_width",
                                       styles={"flex": "1 1 360px"})
        self.story.param.watch(lambda e: self.draw(), "value")
        self.button = pn.widgets.Button(label=f"Run the {preset} preset", color="primary", width=230)
        self.button.on_click(lambda _: self.start())
        self.cancel_button = pn.widgets.Button(label="Stop", width=80, disabled=True)
        self.cancel_button.on_click(lambda _: self.stop())
        self.status = pn.pane.Markdown("", css_classes=["stability-status"], sizing_mode="stretch_width")
        self.panes = {k: pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=[f"stability-{k}"])
                      for k in ("barriers", "paths", "accuracy", "tickets")}
        self.job: Job | None = None
        self.polled_by_app = False  # True: the app's tick polls the job; False: the panel follows it (inline)
        self.refresh()

    @classmethod
    def for_app(cls, app) -> "StabilityPanel":
        panel = cls(app.runs_dir)
        panel.polled_by_app = True
        return panel

    def refresh(self) -> None:
        """Re-read the store's stories."""
        self._list()
        self.draw()

    def _list(self) -> None:
        """The store's stories in the select (the chosen one kept if it is still there)."""
        self.groups = story.story_groups(self.runs_dir)
        self.story.options = list(self.groups)
        if self.story.value not in self.groups:
            self.story.value = next(iter(self.groups), None)

    def draw(self, retry: bool = True) -> None:
        ids = self.groups.get(self.story.value, [])
        try:
            records = story.dense_instability(self.runs_dir, ids)
            rows = story.story_rows(self.runs_dir, ids)
        except (OSError, LotteryError):
            if retry:  # a run deleted or damaged since the stories were listed: list them again, draw once more
                self.status.object = "A run of this story was deleted or damaged since it was listed: stories re-read."
                self._list()
                return self.draw(retry=False)
            raise
        self.panes["barriers"].object = barrier_plot(records)
        self.panes["paths"].object = ap.instability_paths(records[0] if records else None,
                                                          "no dense instability measured yet: Run the preset")
        self.panes["accuracy"].object = accuracy_plot(rows)
        self.panes["tickets"].object = ticket_instability_plot(rows)

    def start(self, seeds=(0,)) -> None:
        """Train and analyse the preset's story (init, iter:K, lr; reinit controls) at `seeds` in the background."""
        from engine.progress import Progress

        if self.job is not None:
            self.status.object = "The story is already running."
            return
        preset, overrides = self.preset, self.overrides
        try:  # the story's runs in order ({run id: rewind}); bad settings answer here, not from the worker
            self._plan = {cfg.run_id: rewind for seed in seeds
                          for rewind, cfg in story.story_configs(preset, seed, **overrides).items()}
        except LotteryError as e:
            self.status.object = f"The story cannot run: {as_typed(e)}"
            return
        self._progress = Progress()
        self.status.object = f"running the **{preset}** story (seeds {', '.join(map(str, seeds))})..."
        self.button.disabled, self.cancel_button.disabled = True, False

        self.job = Job(lambda job: story.run_story(self.runs_dir, preset, seeds, on_event=job.emit,
                                                   cancel=job.cancelled, **overrides), name="stability-story")
        if not self.polled_by_app:
            follow(self)

    def _where(self, run_id: str) -> str:
        """'run 2/3 (iter:20)': which of the story's runs an event is about."""
        ids = list(self._plan)
        return f"run {ids.index(run_id) + 1}/{len(ids)} ({self._plan[run_id]})" if run_id in self._plan else run_id

    def poll(self) -> bool:
        """Progress of a running story; True when it finished and stored its runs."""
        if self.job is None:
            return False
        events, finished = self.job.poll()
        for e in events:
            self._progress.update(e)
        if events and not finished:
            e, p = events[-1], self._progress
            what = (f"{e.analysis}: {e.message}" if isinstance(e, AnalysisProgress) else
                    f"level {p.level} {p.variant}, {p.fraction:.0%} of the run")
            self.status.object = f"running the **{self.preset}** story: {self._where(e.run_id)}, {what}"
        if not finished:
            return False
        job, self.job = self.job, None
        self.button.disabled, self.cancel_button.disabled = False, True
        if job.error is None:
            self.status.object = "The story is stored."
        elif job.cancelled.is_set():
            self.status.object = "The story stopped: what it stored is kept (Run the preset again resumes it)."
        else:
            self.status.object = f"The story stopped: {as_typed(error_message(job.error))}"
        self.refresh()
        return job.error is None

    def stop(self) -> None:
        """Stop a running story at its next check (what it stored stays)."""
        if self.job is not None:
            self.job.cancel()

    def _levels_text(self) -> str:
        """'14 levels each' as the story's runs will train (the preset with this panel's overrides)."""
        try:
            levels = story.story_configs(self.preset, 0, **self.overrides)["init"].prune.levels
        except LotteryError:  # (bad overrides: start() says so when the button is pressed)
            return "the preset's levels"
        return f"{levels} level{'' if levels == 1 else 's'} each"

    def __panel__(self):
        p = self.panes
        return pn.Column(
            pn.pane.Markdown(
                "**The stability story** (Frankle et al. 2020): a network is *stable* at rewind point k when two "
                "copies trained from W_k with different data orders end in one linearly connected basin (error "
                "barrier <= 2%). IMP finds matching tickets where the ticket is stable: rewinding to init fails "
                "where the net is unstable at init, late rewinding (iter:K) works once it is stable. The button "
                f"trains the preset's three IMP runs ({self._levels_text()}, reinit controls) and every ticket's "
                "instability at one seed (the full preset: hours on a 2-core CPU); Stop keeps what is stored.",
                sizing_mode="stretch_width"),
            pn.FlexBox(self.story, self.button, self.cancel_button, align_items="flex-end",
                       sizing_mode="stretch_width"), self.status,
            side_by_side(p["barriers"], p["paths"]),
            side_by_side(p["accuracy"], p["tickets"]), sizing_mode="stretch_width")
