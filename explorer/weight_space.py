"""The Weight space tab: model zoos, Git Re-Basin and DeepWeightFlow, seen.

    panel = WeightSpacePanel("runs")      # in a notebook: displays inline; in the app: the "Weight space" tab
    panel.show(zoo_id)                    # the zoo's stored generations and barriers

Train a zoo (`lottery zoo`), measure naive vs re-basined barriers between its members (`zoo-barrier`),
generate networks from it (`lottery generate`): each on a worker thread (explorer.jobs) with progress and
Cancel, the page never waits. The plots read only what the engine stored (a generation's report.json, the
zoo's analyses), so the same functions draw inline in a notebook:

    accuracy_plot(report)   zoo vs generated vs baselines, one point per network
    map_plot(report)        zoo and generated networks on the zoo's first two principal directions, by accuracy
    barrier_plot(result)    error along the straight line between zoo members, naive and matched
"""
from __future__ import annotations

import holoviews as hv
import pandas as pd
import panel as pn

from explorer.inline import follow
from explorer.plots import COMMON, _empty, as_typed, code_block, side_by_side

GROUPS = {"zoo": "zoo", "generated": "generated", "gaussian": "Gaussian baseline"}


# ---------------------------------------------------------------- plots (pure: stored JSON in, HoloViews out)
def accuracy_plot(report: dict | None) -> hv.Overlay:
    """Test accuracy of every zoo member, generated network and Gaussian sample (box + points), with the zoo's
    mean as one network as a line."""
    title = "Test accuracy: zoo vs generated"
    if not report:
        return _empty(title, "generate from a zoo to see its networks here")
    rows = [{"set": label, "accuracy": 100 * a} for key, label in GROUPS.items()  # in %, as the app's others
            for a in report["accuracies"].get(key, [])]
    df = pd.DataFrame(rows, columns=["set", "accuracy"])
    box = hv.BoxWhisker(df, "set", "accuracy").opts(box_fill_alpha=0.2, outlier_alpha=0)
    points = hv.Scatter(df, "set", "accuracy").opts(jitter=0.3, size=5, alpha=0.6, color="set", cmap="Category10",
                                                    tools=["hover"])
    mean = hv.HLine(100 * report["accuracy"]["zoo_mean"]).opts(color="gray", line_dash="dashed")
    sub = f"{report['canonicalise']}, {'PCA ' + str(report['options']['pca']) if report['options']['pca'] else 'no PCA'}"
    return (box * points * mean).opts(title=f"Test accuracy ({sub}); dashed: zoo mean",
                                      ylabel="test accuracy (%)", xlabel="", show_legend=False, **COMMON)


def map_plot(report: dict | None) -> hv.Overlay:
    """Zoo members (circles) and generated networks (triangles) on the zoo's first two principal
    directions (canonicalised weights), coloured by test accuracy."""
    title = "Weight space: the zoo's first two principal directions"
    if not report:
        return _empty(title, "generate from a zoo to see its weight-space map")
    layers = []
    for key, marker in (("zoo", "circle"), ("generated", "triangle")):
        xy = report["map"][key]
        df = pd.DataFrame({"pc1": [p[0] for p in xy], "pc2": [p[1] for p in xy],
                           "accuracy": [100 * a for a in report["accuracies"][key][:len(xy)]]})
        layers.append(hv.Points(df, ["pc1", "pc2"], ["accuracy"], label=key).opts(
            color="accuracy", cmap="viridis", marker=marker, size=10, colorbar=key == "zoo", clim=_clim(report),
            clabel="test accuracy (%)",
            tools=["hover"], line_color="black"))
    return hv.Overlay(layers).opts(title=title, legend_position="bottom", **COMMON)


def _clim(report: dict) -> tuple[float, float]:
    values = report["accuracies"]["zoo"] + report["accuracies"]["generated"]
    return 100 * min(values), 100 * max(values)


def barrier_plot(result: dict | None) -> hv.Overlay:
    """Test error along the straight line between zoo members: naive (red) and after Git Re-Basin
    (blue), one curve per pair, the colours in the legend."""
    title = "Barriers between zoo members: naive vs re-basined"
    if not result:
        return _empty(title, "press Barriers to interpolate between zoo members")
    layers = []
    for pair in result["pairs"]:
        for key, color, label in (("naive_curve", "firebrick", "naive"), ("matched_curve", "steelblue", "re-basined")):
            pts = [(p["alpha"], 100 * p["error"]) for p in pair[key]]
            layers.append(hv.Curve(pts, "alpha", "test error (%)", label=label).opts(color=color, alpha=0.7))
    sub = (f"mean error barrier {result['naive_error_barrier']:.1%} naive -> "
           f"{result['matched_error_barrier']:.1%} matched")
    # the legend (one entry per kind: Bokeh groups the pairs' curves of one label) says which colour is which;
    # beside the plot, where it hides no curve
    return hv.Overlay(layers).opts(title=f"{title} ({sub})", show_legend=True, legend_position="right", **COMMON)


