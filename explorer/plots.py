"""HoloViews plots of runs. Pure functions: tables or tensors in, an hv object out.

Accuracy and early-stopping plots put density on a log axis that runs from dense (left) to sparse
(right), the way lottery-ticket papers draw it; controls are dashed, the dense baseline is a line.
"""
from __future__ import annotations

import functools
import html
import os
import textwrap

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from .offline import load_bokeh
from .tables import layer_rows, level_rows, seed_bands, short_names

load_bokeh()  # in a notebook: inline resources, so the plots render offline

VARIANT_STYLE = {"ticket": "solid", "reinit": "dashed", "random": "dotted", "shuffle": "dotdash", "inverted": "dashdot"}
VARIANT_COLOR = {"ticket": "#1f77b4", "reinit": "#d62728", "random": "#2ca02c", "shuffle": "#9467bd",
                 "inverted": "#8c564b", "dense": "black"}
COMMON = dict(responsive=True, height=320, show_grid=True)


EMPTY_CHARS = 50  # a line of an empty plot's message (10pt): fits a plot ~380 px wide


def _empty(title: str, message: str) -> hv.Overlay:
    """A plot with no data: `message` in its middle, wrapped so that it fits a plot beside another (at 60
    characters of 11pt a line, messages ran out of both sides of the Stability and Analyses tabs' plots)."""
    message = "\n".join(textwrap.wrap(message, EMPTY_CHARS))
    return hv.Overlay([hv.Text(0.5, 0.5, message).opts(text_font_size="10pt")]).opts(
        title=title, xaxis=None, yaxis=None, responsive=True, height=320)


TWO_PER_ROW_PX = 1300  # pages at least this wide show plots two to a row; narrower, one per row
# (a media query: the page's width, which the server does not know. A wrapping FlexBox, tried before, lost the
# plots' titles and toolbars in Chromium: Bokeh laid them out at no width)
ONE_PER_ROW = (f"@media (max-width: {TWO_PER_ROW_PX - 1}px) {{ :host {{ flex-direction: column !important; }} "
               ":host > * { flex: none !important; width: auto !important; align-self: stretch !important; } }")


def side_by_side(*panes) -> pn.Row:
    """Plot panes two to a row on a wide page, one per row on a narrower one: in a Row on a 1000 px page, each
    plot was ~280 px wide, its title cut short."""
    return pn.Row(*panes, sizing_mode="stretch_width", stylesheets=[ONE_PER_ROW], css_classes=["side-by-side"])


def code_block(text: str) -> str:
    """`text` (a table the CLI prints) as a Markdown code block, its language said: with a bare fence the
    Markdown pane's highlighter guessed one, importing and trying every Pygments lexer (IPython's too): ~0.4 s of
    the first table's display, and colours picked at random for a table."""
    return f"```text\n{text}\n```"


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


BARS_LAYERS = 8  # more layers than this: density as a level x layer heat map (bars were unreadable)


def density_bars(summary: dict | None) -> hv.Element:
    """Per-layer density for every level of one run: grouped bars for a small net; for a deep one (a
    transformer's dozens of layers, long names) a heat map, levels across, layers down (as bars, their names
    took the plot's whole height and the bars a strip of it)."""
    title = "Per-layer density by level"
    if not summary:
        return _empty(title, "select or launch a run")
    df = layer_rows(summary)
    if df.empty:
        return _empty(title, "no level finished yet")
    layers = list(dict.fromkeys(df["layer"]))
    if len(layers) > BARS_LAYERS:
        # the layers' shared dotted prefix ("bert.encoder.") goes to the axis label: the names keep what differs
        prefix = os.path.commonprefix(layers).rpartition(".")[0]
        cut = len(prefix) + 1 if prefix else 0
        df = df.assign(level=df["level"].astype(int), layer=df["layer"].str[cut:])
        levels = sorted(set(df["level"]))
        return hv.HeatMap(df, kdims=["level", "layer"], vdims=["density"]).opts(
            title=f"{title} ({len(layers)} layers)", cmap="Blues", clim=(0, 1), colorbar=True, tools=["hover"],
            xticks=[(v, str(v)) for v in levels], xlabel="level", ylabel=f"{prefix}." if prefix else "layer",
            invert_yaxis=True, responsive=True, height=max(320, 18 * len(layers) + 110))
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


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # one colour per run where several are drawn (the variant: its line's dash)
LEGEND_ROW_PX = 21  # the height a legend row below a plot takes
LEGEND_CHARS = 100  # a legend entry's characters at most (about a plot's width on a 1000 px page)


