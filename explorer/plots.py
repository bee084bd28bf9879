"""HoloViews plots of runs. Pure functions: tables or tensors in, an hv object out.

Accuracy and early-stopping plots put density on a log axis that runs from dense (left) to sparse
(right), the way lottery-ticket papers draw it; controls are dashed, the dense baseline is a line.
"""
from __future__ import annotations

import html
import textwrap

import holoviews as hv
import numpy as np
import pandas as pd

from .offline import load_bokeh
from .tables import layer_rows, level_rows, seed_bands

load_bokeh()  # in a notebook: inline resources, so the plots render offline

VARIANT_STYLE = {"ticket": "solid", "reinit": "dashed", "random": "dotted", "shuffle": "dotdash", "inverted": "dashdot"}
VARIANT_COLOR = {"ticket": "#1f77b4", "reinit": "#d62728", "random": "#2ca02c", "shuffle": "#9467bd",
                 "inverted": "#8c564b", "dense": "black"}
COMMON = dict(responsive=True, height=320, show_grid=True)


def _empty(title: str, message: str) -> hv.Overlay:
    """A plot with no data: `message` in its middle, wrapped so that it fits a half-width pane."""
    message = "\n".join(textwrap.wrap(message, 60))
    return hv.Overlay([hv.Text(0.5, 0.5, message).opts(text_font_size="11pt")]).opts(
        title=title, xaxis=None, yaxis=None, responsive=True, height=320)


def as_typed(message) -> str:
    """A message (an error naming what the user typed) for a Markdown pane, which would render HTML in it."""
    return html.escape(str(message), quote=False)


def readable(records: dict[str, dict], read) -> tuple[dict[str, dict], list[str]]:
    """({key: record} of the records `read(record)` can draw from, [keys of those it cannot]): a record that is
    JSON but not of the shape this version draws (another version's, edited by hand) is named by the tab, not
    let fail the whole tab (a damaged file the store already leaves out: RunStore.analyses)."""
    good, bad = {}, []
    for key, record in records.items():
        try:
            read(record)
            good[key] = record
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            bad.append(key)
    return good, bad


def unreadable_note(name: str, keys: list[str]) -> str:
    """What a tab says of the records `readable` left out."""
    return f"Left out, not of the shape this version reads ({name}: compute again): {', '.join(keys)}" if keys else ""


def density_bars(summary: dict | None) -> hv.Element:
    """Per-layer density for every level of one run."""
    title = "Per-layer density by level"
    if not summary:
        return _empty(title, "select or launch a run")
    df = layer_rows(summary)
    if df.empty:
        return _empty(title, "no level finished yet")
    return hv.Bars(df, kdims=["level", "layer"], vdims=["density"]).opts(
        title=title, ylim=(0, 1.02), tools=["hover"], xlabel="level (layer)", ylabel="density (fraction kept)", multi_level=True,
        xrotation=90, **COMMON)


def mask_heatmap(mask: np.ndarray | None, layer: str = "", level: int = 0) -> hv.Element:
    """A layer's mask as an image: rows = output units, columns = inputs (kernels flattened)."""
    title = f"Mask of {layer} at level {level}" if layer else "Mask"
    if mask is None:
        return _empty(title, "select a run, a level and a layer")
    m = np.asarray(mask, dtype=np.float32).reshape(mask.shape[0], -1)
    kept = m.mean()
    return hv.Image(m[::-1], bounds=(0, 0, m.shape[1], m.shape[0]), kdims=["input", "output unit"],
                    vdims=["kept"]).opts(
        title=f"{title} — density {kept:.1%}", cmap=["#f4f4f4", "#1f4e79"], colorbar=False, clim=(0, 1),
        responsive=True, height=320, tools=["hover"])


def _by_density(summaries: list[dict], value: str, ylabel: str, title: str, percent: bool) -> hv.Element:
    levels = level_rows(summaries)
    if levels.empty:
        return _empty(title, "no runs yet: launch one")
    bands = seed_bands(levels, value)
    n_experiments = bands["experiment"].nunique()
    scale = 100.0 if percent else 1.0
    elements = []
    for (exp, variant), g in bands.groupby(["experiment", "variant"], sort=False):
        g = g.sort_values("density", ascending=False)
        label = f"{variant} · {exp}"
        if variant == "dense":
            y = float(g["mean"].iloc[0]) * scale
            elements.append(hv.HLine(y).opts(color="gray", line_dash="dashed", line_width=1))
            elements.append(hv.Scatter([(1.0, y)], "density", ylabel, label=label).opts(
                color="black", marker="square", size=8, tools=["hover"]))
            continue
        data = pd.DataFrame({"density": g["density"], ylabel: g["mean"] * scale, "std": g["std"] * scale,
                             "seeds": g["seeds"], "level": g["level"]})
        color = VARIANT_COLOR.get(variant, "gray") if n_experiments == 1 else None  # many runs: colour by run
        colored = {"color": color} if color else {}
        if (g["seeds"] > 1).any():
            elements.append(hv.Spread(data, kdims=["density"], vdims=[ylabel, "std"], label=label).opts(
                alpha=0.2, **colored))
        style = VARIANT_STYLE.get(variant, "dashdot")
        elements.append(hv.Curve(data, kdims=["density"], vdims=[ylabel, "seeds", "level"], label=label).opts(
            line_dash=style, line_width=2, tools=["hover"], **colored))
        elements.append(hv.Scatter(data, kdims=["density"], vdims=[ylabel, "seeds", "level"], label=label).opts(
            size=6, tools=["hover"], **colored))
    # Explicit limits: a log axis whose range is re-derived on live updates can collapse to a point.
    lo, hi = float(bands["density"].min()), 1.0
    ys = pd.concat([bands["lo"], bands["hi"]]) * scale
    pad = max(float(ys.max() - ys.min()) * 0.08, abs(float(ys.mean())) * 0.02, 1e-3)
    return hv.Overlay(elements).opts(
        title=title, logx=True, invert_xaxis=True, xlim=(lo / 1.25, hi * 1.1),
        ylim=(float(ys.min()) - pad, float(ys.max()) + pad), framewise=True,
        xlabel="density (fraction of weights kept, log)", ylabel=ylabel, legend_position="bottom_left",
        legend_limit=200, **COMMON)


def accuracy_vs_density(summaries: list[dict]) -> hv.Element:
    """Test accuracy of tickets and controls vs density; mean and spread over seeds; dense baseline."""
    return _by_density(summaries, "test_accuracy", "test accuracy (%)", "Test accuracy vs density", True)


def early_stop_vs_density(summaries: list[dict]) -> hv.Element:
    """Iteration of minimum validation loss vs density: winning tickets learn faster."""
    return _by_density(summaries, "early_stop_iteration", "early-stop iteration",
                       "Early-stopping iteration vs density", False)