def report_table(report: dict | None) -> str:
    """The report's comparison as Markdown (what `lottery generate` prints)."""
    if not report:
        return ""
    from engine.generate import format_report
    return code_block(format_report(report))


# ---------------------------------------------------------------- the panel
class WeightSpacePanel(pn.viewable.Viewer):
    """Zoo and generation forms (generated from ZooOptions / GenerateOptions), buttons that run on a job,
    and the plots of the chosen zoo's chosen generation."""
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)

    def __init__(self, runs_dir, launcher=None, **params):
        super().__init__(**params)
        from engine.generate import GenerateOptions
        from engine.zoo import ZooOptions, config_settings
        from explorer.forms import OptionsForm, widget_for

        self.runs_dir, self.launcher = runs_dir, launcher
        self.job = None
        self.polled_by_app = False  # True: the app's tick polls the job; False: the panel follows it (inline)
        self.zoo_form = OptionsForm(ZooOptions, style={"width": 120})
        wanted = {"model.model": "mlp", "model.hidden": (32, 32), "data.dataset": "digits", "train.epochs": 20,
                  "train.optimizer": "sgd", "train.lr": 0.05, "seed": 0}
        self.zoo_settings = {s.path: widget_for(s, width=120, label="zoo " + s.name if s.path == "seed" else s.name)
                             for s in config_settings() if s.path in wanted}
        for path, value in wanted.items():  # the science check's zoo (SGD keeps members alignable)
            w = self.zoo_settings[path]
            w.value = ",".join(map(str, value)) if isinstance(value, tuple) else value
        self._zoo_start = {path: w.value for path, w in self.zoo_settings.items()}  # what the form starts with
        # GenerateOptions' defaults as they are (3000 flow steps: what `lottery generate`, notebook 05 and the
        # README's measured figures use), so a generation made here is the one `lottery generate ZOO_ID` finds
        self.gen_form = OptionsForm(GenerateOptions, style={"width": 120}, seed={"label": "flow seed"},
                                    hidden={"label": "flow hidden"}, lr={"label": "flow lr"})
        self.zoo = pn.widgets.Select(label="zoo", options=[], width=320)
        self.generation = pn.widgets.Select(label="generation", options=[], width=520)  # its labels: ~65 characters
        self.zoo.param.watch(lambda e: self.show(e.new), "value")
        self.generation.param.watch(lambda e: self._draw(), "value")
        self.buttons = {name: pn.widgets.Button(label=label, color="primary", width=110)
                        for name, label in (("zoo", "Train zoo"), ("generate", "Generate"), ("barriers", "Barriers"))}
        self.buttons["zoo"].on_click(lambda _: self.train_zoo())
        self.buttons["generate"].on_click(lambda _: self.generate())
        self.buttons["barriers"].on_click(lambda _: self.barriers())
        self.cancel = pn.widgets.Button(label="Cancel", width=90, disabled=True)
        self.cancel.on_click(lambda _: self.job is not None and self.job.cancel())
        self.progress = pn.indicators.Progress(value=0, max=1000, width=260, visible=False)
        self.status = pn.pane.Markdown("", css_classes=["weight-space-status"], sizing_mode="stretch_width")
        self._notice = ""  # an answer to a click made while a job runs: kept under its progress line (`_say`)
        self.panes = {k: pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=[f"weight-space-{k}"])
                      for k in ("accuracy", "map", "barriers")}
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._progress = None
        self.refresh()

    @classmethod
    def for_app(cls, app) -> "WeightSpacePanel":
        panel = cls(app.runs_dir, launcher=getattr(app, "launcher", None))
        panel.polled_by_app = True
        return panel

    # ------------------------------------------------------------ store -> widgets
    def zoos(self) -> list[str]:
        from engine.store import list_runs
        return [r["run_id"] for r in list_runs(self.runs_dir) if r.get("kind") == "zoo" and r.get("status") == "completed"]

    def refresh(self) -> None:
        """(tab) The store changed: list its complete zoos, keep the chosen one."""
        zoos = self.zoos()
        keep = self.zoo.value if self.zoo.value in zoos else (zoos[0] if zoos else None)
        self.zoo.options = zoos
        self.zoo.value = keep
        self.show(keep)

    def show(self, zoo_id: str | None, generation: str | None = None) -> None:
        """List `zoo_id`'s stored generations (newest chosen, or `generation`) and draw them."""
        from engine.generate import generations

        if zoo_id is not None and self.zoo.value != zoo_id:
            if zoo_id not in self.zoo.options:
                self.zoo.options = [*self.zoo.options, zoo_id]
            self.zoo.value = zoo_id  # its watcher calls show again
            return
        reports = generations(self.runs_dir, zoo_id) if zoo_id else []
        self._reports = {r["generation"]: r for r in reports}
        labels = {f"{r['generation']} ({r['canonicalise']}, {r['options']['steps']} steps, seed {r['options']['seed']}, "
                  f"gen median {r['accuracy']['generated']['median']:.1%})": r["generation"] for r in reports}
        self.generation.options = labels
        wanted = generation if generation in self._reports else (reports[-1]["generation"] if reports else None)
        if self.generation.value != wanted:
            self.generation.value = wanted  # its watcher draws
        else:
            self._draw()

    def _draw(self) -> None:
        from engine.store import RunStore

        report = self._reports.get(self.generation.value) if self.generation.value else None
        self.panes["accuracy"].object = accuracy_plot(report)
        self.panes["map"].object = map_plot(report)
        self.table.object = report_table(report)
        damaged: dict[str, str] = {}
        stored = RunStore(self.runs_dir, self.zoo.value).analyses(damaged) if self.zoo.value else {}
        if "zoo-barrier" in damaged:  # a damaged file says so where its plot goes; Barriers writes a whole one again
            self.panes["barriers"].object = _empty("Barriers between zoo members", "the stored zoo-barrier.json is "
                                                   "damaged: press Barriers to compute it again")
        else:
            self.panes["barriers"].object = barrier_plot(stored.get("zoo-barrier"))

    # ------------------------------------------------------------ jobs
    def _say(self, text: str) -> None:
        """The answer to a click (a refusal, a bad value). While a job runs its progress rewrites the status line
        several times a second, which wiped such an answer at once: it is kept under the progress line then,
        until the job ends."""
        self.status.object = text
        if self.job is not None:
            self._notice = text

    def _start(self, name: str, work) -> bool:
        """Start `work` on a worker; False (and the status says so) while another job runs."""
        from engine.progress import Progress
        from explorer.jobs import Job

        if self.job is not None:
            self._say("Busy: cancel the running job first.")
            return False
        self._progress = Progress()
        self.progress.value, self.progress.visible, self.cancel.disabled = 0, True, False
        self.status.object = f"**{name}** running..."
        self.job = Job(work, name=name)
        if not self.polled_by_app:
            follow(self)
        return True

    def train_zoo(self) -> None:
        """Train (or finish) the zoo the form describes, on a worker."""
        import engine
        from engine.zoo import train_zoo, zoo_config

        try:
            options = self.zoo_form.options()
            values = {path: w.value for path, w in self.zoo_settings.items()}
            if options.ticket is not None:
                # a ticket zoo trains as the ticket's run did (model, data, training); only what the user changed
                # in the form overrides it, as only the flags typed do on the command line
                values = {k: v for k, v in values.items()
                          if k.split(".")[0] not in ("model", "data") and v != self._zoo_start[k]}
            config = zoo_config(options, values, runs_dir=self.runs_dir)
        except engine.LotteryError as e:  # bad input, or the ticket run's files damaged: one line, no job
            self._say(f"**zoo**: {as_typed(e)}")
            return
        started = self._start("zoo", lambda job: train_zoo(options, config, runs_dir=self.runs_dir,
                                                           on_event=job.emit, cancel=job.cancelled))
        if started and options.ticket is not None:  # the model/data/training fields do not apply
            changed = ", ".join(k.split(".")[-1] for k in values)
            self.status.object = (f"**zoo** running: a ticket zoo of {options.ticket}, trained as that run was "
                                  f"(model, data, training){'; changed here: ' + changed if changed else ''}...")

    def generate(self) -> None:
        """Generate from the chosen zoo with the form's options, on a worker."""
        import engine
        from engine.generate import generate, plan

        if not self.zoo.value:
            self._say("Train or choose a zoo first.")
            return
        zoo_id = self.zoo.value
        try:
            options = self.gen_form.options()
            plan(self.runs_dir, zoo_id, options)  # bad options answer at once, not from the worker
        except engine.LotteryError as e:
            self._say(f"**generate**: {as_typed(e)}")
            return
        self._start("generate", lambda job: generate(self.runs_dir, zoo_id, options, on_event=job.emit,
                                                     cancel=job.cancelled))

    def barriers(self) -> None:
        """Naive vs re-basined barriers between three pairs of the chosen zoo's members, on a worker."""
        from engine.errors import LotteryError
        from engine.store import RunStore
        from engine.zoo import zoo_barriers

        if not self.zoo.value:
            self._say("Train or choose a zoo first.")
            return
        zoo_id = self.zoo.value
        try:
            summary = RunStore(self.runs_dir, zoo_id).summary()
        except LotteryError as e:  # its files damaged or deleted since the tab listed it
            self.refresh()
            self._say(f"**barriers**: {as_typed(e)}")
            return
        if summary is None:  # deleted (or moved) since the tab listed it
            self.refresh()
            self._say(f"zoo {zoo_id} is no longer in the store: choose another zoo")
            return
        pairs = min(3, summary["members"] // 2)

        self._start("barriers", lambda job: zoo_barriers(self.runs_dir, zoo_id, pairs=pairs, on_event=job.emit,
                                                         cancel=job.cancelled))

    def poll(self) -> bool:
        """On the event loop (the app's periodic callback, or a notebook's): progress, then the result."""
        from engine.events import AnalysisProgress
        from explorer.jobs import error_message

        if self.job is None:
            return False
        events, finished = self.job.poll()
        for e in events:
            if isinstance(e, AnalysisProgress):
                self.progress.value = int(1000 * e.done / max(1, e.total))
                notice = f"  \n{self._notice}" if self._notice else ""
                self.status.object = f"**{self.job.name}**: {e.message}{notice}"
            else:
                self._progress.update(e)
                self.progress.value = int(1000 * self._progress.fraction)
        if not finished:
            return False
        job, self.job, self._notice = self.job, None, ""
        self.progress.visible, self.cancel.disabled = False, True
        if job.error is not None:
            self.status.object = f"**{job.name}** stopped: {as_typed(error_message(job.error))}"
            return False
        result = job.result()
        if job.name == "zoo":
            if result["status"] != "completed":  # cancelled: the zoo list shows completed zoos only
                self.status.object = (f"zoo **{result['run_id']}** {result['status']}: {result['trained']} of "
                                      f"{result['members']} members trained and kept; Train zoo again resumes it")
            else:
                self.status.object = (f"zoo **{result['run_id']}** completed: {result['trained']} members, median "
                                      f"test accuracy {result['test_accuracy']['median']:.1%}")
            if result["status"] == "completed":
                self.refresh()
                self.show(result["run_id"])
        elif job.name == "generate":
            self.status.object = (f"generation **{result['generation']}** stored: generated median "
                                  f"{result['accuracy']['generated']['median']:.1%} vs zoo "
                                  f"{result['accuracy']['zoo']['median']:.1%}")
            self.show(result["zoo"], result["generation"])
        else:
            self.status.object = (f"barriers stored: error barrier naive {result['naive_error_barrier']:.1%} -> "
                                  f"matched {result['matched_error_barrier']:.1%}")
            self._draw()
        return True

    def stop(self) -> None:
        """The page closed: the running job stops at its next check."""
        if self.job is not None:
            self.job.cancel()

    def __panel__(self):
        forms = pn.Card(  # FlexBox: the forms wrap on narrow pages instead of overflowing
            pn.FlexBox(*self.zoo_settings.values(), *self.zoo_form.widgets.values(), self.buttons["zoo"]),
            pn.FlexBox(*self.gen_form.widgets.values(), self.buttons["generate"]),
            title="Train a zoo / generate from it", collapsed=False, sizing_mode="stretch_width")
        # a FlexBox, not a Row: the Row's fixed widths (~1150 px) widened the whole tab past the page's right edge
        return pn.Column(forms, pn.FlexBox(self.zoo, self.generation, self.buttons["barriers"], self.cancel,
                                           self.progress, align_items="flex-end", sizing_mode="stretch_width"),
                         self.status, side_by_side(self.panes["accuracy"], self.panes["map"]),
                         self.panes["barriers"], self.table, sizing_mode="stretch_width")
