"""The Bayesian tab: how sure a Bayesian ticket is, level by level (engine.bayes, method bayes-imp).

    panel = BayesPanel("runs")      # in a notebook: displays inline; in the app: the "Bayesian" tab

It reads what a run stored as its `uncertainty` analysis (bayes-imp writes it level by level; `lottery
analyze RUN_ID uncertainty` measures any run): accuracy, NLL or ECE vs density (metric selector) for the
ticket, its controls and the deterministic IMP ticket of the same density; a reliability diagram of a chosen
level; and the chosen layer's mask beside its posterior std (sigma map). The plots are pure functions of the
stored JSON (and, for sigma, of the stored weights), so they draw inline in a notebook as well:

    metric_plot(results, "ece")     results: {run_id: uncertainty record}
    reliability_plot(entry)         entry: one level of an uncertainty record
    sigma_plot(sigma, layer, level) sigma: a layer's posterior std (0 where pruned), e.g. from sigma_of()
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from engine.errors import LotteryError
from engine.store import RunStore, list_runs

from explorer.plots import (COMMON, LEGEND_ROW_PX, PALETTE, VARIANT_COLOR, VARIANT_STYLE, _empty, mask_heatmap,
                            readable, side_by_side, unreadable_note)
from explorer.tables import experiment_of, short_names
from explorer.views import RUN_ID_PX

METRICS = {"accuracy": "test accuracy (%)", "nll": "test NLL (lower is better)", "ece": "test ECE, 15 bins (lower is better)"}
DETERMINISTIC = "deterministic ticket"


# ---------------------------------------------------------------- plots (pure: stored JSON in, HoloViews out)
def metric_rows(results: dict[str, dict]) -> pd.DataFrame:
    """One row per (run, level, variant) with accuracy, NLL and ECE; the deterministic ticket is a variant. `source`:
    the run measured (the deterministic run's id for its ticket, shared by bayes-imp runs of one setting)."""
    rows = []
    for run_id, u in results.items():
        for e in u.get("levels", []):
            entries = dict(e["variants"])
            if e.get("deterministic"):
                entries[DETERMINISTIC] = e["deterministic"]
            for variant, m in entries.items():
                source = m.get("run_id", run_id) if variant == DETERMINISTIC else run_id
                rows.append({"run": run_id, "level": e["level"], "variant": variant, "source": source,
                             "density": m.get("density", e["density"]),
                             **{k: m[k] for k in METRICS}})
    return pd.DataFrame(rows, columns=["run", "level", "variant", "source", "density", *METRICS])


def metric_plot(results: dict[str, dict], metric: str = "accuracy", names: dict[str, str] | None = None) -> hv.Element:
    """`metric` vs density (log, dense on the left) for every run's ticket, controls and deterministic ticket.
    `names`: {key of `results`: the run's name in the legend} (default: the key), e.g. what sets it apart."""
    name = METRICS[metric].split(" (")[0].split(",")[0]  # (not str.capitalize: it made "Test nll")
    title = f"{name[0].upper()}{name[1:]} vs density"
    df = metric_rows(results)
    if df.empty:
        return _empty(title, "no Bayesian run measured yet: run --method bayes-imp --bayesian")
    df["accuracy"] *= 100  # in %, as the app's other accuracies (the record: fractions)
    # bayes-imp runs of one setting (one per criterion) share their deterministic run: its ticket is drawn once, as
    # one curve under the first run that uses it (with every level any of them measured: one may have stopped early)
    det = df["variant"] == DETERMINISTIC
    df.loc[det, "run"] = df[det].groupby("source")["run"].transform("first")
    df = pd.concat([df[~det], df[det].drop_duplicates(["source", "level"])])
    names = names or {}
    many = df["run"].nunique() > 1
    one_det = df.loc[df["variant"] == DETERMINISTIC, "source"].nunique() <= 1
    # several runs: one colour per run, its variants told apart by their dash (colours per variant and run, 24
    # curves of six runs, said nothing of which run a curve was)
    run_color = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(results)}
    elements = []
    for (run, variant), g in df.groupby(["run", "variant"], sort=False):
        g = g.sort_values("density", ascending=False)
        run_name = names.get(run, run)
        if not many:
            label, color = variant, "#ff7f0e" if variant == DETERMINISTIC else VARIANT_COLOR.get(variant, "gray")
        elif variant == DETERMINISTIC:  # (the ticket of the settings of the run it is drawn under)
            label, color = (variant, "black") if one_det else (f"{variant} · {run_name}", run_color[run])
        else:
            label, color = f"{variant} · {run_name}", run_color[run]
        style = dict(color=color, line_dash=VARIANT_STYLE.get(variant, "dashed"), line_width=2, tools=["hover"])
        marker = dict(color=color, size=6, marker="diamond" if variant == DETERMINISTIC else "circle", tools=["hover"])
        # several runs: the hover names the curve (where curves cross, density, value and level said not whose)
        g, vdims = (g.assign(curve=label), [metric, "level", "curve"]) if many else (g, [metric, "level"])
        elements.append(hv.Curve(g, "density", vdims, label=label).opts(**style))
        elements.append(hv.Scatter(g, "density", vdims, label=label).opts(**marker))
    # several runs: the legend below the plot, one row each, the plot taller by as much (inside, it covered the
    # curves; and HoloViews leaves out a legend of more than 25 glyphs)
    entries = len({e.label for e in elements})
    legend = dict(legend_position="bottom", legend_limit=2 * len(elements),
                  legend_opts=dict(orientation="vertical", location="top_left", label_text_font_size="9pt", spacing=0,
                                   padding=4),  # (rows of LEGEND_ROW_PX, as the Accuracy tab's)
                  height=COMMON["height"] + LEGEND_ROW_PX * entries) if many else dict(legend_position="bottom_left")
    # the densest and sparsest points inside the plot, not cut in half by its edges
    xlim = (float(df["density"].min()) / 1.15, float(df["density"].max()) * 1.05)
    return hv.Overlay(elements).opts(title=title, logx=True, invert_xaxis=True, xlim=xlim, xlabel="density (log)",
                                     ylabel=METRICS[metric], **{**COMMON, **legend})


