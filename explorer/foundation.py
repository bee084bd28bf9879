"""The Foundation models tab: BERT-ticket transfer, LoTA's forgetting and merging, per-block density.

    panel = FoundationPanel("runs")     # in a notebook: displays inline; in the app: the "Foundation models" tab

It reads only what the engine stored: `bert-imp` and `transfer` runs (the transfer matrix, engine.methods.bert
.transfer_matrix), the `lota-tasks` analyses of `lota` runs, and any transformer run's per-layer densities. Runs
are launched like any other (the launch panel: --model minilm, a text dataset, --method bert-imp / transfer /
lota; `lottery analyze RUN_ID lota-tasks` for the two-task experiments); the pure plot functions draw the same
inline in a notebook:

    transfer_heatmap(matrix)     ticket minus dense test accuracy per (ticket's task, target task), "matching" marked
    lota_bars(results)           forgetting of task A and merged accuracy, dense vs LoTA, mean over seeds
    block_density(layers)        one ticket's density as block x module type (query, key, value, attn-out, ffn-...)
"""
from __future__ import annotations

import statistics

import holoviews as hv
import pandas as pd
import panel as pn

from explorer.plots import COMMON, _empty, readable, unreadable_note
from explorer.views import RUN_ID_PX

TRANSFORMER_METHODS = ("bert-imp", "transfer", "lota")


# ---------------------------------------------------------------- plots (stored JSON in, HoloViews out)
def transfer_heatmap(matrix: dict | None) -> hv.Overlay:
    # (rows and columns are named by the axes: in the title, they ran past a 1000 px page's plot)
    title = "Transfer: ticket minus dense test accuracy (points)"
    if not matrix or not matrix.get("cells"):
        return _empty(title, "run bert-imp on a task (and transfer runs: --method transfer --mask-from RUN_DIR)")
    # in % and points, as the app's other accuracies (the record: fractions)
    rows = [{"ticket from": c["source"], "fine-tuned on": c["target"],
             "delta": 100 * (c["ticket_mean"] - c["dense_mean"]),
             "label": f"{c['ticket_mean']:.1%} vs {c['dense_mean']:.1%}\n{'matching' if c['matching'] else 'not'}"
                      f" (n={c['n']}, {c['density']:.0%})"} for c in matrix["cells"]]
    df = pd.DataFrame(rows)
    span = max(2.0, max(abs(r["delta"]) for r in rows))
    # white on the dark ends of the colour map, black on its pale middle (Bokeh's default blue text on a dark red
    # cell was hard to read)
    df["ink"] = ["white" if abs(d) > span / 2 else "black" for d in df["delta"]]
    heat = hv.HeatMap(df, ["fine-tuned on", "ticket from"], ["delta", "label"]).opts(
        cmap="RdBu", clim=(-span, span), colorbar=True, clabel="ticket - dense (points)", tools=["hover"])
    labels = hv.Labels(df, ["fine-tuned on", "ticket from"], ["label", "ink"]).opts(text_font_size="9pt",
                                                                                    text_color="ink")
    return (heat * labels).opts(title=title, xlabel="fine-tuned on", ylabel="ticket from (its task)", **COMMON)


def lota_rows(results: list[dict]) -> list[dict]:
    """The bars' rows: task A's forgetting after task B and the merged model's accuracy on A and B, dense vs
    LoTA, each the mean over the analyses (seeds)."""
    rows = []
    for kind in ("dense", "lota"):
        rows.append({"measure": "forgetting of A", "kind": kind,  # in %, as the app's other accuracies
                     "value": 100 * statistics.mean(r["sequential"][kind]["forgetting"] for r in results)})
        for task in ("a", "b"):
            rows.append({"measure": f"merged, task {task.upper()}", "kind": kind,
                         "value": 100 * statistics.mean(r["merge"][kind][task] for r in results)})
    return rows


def lota_bars(results: list[dict]) -> hv.Overlay:
    """Mean over the stored lota-tasks analyses (seeds) of one experiment (model, if the results name it, task
    pair and density; the one with the most seeds): task A's forgetting after task B, and the merged model's
    accuracy on A and B, dense vs LoTA. Other experiments' analyses are counted on the axis, not averaged in."""
    title = "LoTA vs dense: forgetting of task A, merged task vectors"
    if not results:
        return _empty(title, "lottery analyze RUN_ID lota-tasks on a lota run to see forgetting and merging")
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r.get("model"), r["task_a"], r["task_b"], r.get("density")), []).append(r)
    (model, task_a, task_b, density), shown = max(groups.items(), key=lambda kv: len(kv[1]))
    others = len(results) - len(shown)
    # the experiment on the axis: in the title, it ran past a 1000 px page's plot and was cut
    xlabel = (f"{model + ': ' if model else ''}{task_a} then {task_b}"
              f"{f', LoTA density {density:g}' if density is not None else ''} (n={len(shown)}"
              f"{f'; {others} other analyses not shown' if others else ''})")
    bars = hv.Bars(pd.DataFrame(lota_rows(shown)), ["measure", "kind"], "value").opts(
        tools=["hover"], ylabel="accuracy (%; forgetting: its drop)", multi_level=True)
    return bars.opts(title=title, xlabel=xlabel, **COMMON)