def _by_density(summaries: list[dict], value: str, ylabel: str, title: str, percent: bool) -> hv.Element:
    """Mean `value` (and its spread over seeds) vs density for every run and variant.

    HoloViews takes ~50-100 ms per element it draws (two or three per curve here): a store of a dozen runs
    took 5-8 s to build and render this plot (in-process, 2 busy cores). So the curves are Bokeh glyphs added
    by a hook (`_draw_series`: ~0.5 s for the same store); the HoloViews overlay of one empty element only
    carries the axes, so the plot still displays in a notebook and in a Panel pane like the others."""
    levels = level_rows(summaries)
    if levels.empty:
        return _empty(title, "no runs yet: launch one")
    bands = seed_bands(levels, value)
    names = short_names(summaries)
    one = bands["experiment"].nunique() == 1  # one run (or its seeds): the run in the title, variants in the legend
    scale = 100.0 if percent else 1.0
    series = []
    run_color = {exp: PALETTE[i % len(PALETTE)] for i, exp in enumerate(bands["experiment"].unique())}
    order = {"dense": 0, "ticket": 1}  # per run: the dense net, its ticket, then the controls
    groups = sorted(bands.groupby(["experiment", "variant"], sort=False),
                    key=lambda item: (list(run_color).index(item[0][0]), order.get(item[0][1], 2)))
    for (exp, variant), g in groups:
        g = g.sort_values("density", ascending=False)
        label = variant if one else f"{variant} · {names[exp]}"
        series.append({"label": label, "variant": variant, "band": bool((g["seeds"] > 1).any()),
                       "color": VARIANT_COLOR.get(variant, "gray") if one else run_color[exp],
                       "data": {"density": g["density"].tolist(), "y": (g["mean"] * scale).tolist(),
                                "lo": ((g["mean"] - g["std"]) * scale).tolist(),
                                "hi": ((g["mean"] + g["std"]) * scale).tolist(),
                                "level": g["level"].tolist(), "seeds": g["seeds"].tolist(),
                                "label": [label] * len(g)}})
    # Explicit limits: a log axis whose range is re-derived on live updates can collapse to a point.
    lo, hi = float(bands["density"].min()), 1.0
    ys = pd.concat([bands["lo"], bands["hi"]]) * scale
    pad = max(float(ys.max() - ys.min()) * 0.08, abs(float(ys.mean())) * 0.02, 1e-3)
    # one run: its few entries inside the plot; several: below it, one row each (inside, a legend of a few runs
    # covered the curves and cut off the entries past the plot's height), the plot taller by as much
    height = COMMON["height"] + (0 if one else LEGEND_ROW_PX * len(series))
    return hv.Overlay([hv.Scatter([], "density", ylabel)]).opts(
        title=f"{title}: {names[bands['experiment'].iloc[0]]}" if one else title, logx=True, invert_xaxis=True,
        xlim=(lo / 1.25, hi * 1.1), ylim=(float(ys.min()) - pad, float(ys.max()) + pad),
        xlabel="density (fraction of weights kept, log)", ylabel=ylabel,
        hooks=[functools.partial(_draw_series, series, ylabel, not one)], **{**COMMON, "height": height})


def _draw_series(series: list[dict], ylabel: str, legend_below: bool, plot, element) -> None:
    """(HoloViews hook) Each series as a Bokeh line (dashed for controls) with markers, its seed band, the dense
    net as a square at density 1 and a grey line; one hover over the markers; a legend that hides on click."""
    from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Line, Scatter, Span, VArea

    fig = plot.state
    if "series-drawn" in fig.tags:  # (a hook runs again on an update of the same plot)
        return
    fig.tags = [*fig.tags, "series-drawn"]
    items, markers = [], []
    for s in series:  # (add_glyph with the glyph models: fig.line/fig.scatter cost twice as much per call)
        source, color = ColumnDataSource(s["data"]), s["color"]
        dense = s["variant"] == "dense"
        drawn = []
        if dense:
            fig.add_layout(Span(location=s["data"]["y"][0], dimension="width", line_color="gray",
                                line_dash="dashed", line_width=1))
        else:
            if s["band"]:
                drawn.append(fig.add_glyph(source, VArea(x="density", y1="lo", y2="hi", fill_color=color,
                                                         fill_alpha=0.2)))
            drawn.append(fig.add_glyph(source, Line(x="density", y="y", line_color=color, line_width=2,
                                                    line_dash=VARIANT_STYLE.get(s["variant"], "dashdot"))))
        markers.append(fig.add_glyph(source, Scatter(x="density", y="y", size=8 if dense else 6, fill_color=color,
                                                     line_color=color, marker="square" if dense else "circle")))
        items.append(LegendItem(label=textwrap.shorten(s["label"], LEGEND_CHARS, placeholder=" …"),
                                renderers=[*drawn, markers[-1]]))  # (the hover has it whole)
    fig.add_tools(HoverTool(renderers=markers, tooltips=[("", "@label"), ("density", "@density{0.00%}"),
                                                         (ylabel, "@y{0.00}"), ("level", "@level"),
                                                         ("seeds", "@seeds")]))
    legend = Legend(items=items, click_policy="hide", label_text_font_size="9pt", spacing=0, padding=4)
    if legend_below:
        legend.location = "top_left"  # centred, a legend wider than the plot lost its entries' start
        fig.add_layout(legend, "below")
    else:
        legend.location = "bottom_left"
        fig.add_layout(legend)


def accuracy_vs_density(summaries: list[dict]) -> hv.Element:
    """Test accuracy of tickets and controls vs density; mean and spread over seeds; dense baseline."""
    return _by_density(summaries, "test_accuracy", "test accuracy (%)", "Test accuracy vs density", True)


def early_stop_vs_density(summaries: list[dict]) -> hv.Element:
    """Iteration of minimum validation loss vs density: winning tickets learn faster."""
    return _by_density(summaries, "early_stop_iteration", "early-stop iteration",
                       "Early-stopping iteration vs density", False)