def reliability_plot(entry: dict | None, variant: str = "ticket") -> hv.Element:
    """Accuracy per confidence bin (bars, Bayesian ticket; an empty bin reads 0) against the diagonal of perfect calibration; the
    deterministic ticket of the same density as points."""
    title = "Reliability diagram"
    if not entry or variant not in entry.get("variants", {}):
        return _empty(title, "choose a measured level")
    m = entry["variants"][variant]
    rel = m["reliability"]
    # in %, as the app's other accuracies (the record: fractions); confidence on the same scale
    steps = hv.Histogram((np.linspace(0, 100, rel["bins"] + 1), 100 * np.array(rel["accuracy"])),
                         kdims="confidence", vdims="accuracy", label=f"{variant} (ECE {m['ece']:.3f})").opts(
        color=VARIANT_COLOR.get(variant, "gray"), alpha=0.5, tools=["hover"])
    diagonal = hv.Curve([(0, 0), (100, 100)], "confidence", "accuracy").opts(color="gray", line_dash="dashed")
    layers = [steps, diagonal]
    det = entry.get("deterministic")
    if det:
        r = det["reliability"]
        d = pd.DataFrame({"mean confidence": 100 * np.array(r["confidence"], dtype=float),
                          "accuracy": 100 * np.array(r["accuracy"], dtype=float), "count": r["count"]})
        layers.append(hv.Scatter(d.query("count > 0"), "mean confidence", ["accuracy", "count"],
                                 label=f"{DETERMINISTIC} (ECE {det['ece']:.3f})").opts(
            color="#ff7f0e", size=8, marker="diamond", tools=["hover"]))
    return hv.Overlay(layers).opts(title=f"{title}: level {entry['level']}, density {entry['density']:.1%}",
                                   xlim=(0, 100), ylim=(0, 102),
                                   xlabel="confidence (%, max predictive probability)", ylabel="accuracy (%)", legend_position="top_left", **COMMON)


SIGMA_RANGE = (2, 98)  # the colour scale's ends: these percentiles of the kept weights' sigma


