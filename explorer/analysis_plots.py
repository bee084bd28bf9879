"""Plots of stored analyses (RUN_DIR/analyses/*.json): instability, barrier, neural persistence, early-bird, sanity."""
from __future__ import annotations

import itertools

import holoviews as hv
import numpy as np
import pandas as pd

from .plots import COMMON, _empty


def instability_paths(result: dict | None, empty: str = "no instability analysis yet: Analyze → instability") -> hv.Element:
    """Test error along the interpolation path between the two trainings, for each rewind point k (`empty`:
    what the plot says without one: how to make one where it is shown)."""
    if not result:
        return _empty("Instability", empty)
    curves = [hv.Curve([(p["alpha"], 100 * p["error"]) for p in result["curves"][str(k)]], "alpha", "test error (%)",
                       label=f"k = {k}") for k in result["rewind_points"]]
    return hv.Overlay(curves).opts(title=f"Interpolation between two trainings from W_k (level {result['level']})",
                                   legend_position="top_right", **COMMON)


def instability_barriers(result: dict | None) -> hv.Element:
    """Error barrier vs rewind point k, with the 2% stability line."""
    if not result:
        # (one per row on a narrow page: a blank plot under the paths' message read as a broken one)
        return _empty("Barrier vs rewind point", "each rewind point's error barrier, once an instability analysis "
                                                 "is stored: Analyze → instability")
    ks = [max(k, 1) for k in result["rewind_points"]]  # k = 0 drawn at 1 on the log axis
    barrier = hv.Curve((ks, [100 * b for b in result["barriers"]]), "rewind iteration k", "error barrier (%)",
                       label="barrier") * hv.Scatter((ks, [100 * b for b in result["barriers"]]),
                                                     "rewind iteration k", "error barrier (%)").opts(size=7) * \
        hv.HLine(100 * result["stable_threshold"], label="stable (2%)").opts(color="firebrick", line_dash="dashed")
    top = max(100 * result["stable_threshold"], *(100 * b for b in result["barriers"])) * 1.15
    return barrier.opts(title="Barrier vs rewind point (k = 0 drawn at 1)", logx=True, ylim=(0, top), **COMMON)


PARTNER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")  # Category10: one per control kind
# named apart from the instability curves' alpha and test error: Panel links the axes of plots whose dimensions share
# a name, and the instability paths beside it took this plot's 0-35% range
BARRIER_DIMS = (hv.Dimension("barrier_alpha", label="alpha"), hv.Dimension("barrier_error", label="test error (%)"))


def barrier(records: list[dict]) -> hv.Element:
    """Test error along the straight line from a level's ticket to each other net it was interpolated with
    (the `barrier` records of one level, as `lottery analyze RUN_ID barrier` stores them), dashed after re-basin
    where it was matched; the title gives each error barrier as `lottery show` does, in percent."""
    title = "Error barrier between the ticket and another net of its level"
    if not records:
        return _empty(title, "no barrier analysis yet: Analyze → barrier (a level's ticket and one of its controls)")
    records = sorted(records, key=lambda r: r["b"])
    curves = []
    for r, color in zip(records, itertools.cycle(PARTNER_COLORS)):  # a partner's two curves: one colour
        for key, suffix, dash in (("curve", "", "solid"), ("matched_curve", ", re-basined", "dashed")):
            if r.get(key):
                curves.append(hv.Curve([(p["alpha"], 100 * p["error"]) for p in r[key]], BARRIER_DIMS[0],
                                       BARRIER_DIMS[1], label=f"ticket vs {r['b']}{suffix}").opts(
                    color=color, line_dash=dash, tools=["hover"]))
    barriers = ", ".join(f"vs {r['b']} {100 * r['error_barrier']:.2f}%" + (
        f" (re-basined {100 * r['matched_error_barrier']:.2f}%)" if r.get("rebasin") else "") for r in records)
    return hv.Overlay(curves).opts(title=f"Error barrier at level {records[0]['level']} (density "
                                         f"{100 * records[0]['density']:.1f}%): {barriers}",
                                   legend_position="right", **COMMON)


def persistence_levels(result: dict | None) -> hv.Element:
    """Normalised network neural persistence over the levels of a run."""
    title = "Neural persistence over levels"
    if not result:
        return _empty(title, "no persistence analysis yet: Analyze → persistence")
    df = pd.DataFrame([{"level": e["level"], "density": e["density"], "network NP": e["network"]}
                       for e in result["levels"]])
    return (hv.Curve(df, "level", ["network NP", "density"]) * hv.Scatter(df, "level", ["network NP", "density"])
            .opts(size=7)).opts(title=title, **COMMON)


def persistence_diagrams(result: dict | None, level) -> hv.Layout | hv.Element:
    """Zero-dimensional persistence diagrams of every layer at one level, one panel per layer: each point
    is one merge of the layer's maximum spanning tree, (birth, death) = (0, 1 - |w|/max|w|)."""
    entry = next((e for e in (result or {}).get("levels", []) if e["level"] == level), None)
    if entry is None:
        return _empty("Persistence diagrams", "select a level of an analysed run")
    panels = []
    for name, layer in entry["layers"].items():
        pairs = np.asarray(layer["pairs"], dtype=float).reshape(-1, 2)
        diag = hv.Curve([(0, 0), (1, 1)], "birth", "death").opts(color="gray", line_dash="dotted")
        panels.append((hv.Scatter(pairs, "birth", "death").opts(size=4, alpha=0.5, tools=["hover"]) * diag).opts(
            title=f"{name}: NP {layer['normalised']:.4f}", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
            width=300, height=280, show_grid=True))
    return hv.Layout(panels).opts(title=f"Persistence diagrams at level {level}").cols(3)


def earlybird(result: dict | None) -> hv.Element:
    """Mask distance between every pair of epochs, with the detection epoch marked."""
    title = "Early-bird mask distances"
    if not result:
        return _empty(title, "no early-bird analysis yet: Analyze → earlybird-replay, or a run with --method earlybird")
    m = np.asarray(result["distance_matrix"], dtype=float)
    epochs = result["epochs"]  # one mask per epoch, evenly spaced
    lo, hi = epochs[0] - 0.5, epochs[-1] + 0.5
    heat = hv.Image(m[::-1], bounds=(lo, lo, hi, hi), kdims=["epoch", "compared with epoch"], vdims=["distance"]).opts(
        cmap="viridis", colorbar=True, tools=["hover"], responsive=True, height=360)
    when = result.get("detected_epoch")
    label = f"detected at epoch {when:g} (eps {result['eps']})" if when is not None else "not detected"
    if when is not None:
        heat = heat * hv.VLine(when).opts(color="red", line_width=2)
    return heat.opts(title=f"{title} — {label}")


def sanity(result: dict | None) -> hv.Element:
    """Accuracy of each control minus the ticket's, per level."""
    title = "Sanity checks: control − ticket test accuracy"
    if not result:
        return _empty(title, "no sanity analysis yet: Analyze → sanity")
    rows = [{"level": str(r["level"]), "control": c, "delta (points)": 100 * r[f"{c}_delta"]}
            for r in result["rows"] for c in result["controls"]]
    return hv.Bars(pd.DataFrame(rows), ["level", "control"], "delta (points)").opts(
        title=title, multi_level=True, xrotation=90, **COMMON)
