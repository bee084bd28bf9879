"""The Hardware tab: what sparsity buys in time on this machine (the "hardware lottery").

Probes (`engine.probe`) run on a worker thread when asked; each measured row streams into a plot of
measured vs theoretical speedup per sparsity pattern, with the device named in its title. Unstructured
sparsity cuts FLOPs (theoretical speedup) but rarely time; channel and N:M sparsity cut time on hardware
built for them. Rows a device cannot run (2:4 off CUDA) are listed with the reason.
"""
from __future__ import annotations

import concurrent.futures as cf
import queue
import threading

import holoviews as hv
import pandas as pd
import panel as pn

import engine
from engine import probe
from engine.store import list_runs

from explorer.plots import COMMON

PATTERNS = ["masked", "csr", "channel", "2:4"]
COLUMNS = ["pattern", "sparsity", "batch", "dtype", "theoretical_speedup", "speedup", "median_ms", "label"]
_WORKER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")  # one probe at a time: timings


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
    layers = [hv.Curve([(0.5, 0.5), (top, top)], "theoretical speedup", "measured speedup", label="measured = theoretical")
              .opts(color="gray", line_dash="dashed"),
              hv.HLine(1.0).opts(color="firebrick", line_dash="dotted")]
    for pattern in PATTERNS:
        part = df[df["pattern"] == pattern]
        layers.append(hv.Scatter(part, "theoretical_speedup", ["speedup", "sparsity", "batch", "dtype", "median_ms",
                                                               "label"], label=pattern)
                      .opts(size=9, tools=["hover"]))
    title = f"Measured vs theoretical speedup on {data.get('device', 'this machine')}"
    return hv.Overlay(layers).opts(title=title, logx=True, logy=True, xlim=(0.8, top), ylim=(0.05, top),
                                   xlabel="theoretical speedup (dense FLOPs / FLOPs)",
                                   ylabel="measured speedup (dense time / time)", legend_position="top_left",
                                   framewise=True, **COMMON)


class HardwarePanel(pn.viewable.Viewer):
    """Layer size or stored run, batches, dtypes, sparsities in; probes on a worker; a streaming plot out."""

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.source = pn.widgets.RadioButtonGroup(label="probe", options=["layer", "run"], value="layer")
        self.layer = pn.widgets.TextInput(label="layer (in x out)", value="1024x1024", width=140)
        self.run = pn.widgets.Select(label="run (last level)", options=[], width=320)
        self.batches = pn.widgets.TextInput(label="batch sizes", value="1,64,256", width=120)
        self.dtypes = pn.widgets.CheckButtonGroup(label="dtype", options=list(probe.DTYPES), value=["float32"])
        self.sparsities = pn.widgets.TextInput(label="sparsities (layer)", value="0.5,0.9", width=120)
        self.patterns = pn.widgets.CheckButtonGroup(label="patterns shown", options=PATTERNS, value=list(PATTERNS))
        self.patterns.param.watch(lambda e: self._send(), "value")
        self.button = pn.widgets.Button(label="Probe", color="primary", width=100)
        self.stop = pn.widgets.Button(label="Cancel", width=90)
        self.button.on_click(lambda _: self.start())
        self.stop.on_click(lambda _: self.cancel_event.set())
        self.status = pn.pane.Markdown("", css_classes=["probe-status"], sizing_mode="stretch_width")
        self.unavailable = pn.pane.Markdown("", css_classes=["probe-unavailable"], sizing_mode="stretch_width")
        # the title names the device, known before any probe (plot titles do not follow stream updates)
        self.device = probe.describe()
        self.pipe = hv.streams.Pipe(data={"rows": [], "device": self.device})
        self.plot = pn.pane.HoloViews(hv.DynamicMap(speedup_plot, streams=[self.pipe]), sizing_mode="stretch_width",
                                      css_classes=["hardware-plot"])
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.rows: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self.future: cf.Future | None = None
        self.cancel_event = threading.Event()
        self.refresh_runs()

    def refresh_runs(self) -> None:
        self.run.options = [s["run_id"] for s in list_runs(self.runs_dir) if s.get("levels")]

    def start(self) -> None:
        if self.future is not None and not self.future.done():
            self.status.object = "A probe is already running."
            return
        try:
            options = {"batches": probe.parse_list(self.batches.value, "batch", int, "positive integers"),
                       "dtypes": list(self.dtypes.value) or ["float32"]}
            if any(b < 1 for b in options["batches"]):
                raise engine.ConfigError("batch", self.batches.value, "positive integers, comma separated")
            if self.source.value == "layer":
                in_f, out_f = probe.parse_layer(self.layer.value)
                sparsities = probe.parse_list(self.sparsities.value, "sparsity", float, "numbers in (0, 1)")
                if any(not 0 < s < 1 for s in sparsities):
                    raise engine.ConfigError("sparsity", self.sparsities.value, "numbers in (0, 1), comma separated")
                work, args = probe.probe_layer, (in_f, out_f)
                options["sparsities"] = sparsities
            else:
                if not self.run.value:
                    raise engine.ConfigError("run", self.run.value, "a stored run with at least one level")
                work, args = probe.probe_run, (self.runs_dir, self.run.value)
        except engine.ConfigError as e:
            self.status.object = f"**{e}**"
            return
        self.rows = []
        rows = self._queue = queue.Queue()  # a cancelled probe's late rows must not leak into this one
        self._send()
        self.unavailable.object = self.table.object = ""
        self.cancel_event = threading.Event()
        self.status.object = "probing..."
        self.future = _WORKER.submit(work, *args, **options, cancel=self.cancel_event,
                                     progress=lambda done, total, row: rows.put((done, total, row)))

    def poll(self) -> bool:
        """Called on the event loop: stream new rows into the plot; True when something changed."""
        finished = self.future is not None and self.future.done()  # before draining: no row can come after
        new = []
        while True:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if new:
            self.rows += [row for _, _, row in new]
            done, total, _ = new[-1]
            self.status.object = f"probing... {done}/{total} measurements"
        if finished:
            f, self.future = self.future, None
            try:
                result = f.result()
                self.status.object = f"done: {result['target']} on {result['device']}"
                self.table.object = f"```\n{probe.format_table(result)}\n```"
            except engine.RunCancelled:
                self.status.object = f"cancelled after {len(self.rows)} measurements"
            except (engine.LotteryError, ValueError) as e:
                self.status.object = f"probe failed: {e}"
            except Exception as e:  # keep the app alive; the message says what happened
                self.status.object = f"probe failed: {type(e).__name__}: {e}"
            new = new or [None]
        if not new:
            return False
        self._send()
        missing = {(r["pattern"], r["dtype"]): r["reason"] for r in self.rows if not r["available"]}
        self.unavailable.object = "\n".join(f"- **{p}** ({d}) unavailable: {reason}" for (p, d), reason in missing.items())
        return True

    def _send(self) -> None:
        self.pipe.send({"rows": list(self.rows), "device": self.device, "patterns": list(self.patterns.value)})

    def __panel__(self):
        return pn.Column(pn.Row(self.source, self.layer, self.run, sizing_mode="stretch_width"),
                         pn.Row(self.batches, self.dtypes, self.sparsities, self.button, self.stop,
                                sizing_mode="stretch_width"),
                         self.patterns,
                         self.status, self.plot, self.unavailable, self.table, sizing_mode="stretch_width")