def sigma_plot(sigma: np.ndarray | None, layer: str = "", level: int = 0) -> hv.Element:
    """A layer's posterior std as an image (rows = output units, columns = inputs); pruned = blank. Colour: how
    far each weight's sigma is from the layer's median, in %, on a diverging scale that spans the 2nd to 98th
    percentiles (colour by log10 sigma over its whole range read as noise: a net trained briefly keeps sigma
    within a fraction of a percent of its start, and the colour bar's ticks all read -2.9088)."""
    # short: beside the mask at 1400 px the plot is ~450 px wide with its colour bar (a longer title lost its end)
    title = f"Sigma of {layer}, level {level}" if layer else "Posterior std (sigma)"
    if sigma is None:
        return _empty(title, "choose a Bayesian run, a level and a layer")
    s = np.asarray(sigma, dtype=np.float64).reshape(sigma.shape[0], -1)
    alive = s[s > 0]
    if not alive.size:
        return _empty(title, "every weight of this layer is pruned")
    median = float(np.median(alive))
    img = np.where(s > 0, 100 * (s / median - 1), np.nan)
    span = float(np.max(np.abs(np.percentile(img[s > 0], SIGMA_RANGE))))
    # how much sigma varies at all, said under the map: near-uniform sigma is a finding, not a drawing problem (it
    # says nothing of where sigma started: a short training moves every rho alike, see the README's science check)
    xlabel = f"input (sigma ±{span:.2g}% of median" if span else "input (sigma uniform"
    xlabel += ": nearly uniform)" if 0 < span < 5 else ")"
    span = span or 1e-9  # (a colour range for a uniform layer)
    return hv.Image(img[::-1], bounds=(0, 0, s.shape[1], s.shape[0]), kdims=["input", "output unit"],
                    vdims=["sigma vs median (%)"]).opts(
        title=f"{title}: median {median:.2g}", xlabel=xlabel, cmap="RdBu_r", clim=(-span, span), colorbar=True,
        clabel="sigma vs its median (%), blank: pruned", responsive=True, height=320, tools=["hover"],
        clipping_colors={"NaN": "#f4f4f4"})


def sigma_of(runs_dir, run_id: str, level: int, layer: str, variant: str = "ticket") -> np.ndarray | None:
    """The posterior std of `layer` in a stored level (None: not a Bayesian run, or not stored)."""
    from engine import bayes  # torch: only when a sigma map is drawn

    store = RunStore(runs_dir, run_id)
    if store.level_record(variant, level) is None:
        return None
    _, weights = store.load_level(variant, level)
    sig = bayes.sigmas(weights)
    return sig[layer].numpy() if layer in sig else None


