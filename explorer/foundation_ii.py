"""The "Embedding & adapter tickets" tab: KS-Lottery's token ranking and Partial-LoRA's masking rules.

    panel = EmbeddingTicketsPanel("runs")   # in a notebook: displays inline; in the app: its own tab

It reads what the engine stored: the "ks-lottery" record of every `ks-lottery` run (engine.methods.ks_lottery).
Partial-LoRA is an experiment library (engine.methods.partial_lora.compare_rules), not a stored run method yet,
so its plots are pure functions a notebook or bench feeds with compare_rules' rows:

    ks_tokens(record)        KS statistic of the top tokens by rank, selected tokens and the known set marked
    ks_curves(record)        per K: precision vs the known set, and share of the embedding gain recovered,
                             for KS and each baseline ranking
    lora_ratios(rows)        the subspace rule's per-layer ratio bars
    lora_accuracy(rows)      accuracy vs trainable adapter entries per masking rule
"""
from __future__ import annotations

import math

import holoviews as hv
import panel as pn

from explorer.plots import COMMON, _empty

RECORD = "ks-lottery"  # the engine's record name (engine.methods.ks_lottery.RECORD; not imported: no torch here)
RANKINGS = ("ticket", "random-tokens", "frequent-tokens", "l2-change")
SHOWN = 200


def ks_tokens(record: dict | None) -> hv.Element:
    title = "KS statistic per token (top 200 by rank)"
    if not record:
        return _empty(title, "run --method ks-lottery on a text task (e.g. pydoc-topics-expanded)")
    known = set(record.get("known") or [])
    chosen = set(record["levels"][-1]["ticket"]["tokens"]) if record.get("levels") else set()
    rows = [(r, t["statistic"], t["token"], "known" if t["id"] in known else
             "selected" if t["id"] in chosen else "other") for r, t in enumerate(record["top"][:SHOWN])]
    return hv.Points(rows, ["rank", "KS statistic D"], ["token", "kind"]).opts(
        color="kind", cmap={"known": "crimson", "selected": "navy", "other": "lightgray"}, size=6,
        tools=["hover"], title=title, legend_position="top_right", **COMMON)


def ks_curves(record: dict | None) -> hv.Layout | hv.Element:
    if not record or not record.get("levels"):
        return _empty("KS-Lottery per K", "no ks-lottery record")
    per = {}
    for row in record["levels"]:
        for v in RANKINGS:
            if v in row:
                per.setdefault(v, []).append((row["k"], row[v].get("precision", math.nan),
                                              row[v]["recovered"] if row[v].get("recovered") is not None else math.nan))
    name = {"ticket": "ks"}
    precision = hv.Overlay([hv.Curve([(k, p) for k, p, _ in pts], "K", "precision vs known set",
                                     label=name.get(v, v)).opts(tools=["hover"]) for v, pts in per.items()]).opts(
        title="Precision against the known set" if record.get("known") else "No known set for this task",
        legend_position="bottom_right", **COMMON)
    recovered = hv.Overlay([hv.Curve([(k, r) for k, _, r in pts], "K", "share of embedding gain recovered",
                                     label=name.get(v, v)).opts(tools=["hover"]) for v, pts in per.items()]).opts(
        title="Recovery: (acc - head alone) / (embedding fine-tune - head alone)", legend_position="bottom_right",
        **COMMON)
    return (precision + recovered).cols(2)


def lora_ratios(rows: list[dict]) -> hv.Element:
    title = "Partial-LoRA: per-layer ratio (subspace rule)"
    layers = next((r["layers"] for r in rows if r.get("rule") == "random-subspace"), None)
    if not layers:
        return _empty(title, "no Partial-LoRA rows")
    bars = [(n.replace("bert.encoder.", "").replace(".weight", ""), v) for n, v in layers.items()]
    return hv.Bars(bars, "layer", "ratio").opts(xrotation=60, title=title, tools=["hover"], **COMMON)


def lora_accuracy(rows: list[dict]) -> hv.Element:
    title = "Partial-LoRA: accuracy vs trainable adapter entries"
    if not rows:
        return _empty(title, "no Partial-LoRA rows")
    pts = [(r["trainable"], r["test_accuracy"], r["rule"]) for r in rows]
    return hv.Scatter(pts, "trainable entries", ["test accuracy", "rule"]).opts(
        color="rule", cmap="Category10", size=9, logx=True, tools=["hover"], title=title,
        legend_position="bottom_right", **COMMON)


class EmbeddingTicketsPanel(pn.viewable.Viewer):
    """A ks-lottery run chosen from the store: its token ranking and its per-K curves."""

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.run = pn.widgets.Select(label="ks-lottery run", options=[])
        self.tokens_pane = pn.pane.HoloViews(ks_tokens(None), sizing_mode="stretch_width")
        self.curves_pane = pn.pane.HoloViews(ks_curves(None), sizing_mode="stretch_width")
        self.text = pn.pane.Markdown("")
        self._records: dict[str, dict] = {}
        self.run.param.watch(lambda e: self._draw(), "value")
        self.refresh()

    @classmethod
    def for_app(cls, app):
        return cls(app.runs_dir)

    def refresh(self):
        import engine
        from engine.store import RunStore

        self._records = {}
        for s in engine.list_runs(self.runs_dir):
            if s.get("status") == "unreadable":
                continue
            record = RunStore(self.runs_dir, s["run_id"]).analyses().get(RECORD)
            if record:
                self._records[s["run_id"]] = record
        keep = self.run.value
        self.run.options = sorted(self._records)
        self.run.value = keep if keep in self._records else next(iter(self.run.options), None)
        self._draw()

    def _draw(self):
        record = self._records.get(self.run.value)
        self.tokens_pane.object = ks_tokens(record)
        self.curves_pane.object = ks_curves(record)
        if record:
            selected = record["levels"][-1]["ticket"]["tokens"] if record.get("levels") else []
            by_id = {t["id"]: t["token"] for t in record["top"]}
            names = ", ".join(by_id.get(i, str(i)) for i in selected[:40])
            head = record.get("head_only_test_accuracy")  # records before the head-only reference lack it
            self.text.object = (f"Embedding fine-tune {record['embedding_test_accuracy']:.3f}"
                                + (f", head alone {head:.3f}" if head is not None else "")
                                + f". Selected at the largest K: {names}")
        else:
            self.text.object = ""

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("KS-Lottery (Yuan et al. 2024): tokens ranked by a two-sample KS test between their "
                             "embedding before and after an embedding-only fine-tune; the top K re-tuned alone, "
                             "beside random, most frequent and largest-L2-change tokens."),
            self.run, self.text, self.tokens_pane, self.curves_pane, sizing_mode="stretch_width")