def block_density(layers: dict | None, title: str = "Density per block and module type") -> hv.Element:
    if not layers:
        return _empty(title, "choose a transformer run and level")
    from engine.transformer import density_grid  # late: the engine's torch side

    grid = density_grid(layers)
    rows = [{"block": str(b), "module": t, "density": v} for b, vals in zip(grid["blocks"], grid["values"])
            for t, v in zip(grid["types"], vals) if v is not None]
    return hv.HeatMap(pd.DataFrame(rows), ["module", "block"], "density").opts(
        cmap="viridis", clim=(0, 1), colorbar=True, tools=["hover"], title=title, **COMMON)


# ---------------------------------------------------------------- the tab
class FoundationPanel(pn.viewable.Viewer):
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)
    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        # a whole run id: the level goes under it on a narrow page (beside it in a Row, at 1000 px the select
        # was ~170 px wide and cut the id short; views.RunChoice.row)
        self.run = pn.widgets.Select(label="Run (transformer)", options=[], sizing_mode="stretch_width",
                                     styles={"flex": f"1 1 {RUN_ID_PX}px"})
        self.level = pn.widgets.IntSlider(label="Level", start=0, end=1, value=0)
        self.matrix_pane = pn.pane.HoloViews(transfer_heatmap(None), sizing_mode="stretch_width")
        self.lota_pane = pn.pane.HoloViews(lota_bars([]), sizing_mode="stretch_width")
        self.block_pane = pn.pane.HoloViews(block_density(None), sizing_mode="stretch_width")
        self.note = pn.pane.Markdown("", sizing_mode="stretch_width")  # records left out, if any
        self.run.param.watch(lambda e: self._run_changed(), "value")
        self.level.param.watch(lambda e: self._draw_blocks(), "value")
        self._summaries: dict[str, dict] = {}
        self.refresh()

    @classmethod
    def for_app(cls, app):
        return cls(app.runs_dir)

    def refresh(self):
        """Re-read the store: the matrix, the LoTA analyses, the run list."""
        import engine
        from engine.methods.bert import transfer_matrix
        from engine.store import RunStore

        summaries = [s for s in engine.list_runs(self.runs_dir) if s.get("method") in TRANSFORMER_METHODS
                     and s.get("status") != "unreadable"]
        self._summaries = {s["run_id"]: s for s in summaries}
        self.matrix_pane.object = transfer_heatmap(transfer_matrix(summaries, self.runs_dir))
        results = {}
        for s in summaries:  # only lota runs have this analysis
            a = RunStore(self.runs_dir, s["run_id"]).analyses().get("lota-tasks")
            if a:  # its model, so that lota_bars averages one experiment's seeds only
                results[s["run_id"]] = {**a, "model": s.get("model")}
        results, bad = readable(results, lambda a: (lota_rows([a]), a["task_a"], a["task_b"]))
        self.note.object = unreadable_note("lota-tasks", bad)
        self.lota_pane.object = lota_bars(list(results.values()))
        keep = self.run.value
        self.run.options = sorted(self._summaries)
        self.run.value = keep if keep in self._summaries else next(iter(self.run.options), None)
        self._run_changed()

    def _levels(self) -> list[dict]:
        s = self._summaries.get(self.run.value)
        return [] if not s else [lv for lv in ([s.get("dense")] + s.get("levels", [])) if lv]

    def _run_changed(self):
        levels = self._levels()
        self.level.end = max(1, len(levels) - 1)  # a slider needs end > start: off while there is no choice
        self.level.disabled = len(levels) < 2
        self.level.value = len(levels) - 1 if levels else 0
        self._draw_blocks()

    def _draw_blocks(self):
        levels = self._levels()
        row = levels[self.level.value] if 0 <= self.level.value < len(levels) else None
        # (the run is named by the select above: in the title, its id ran past a 1000 px page's plot)
        title = (f"Density per block and module type: level {row['level']} ({row['density']:.1%})" if row
                 else "Density per block and module type")
        self.block_pane.object = block_density(row["layers"] if row else None, title)

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("BERT tickets transfer (Chen et al. 2020): each ticket fine-tuned on each task vs the "
                             "dense fine-tune; **matching** = mean within one std (over seeds) of dense. LoTA "
                             "(Panda et al. 2024): sparse task vectors, sequential tasks and merging."),
            self.note, self.matrix_pane, self.lota_pane, pn.FlexBox(self.run, self.level, align_items="flex-end", sizing_mode="stretch_width"), self.block_pane,
            sizing_mode="stretch_width")
