"""The Hardware tab: what sparsity buys in time on this machine (the "hardware lottery").

Probes (`engine.probe`) run on a background job when asked (one at a time, so timings do not compete); each measured row streams into a plot of
measured vs theoretical speedup per sparsity pattern, with the device named in its title. Unstructured
sparsity cuts FLOPs (theoretical speedup) but rarely time; channel and N:M sparsity cut time on hardware
built for them. Rows a device cannot run (2:4 off CUDA) are listed with the reason.
"""
from __future__ import annotations

import holoviews as hv
import pandas as pd
import panel as pn

import engine
from engine import probe
from engine.store import list_runs

from explorer.forms import OptionsForm
from explorer.jobs import Job, error_message, one_at_a_time
from explorer.plots import COMMON, _empty, code_block

PATTERNS = ["masked", "csr", "channel", "2:4"]
COLUMNS = ["pattern", "sparsity", "batch", "dtype", "theoretical_speedup", "speedup", "median_ms", "label"]
_QUEUE = one_at_a_time("probe")


def speedup_plot(data: dict | None = None) -> hv.Overlay:
    """Measured vs theoretical speedup of every available row, one colour per pattern; the diagonal is
    "time falls as FLOPs do", the horizontal line at 1 "no faster than dense". Same structure with or
    without rows, so a Pipe can stream into it."""
    data = data or {}
    shown = data.get("patterns", PATTERNS)
    rows = [r for r in data.get("rows", []) if r.get("available") and r["pattern"] in shown
            and r.get("theoretical_speedup")]
    df = pd.DataFrame([{**{k: r.get(k) for k in COLUMNS[:-1]},
                        "label": f"{r['pattern']} {r['dtype']} batch {r['batch']}"} for r in rows], columns=COLUMNS)
    top = max([2.0, *df["theoretical_speedup"], *df["speedup"]]) * 1.2
    # framewise on the elements (on the Overlay it did nothing): the axes follow the rows streamed in, else they
    # stayed at the first frame's 2.4x and the 90%-sparse rows (10x theoretical) were drawn off the plot
    layers = [hv.Curve([(0.5, 0.5), (top, top)], "theoretical speedup", "measured speedup", label="measured = theoretical")
              .opts(color="gray", line_dash="dashed", framewise=True),
              hv.HLine(1.0).opts(color="firebrick", line_dash="dotted")]
    for pattern in PATTERNS:
        part = df[df["pattern"] == pattern]
        layers.append(hv.Scatter(part, "theoretical_speedup", ["speedup", "sparsity", "batch", "dtype", "median_ms",
                                                               "label"], label=pattern)
                      .opts(size=9, tools=["hover"], framewise=True))
    title = f"Measured vs theoretical speedup on {data.get('device', 'this machine')}"
    return hv.Overlay(layers).opts(title=title, logx=True, logy=True, xlim=(0.8, top), ylim=(0.05, top),
                                   xlabel="theoretical speedup (dense FLOPs / FLOPs)",
                                   ylabel="measured speedup (dense time / time)",
                                   legend_position="right", **COMMON)  # inside (top left), it hid the 1x rows


