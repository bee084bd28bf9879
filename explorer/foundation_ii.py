"""The "Embedding & adapter tickets" tab: KS-Lottery's token ranking and Partial-LoRA's masking rules.

    panel = EmbeddingTicketsPanel("runs")   # in a notebook: displays inline; in the app: its own tab

It reads what the engine stored: the "ks-lottery" record of every `ks-lottery` run (engine.methods.ks_lottery)
and the "partial-lora" record of every `partial-lora` run (engine.methods.partial_lora). The plots are pure
functions; the Partial-LoRA ones take rows {rule, rank, density, trainable, test_accuracy, layers} as
`lora_rows(records)` makes them from stored records and engine.methods.partial_lora.compare_rules returns them
(the notebook and the bench feed them directly):

    ks_tokens(record)        KS statistic of the top tokens by rank, selected tokens and the known set marked
    ks_precision(record)     per K: precision vs the known set, for KS and each baseline ranking
    ks_recovery(record)      per K: share of the embedding fine-tune's gain recovered, the same rankings
                             (plots.side_by_side(ks_precision(r), ks_recovery(r)): two to a row, as the tab)
    lora_ratios(rows)        per-layer ratio bars, one group per masking rule
    lora_accuracy(rows)      accuracy vs trainable adapter entries per masking rule (dense LoRA included)
"""
from __future__ import annotations

import math

import holoviews as hv
import panel as pn

from explorer.plots import COMMON, _empty, readable, side_by_side, unreadable_note

RECORD = "ks-lottery"  # the engine's record names (engine.methods.ks_lottery.RECORD and partial_lora.RECORD;
LORA_RECORD = "partial-lora"  # not imported: no torch here)
RANKINGS = ("ticket", "random-tokens", "frequent-tokens", "l2-change")
NAME = {"ticket": "ks"}  # the ticket's ranking, as the plots' legends call it
SHOWN = 200


def ks_tokens(record: dict | None) -> hv.Element:
    title = "KS statistic per token (top 200 by rank)"
    if not record:
        return _empty(title, "run --method ks-lottery on a text task (e.g. pydoc-topics-expanded)")
    return hv.Points(_token_rows(record), ["rank", "KS statistic D"], ["token", "kind"]).opts(
        color="kind", cmap={"known": "crimson", "selected": "navy", "other": "lightgray"}, size=6,
        tools=["hover"], title=title, legend_position="top_right", **COMMON)


def _token_rows(record: dict) -> list[tuple]:
    """[(rank, D, token, kind)] of the top SHOWN tokens: what `ks_tokens` draws."""
    known = set(record.get("known") or [])
    chosen = set(record["levels"][-1]["ticket"]["tokens"]) if record.get("levels") else set()
    return [(r, float(t["statistic"]), t["token"], "known" if t["id"] in known else
             "selected" if t["id"] in chosen else "other") for r, t in enumerate(record["top"][:SHOWN])]


def ks_summary(record: dict) -> str:
    """The line the tab prints above the plots: accuracies, and the tokens selected at the largest K."""
    selected = record["levels"][-1]["ticket"]["tokens"] if record.get("levels") else []
    by_id = {t["id"]: t["token"] for t in record["top"]}
    names = ", ".join(by_id.get(i, str(i)) for i in selected[:40])
    head = record.get("head_only_test_accuracy")  # records before the head-only reference lack it
    return (f"Embedding fine-tune {record['embedding_test_accuracy']:.1%}"
            + (f", head alone {head:.1%}" if head is not None else "") + f". Selected at the largest K: {names}")


def ks_readable(record: dict) -> None:
    """Raise (KeyError, TypeError, ...) if the tab cannot draw `record`: reads every field its plots and line
    read, without drawing them (a HoloViews element per record made opening the tab slow with many runs)."""
    _token_rows(record), _per_ranking(record), ks_summary(record), record["top"][0]["id"]  # (a ranking, not empty)


def _per_ranking(record: dict) -> dict[str, list[tuple]]:
    """{ranking: [(K, precision, recovered)]} (NaN where a value is missing)."""
    per = {}
    for row in record["levels"]:
        for v in RANKINGS:
            if v in row:
                per.setdefault(v, []).append((row["k"], row[v].get("precision", math.nan),
                                              row[v]["recovered"] if row[v].get("recovered") is not None else math.nan))
    return per