# ---------------------------------------------------------------- the tab
class BayesPanel(pn.viewable.Viewer):
    """Runs with an uncertainty record: metric vs density, a level's reliability diagram, mask beside sigma."""
    draws_when_made = True  # (its __init__ draws it: the app need not refresh it on its first visit)

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self.results: dict[str, dict] = {}
        self.names: dict[str, str] = {}  # run id: its name in the metric plot's legend
        self.metric = pn.widgets.RadioButtonGroup(options={v.split(",")[0].split(" (")[0]: k
                                                                            for k, v in METRICS.items()},
                                                  value="accuracy", color="primary")
        # a whole run id: the level and layer go under it on a narrow page (views.RunChoice.row)
        self.run = pn.widgets.Select(label="run", options=[], sizing_mode="stretch_width",
                                     styles={"flex": f"1 1 {RUN_ID_PX}px"})
        self.level = pn.widgets.Select(label="level", options=[], width=120)
        self.layer = pn.widgets.Select(label="layer", options=[], width=220)
        # axes not linked: Panel links those of one name across a layout, and the metric plot's "accuracy" took
        # the reliability diagram's 0-100 (accuracies of 84-92% drawn as a flat line at its top)
        self.panes = {k: pn.pane.HoloViews(sizing_mode="stretch_width", css_classes=[f"bayes-{k}"], linked_axes=False)
                      for k in ("metric", "reliability", "mask", "sigma")}
        self.note = pn.pane.Markdown("", sizing_mode="stretch_width")  # records left out, if any
        self._sigma: dict = {}  # stored levels never change: cached by (run, level, layer)
        self.metric.param.watch(lambda e: self._draw_metric(), "value")
        self.run.param.watch(lambda e: self._on_run(), "value")
        self.level.param.watch(lambda e: self._draw_level(), "value")
        self.layer.param.watch(lambda e: self._draw_level(), "value")
        self.refresh()

    @classmethod
    def for_app(cls, app) -> "BayesPanel":
        return cls(app.runs_dir)

    def refresh(self) -> None:
        """Re-read the store: every run with an uncertainty record."""
        results, summaries = {}, {}
        for s in list_runs(self.runs_dir):
            try:
                u = RunStore(self.runs_dir, s["run_id"]).analyses().get("uncertainty")
            except Exception:  # an unreadable record is the store's problem; this tab shows the readable ones
                u = None
            if u:
                results[s["run_id"]], summaries[s["run_id"]] = u, s
        self.results, bad = readable(results, lambda u: metric_rows({"": u}))
        self.note.object = unreadable_note("uncertainty", bad)
        results = self.results
        self.names = self._names([summaries[r] for r in results])
        # several runs: each entry named as the legend names it (bare ids said nothing of which was the SNR run)
        self.run.options = {f"{self.names[r]} · {r}": r for r in results} if len(results) > 1 else list(results)
        if self.run.value not in results and results:
            self.run.value = next(iter(results))
        self._draw_metric()
        self._on_run()

    @staticmethod
    def _names(summaries: list[dict]) -> dict[str, str]:
        """{run id: its name in the metric plot's legend}: what sets it apart from the other runs
        ('bayes-imp lenet300 digits (bayes_criterion=snr)', as the Accuracy tab names runs), and its seed where
        only the seed does (the Accuracy tab draws their mean; this tab draws each)."""
        short = short_names(summaries)
        names = {s["run_id"]: short[experiment_of(s)] for s in summaries}
        shared = [n for n in names.values() if list(names.values()).count(n) > 1]
        return {s["run_id"]: names[s["run_id"]] + (f", seed {s.get('seed')}" if names[s["run_id"]] in shared else "")
                for s in summaries}

    def _on_run(self) -> None:
        u = self.results.get(self.run.value)
        levels = [e["level"] for e in u["levels"]] if u else []
        self.level.options = levels
        if levels and self.level.value not in levels:
            self.level.value = levels[-1]
        layers = []
        if u:
            try:
                rec = RunStore(self.runs_dir, self.run.value).level_record("ticket", 0)
            except LotteryError:  # damaged: the level's panes say so
                rec = None
            layers = list(rec["layers"]) if rec else []
        self.layer.options = layers
        if layers and self.layer.value not in layers:
            self.layer.value = layers[0]
        self._draw_level()

    def _draw_metric(self) -> None:
        self.panes["metric"].object = metric_plot(self.results, self.metric.value, self.names)

    def _draw_level(self) -> None:
        run_id, level, layer = self.run.value, self.level.value, self.layer.value
        u = self.results.get(run_id)
        entry = next((e for e in u["levels"] if e["level"] == level), None) if u else None
        self.panes["reliability"].object = reliability_plot(entry)
        mask = sigma = None
        problem = ""  # why a chosen level has no mask or sigma to draw
        if None not in (run_id, level, layer) and entry is not None:
            key = (run_id, level, layer)
            if key not in self._sigma:
                try:
                    m = RunStore(self.runs_dir, run_id).load_mask("ticket", level)
                    self._sigma[key] = (m[layer].numpy().astype(np.uint8) if layer in m else None,
                                        sigma_of(self.runs_dir, run_id, level, layer) if u.get("bayesian") else None)
                except (OSError, LotteryError) as e:  # deleted or damaged since the tab listed it: not cached
                    problem = f"level {level} could not be read ({run_id}): " + (
                        str(e) if isinstance(e, LotteryError) else "its files are gone (deleted?)")
            if not problem:
                mask, sigma = self._sigma[key]
                if not u.get("bayesian"):
                    problem = (f"{run_id} is deterministic: no posterior std (its uncertainty record measured a "
                               "plain network); a --bayesian run has one")
        self.panes["mask"].object = mask_heatmap(mask, layer or "", level or 0) if mask is not None or not problem \
            else _empty(f"Mask of {layer} at level {level}", problem)
        self.panes["sigma"].object = sigma_plot(sigma, layer or "", level or 0) if sigma is not None or not problem \
            else _empty(f"Sigma of {layer}, level {level}", problem)

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("Bayesian tickets: the MC predictive's accuracy, NLL and calibration by density, "
                             "beside the deterministic ticket of the same density (`lottery run --method bayes-imp "
                             "--bayesian`).", sizing_mode="stretch_width"), self.note,
            self.metric, self.panes["metric"], pn.FlexBox(self.run, self.level, self.layer, sizing_mode="stretch_width"),
            self.panes["reliability"], side_by_side(self.panes["mask"], self.panes["sigma"]),
            sizing_mode="stretch_width")