class HardwarePanel(pn.viewable.Viewer):
    """A layer size or a stored run, batches, dtypes, sparsities in (ProbeOptions: the widgets and defaults
    of `lottery probe`'s flags); probes on a background job; a streaming plot out."""
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.source = pn.widgets.RadioButtonGroup(label="probe", options=["layer", "run"], value="layer")
        self.form = OptionsForm(probe.ProbeOptions, style={"width": 130},
                                widgets={"run": pn.widgets.Select(label="run", options=[], width=320)},
                                layer={"label": "layer (in x out)", "placeholder": "1024x1024", "width": 140},
                                level={"placeholder": "the last", "width": 90},
                                sparsity={"label": "sparsities (layer)", "placeholder": "0.5,0.9"},
                                batch={"label": "batch sizes"}, dtype={"width": 260},
                                threads={"placeholder": "torch's"})
        self.layer, self.run, self.sparsities = self.form["layer"], self.form["run"], self.form["sparsity"]
        self.batches, self.dtypes = self.form["batch"], self.form["dtype"]
        self.patterns = pn.widgets.CheckButtonGroup(label="patterns shown", options=PATTERNS, value=list(PATTERNS))
        self.patterns.param.watch(lambda e: self._send(), "value")
        self.button = pn.widgets.Button(label="Probe", color="primary", width=100)
        self.stop_button = pn.widgets.Button(label="Cancel", width=90)
        self.button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.status = pn.pane.Markdown("Press **Probe**: each pattern's measured speedup over the dense layer, against "
                                       "its theoretical one, appears in the plot as it is measured.",
                                       css_classes=["probe-status"], sizing_mode="stretch_width")
        self.unavailable = pn.pane.Markdown("", css_classes=["probe-unavailable"], sizing_mode="stretch_width")
        # the title names the device, known before any probe (plot titles do not follow stream updates)
        self.device = probe.describe()
        self.pipe = hv.streams.Pipe(data={"rows": [], "device": self.device})
        self.plot = pn.pane.HoloViews(hv.DynamicMap(speedup_plot, streams=[self.pipe]), sizing_mode="stretch_width",
                                      css_classes=["hardware-plot"])
        # in its place until a probe's first row: the plot would show only its reference lines and a legend of
        # patterns with no points. (Swapped in, not shown with `visible`: a plot laid out hidden stayed blank)
        self.waiting = pn.pane.HoloViews(_empty(f"Measured vs theoretical speedup on {self.device}", "run a probe "
                                                "(Probe, above) to see each pattern's measured speedup against its "
                                                "theoretical one"), sizing_mode="stretch_width",
                                         css_classes=["hardware-waiting"])
        self.shown = pn.Column(self.waiting, sizing_mode="stretch_width")
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.rows: list[dict] = []
        self.job: Job | None = None
        self.refresh()

    @classmethod
    def for_app(cls, app) -> "HardwarePanel":
        return cls(app.runs_dir)

    def refresh(self) -> None:
        """The store changed: offer its runs that have a ticket."""
        self.run.options = [s["run_id"] for s in list_runs(self.runs_dir) if s.get("levels")]

    def stop(self) -> None:
        """Cancel (the button, or the page closed): the probe stops after its current row."""
        if self.job is not None:
            self.job.cancel()

    def start(self) -> None:
        if self.job is not None:
            self.status.object = "A probe is already running."
            return
        values = self.form.values()
        # the source chosen decides which fields apply: the others are left out, not refused
        values.update({"run": None, "level": None} if self.source.value == "layer" else
                      {"layer": None, "sparsity": None})
        try:
            if self.source.value == "run" and not values["run"]:
                raise engine.ConfigError("run", values["run"], "a stored run with at least one level")
            options = self.form.options(values)
        except engine.ConfigError as e:
            self.status.object = f"**{e}**"
            return
        self.rows = []
        self._send()
        self.unavailable.object = self.table.object = ""
        self.status.object = "probing..."
        self.job = Job(lambda job: probe.probe(options, self.runs_dir, cancel=job.cancelled,
                                               progress=lambda done, total, row: job.emit((done, total, row))),
                       name="probe", executor=_QUEUE)

    def poll(self) -> bool:
        """Called on the event loop: stream new rows into the plot (a probe stores nothing: always False)."""
        if self.job is None:
            return False
        new, finished = self.job.poll()
        if new:
            self.rows += [row for _, _, row in new]
            done, total, _ = new[-1]
            self.status.object = f"probing... {done}/{total} measurements"
        if finished:
            job, self.job = self.job, None
            if job.error is None:
                result = job.result()
                self.status.object = f"done: {result['target']} on {result['device']}"
                self.table.object = code_block(probe.format_table(result))
            elif job.cancelled.is_set():  # stopped at a row (RunCancelled), or before it started
                self.status.object = f"cancelled after {len(self.rows)} measurements"
            else:
                self.status.object = f"probe failed: {error_message(job.error)}"
        elif not new:
            return False
        self._send()
        missing = {(r["pattern"], r["dtype"]): r["reason"] for r in self.rows if not r["available"]}
        self.unavailable.object = "\n".join(f"- **{p}** ({d}) unavailable: {reason}" for (p, d), reason in missing.items())
        return False

    def _send(self) -> None:
        self.pipe.send({"rows": list(self.rows), "device": self.device, "patterns": list(self.patterns.value)})
        pane = self.plot if self.rows else self.waiting
        if self.shown.objects != [pane]:
            self.shown.objects = [pane]

    def __panel__(self):
        f = self.form
        # FlexBoxes, not Rows: the Rows' fixed widths (~1100 px) widened the whole tab past a 1000 px page's right
        # edge (the plot, the Probe button and the last tab titles out of sight)
        return pn.Column(pn.FlexBox(self.source, f["layer"], f["sparsity"], f["run"], f["level"],
                                    align_items="flex-end", sizing_mode="stretch_width"),
                         pn.FlexBox(f["batch"], f["dtype"], f["device"], f["min_time"], f["threads"], self.button,
                                    self.stop_button, align_items="flex-end", sizing_mode="stretch_width"),
                         self.patterns,
                         self.status, self.shown, self.unavailable, self.table, sizing_mode="stretch_width")