def ks_precision(record: dict | None) -> hv.Element:
    """Per K: precision of each ranking's selection against the task's known tokens."""
    title = "Precision against the known set"
    if not record or not record.get("levels"):
        return _empty(title, "no ks-lottery record")
    per = _per_ranking(record)
    # a task without a known set of tokens has no precision: its plot was empty axes under a title saying so
    if not record.get("known") or all(math.isnan(p) for pts in per.values() for _, p, _ in pts):
        return _empty(title, "this task has no known set of tokens to measure the selections against "
                             "(the built-in pydoc-topics-expanded task has one)")
    return hv.Overlay([hv.Curve([(k, p) for k, p, _ in pts], "K", "precision vs known set",
                                label=NAME.get(v, v)).opts(tools=["hover"]) for v, pts in per.items()]
                      ).opts(title=title, legend_position="right", **COMMON)  # inside, it hid the curves at the largest K


def ks_recovery(record: dict | None) -> hv.Element:
    """Per K: the share of the embedding fine-tune's gain over the head alone that each selection recovers."""
    title = "Share of the embedding gain recovered"
    if not record or not record.get("levels"):
        return _empty(title, "no ks-lottery record")
    per = _per_ranking(record)
    if all(math.isnan(r) for pts in per.values() for _, _, r in pts):
        return _empty(title, "the embedding fine-tune did not beat the head alone: there is no gain to recover")
    return hv.Overlay([hv.Curve([(k, r) for k, _, r in pts], "K", "share of embedding gain recovered",
                                label=NAME.get(v, v)).opts(tools=["hover"]) for v, pts in per.items()]
                      ).opts(title=title, ylabel="(acc - head alone) / (embedding - head alone)",
                             legend_position="right", **COMMON)  # as ks_precision's


def lora_rows(records: dict[str, dict]) -> list[dict]:
    """{run id: partial-lora record} -> rows: each run's ticket, and its dense LoRA reference when it trained one."""
    rows = []
    for run_id, r in records.items():
        rows.append({"run_id": run_id, "rule": r["rule"], "rank": r["rank"], "density": r["adapter_density"],
                     "trainable": r["trainable"], "test_accuracy": r["test_accuracy"],
                     "layers": {layer: v["ratio"] for layer, v in r["layers"].items()}})
        if r.get("dense_lora_test_accuracy") is not None:
            rows.append({"run_id": run_id, "rule": "dense", "rank": r["rank"], "density": 1.0,
                         "trainable": r["dense_lora_trainable"], "test_accuracy": r["dense_lora_test_accuracy"]})
    return rows


def _short(layer: str) -> str:
    # "attn.": dropping "attention." named a layer's attention output and its FFN output both "0.output.dense"
    return layer.replace("bert.encoder.layer.", "").replace(".weight", "").replace("attention.", "attn.")


def lora_ratios(rows: list[dict]) -> hv.Element:
    """Per-layer ratio bars of the masked rows (the first row of each rule and density)."""
    title = "Partial-LoRA: per-layer ratio of adapter entries that train"
    seen, bars = set(), []
    for r in rows:
        key = (r["rule"], round(r.get("density", 1.0), 4))
        if r.get("layers") and key not in seen:
            seen.add(key)
            bars += [(_short(layer), f"{r['rule']} @ {key[1]:g}", v) for layer, v in r["layers"].items()]
    if not bars:
        return _empty(title, "run --method partial-lora on a text task (e.g. pydoc-topics)")
    # the legend to the right: inside (top right) it covered the last layers' bars
    return hv.Bars(bars, ["layer", "rule"], "ratio").opts(xrotation=60, title=title, tools=["hover"],
                                                          multi_level=False, legend_position="right", **COMMON)


def lora_accuracy(rows: list[dict]) -> hv.Element:
    title = "Partial-LoRA: test accuracy vs trainable adapter entries"
    if not rows:
        return _empty(title, "no Partial-LoRA runs")
    # in %, as the app's other accuracies; the whole 0-100 range (one run's single accuracy had a -1..1 axis)
    pts = [(r["trainable"], 100 * r["test_accuracy"], r["rule"], r["rank"]) for r in rows]
    return hv.Scatter(pts, "trainable entries", ["test accuracy (%)", "rule", "rank"]).opts(
        color="rule", cmap="Category10", size=9, logx=True, tools=["hover"], title=title, ylim=(0, 102),
        legend_position="right", **COMMON)  # inside (bottom right) it hid dense LoRA: most entries, a low accuracy


class EmbeddingTicketsPanel(pn.viewable.Viewer):
    """A ks-lottery run chosen from the store (its token ranking and per-K curves), and the partial-lora runs:
    the chosen one's per-layer ratios, every run's accuracy vs trainable adapter entries."""
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        # as wide as the page: run ids of one method and task differ only in their last characters
        self.run = pn.widgets.Select(label="ks-lottery run", options=[], sizing_mode="stretch_width")
        self.tokens_pane = pn.pane.HoloViews(ks_tokens(None), sizing_mode="stretch_width")
        # two panes, not one Layout: a Layout's grid drew as empty axes in the served app
        self.precision_pane = pn.pane.HoloViews(ks_precision(None), sizing_mode="stretch_width")
        self.recovery_pane = pn.pane.HoloViews(ks_recovery(None), sizing_mode="stretch_width")
        self.text = pn.pane.Markdown("")
        self.note = pn.pane.Markdown("", sizing_mode="stretch_width")  # records left out, if any
        self._records: dict[str, dict] = {}
        self.lora_run = pn.widgets.Select(label="partial-lora run", options=[], sizing_mode="stretch_width")
        self.lora_rows: list[dict] = []
        self.ratios_pane = pn.pane.HoloViews(lora_ratios([]), sizing_mode="stretch_width")
        self.lora_pane = pn.pane.HoloViews(lora_accuracy([]), sizing_mode="stretch_width")
        self.run.param.watch(lambda e: self._draw(), "value")
        self.lora_run.param.watch(lambda e: self._draw_lora(), "value")
        self.refresh()

    @classmethod
    def for_app(cls, app):
        return cls(app.runs_dir)

    def refresh(self):
        import engine
        from engine.store import RunStore

        self._records, lora = {}, {}
        for s in engine.list_runs(self.runs_dir):
            if s.get("status") == "unreadable":
                continue
            analyses = RunStore(self.runs_dir, s["run_id"]).analyses()
            if analyses.get(RECORD):
                self._records[s["run_id"]] = analyses[RECORD]
            if analyses.get(LORA_RECORD):
                lora[s["run_id"]] = analyses[LORA_RECORD]
        self._records, bad_ks = readable(self._records, ks_readable)
        lora, bad_lora = readable(lora, lambda r: lora_rows({"": r}))
        notes = (unreadable_note(RECORD, bad_ks), unreadable_note(LORA_RECORD, bad_lora))
        self.note.object = "  \n".join(n for n in notes if n)
        keep = self.run.value
        self.run.options = sorted(self._records)
        self.run.value = keep if keep in self._records else next(iter(self.run.options), None)
        self._draw()
        self.lora_rows = lora_rows(lora)
        keep = self.lora_run.value
        self.lora_run.options = sorted(lora)
        self.lora_run.value = keep if keep in lora else next(iter(self.lora_run.options), None)
        self._draw_lora()

    def _draw_lora(self):
        chosen = [r for r in self.lora_rows if r["run_id"] == self.lora_run.value and r["rule"] != "dense"]
        self.ratios_pane.object = lora_ratios(chosen)
        self.lora_pane.object = lora_accuracy(self.lora_rows)

    def _draw(self):
        record = self._records.get(self.run.value)
        self.tokens_pane.object = ks_tokens(record)
        self.precision_pane.object = ks_precision(record)
        self.recovery_pane.object = ks_recovery(record)
        self.text.object = ks_summary(record) if record else ""

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("KS-Lottery (Yuan et al. 2024): tokens ranked by a two-sample KS test between their "
                             "embedding before and after an embedding-only fine-tune; the top K re-tuned alone, "
                             "beside random, most frequent and largest-L2-change tokens."), self.note,
            self.run, self.text, self.tokens_pane,
            side_by_side(self.precision_pane, self.recovery_pane),
            pn.pane.Markdown("Partial-LoRA (Damirchi et al. 2025): LoRA adapters on the frozen encoder, masked at "
                             "per-layer ratios (from the pre-trained weights' task subspaces, or uniform); random "
                             "or magnitude entries at the same budget, beside dense LoRA. Every stored "
                             "partial-lora run is one point per rule; the chosen run's ratios as bars."),
            self.lora_run, self.ratios_pane, self.lora_pane, sizing_mode="stretch_width")
