"""`lottery report RUN_ID --html FILE`: a standalone HTML page of one run's views (works offline)."""
from __future__ import annotations

from pathlib import Path

import panel as pn

import engine
from engine.formatting import format_summary
from engine.store import RunStore
from engine.zoo import refuse_zoo

from . import offline, plots


def write_report(runs_dir, run_id: str, path) -> Path:
    store = RunStore(runs_dir, run_id)
    summary = store.summary() if store.exists() else None
    if summary is None:
        raise engine.ConfigError("RUN_ID", run_id, f"no run with a summary in {runs_dir} (see `lottery list`)")
    refuse_zoo(store, f"`lottery show {run_id}` summarises it and the app's Weight space tab draws it")
    last = (summary.get("levels") or [summary.get("dense")])[-1]
    mask = None
    if last:
        masks, _ = store.load_level("ticket", last["level"])
        layer = next(iter(masks))
        mask = masks[layer].numpy()
    page = pn.Column(
        f"# Lottery ticket run `{run_id}`",
        pn.pane.Markdown(plots.code_block(format_summary(summary))),
        pn.pane.HoloViews(plots.accuracy_vs_density([summary]), sizing_mode="stretch_width"),
        pn.pane.HoloViews(plots.early_stop_vs_density([summary]), sizing_mode="stretch_width"),
        pn.pane.HoloViews(plots.density_bars(summary), sizing_mode="stretch_width"),
        pn.pane.HoloViews(plots.mask_heatmap(mask, layer if last else "", last["level"] if last else 0),
                          sizing_mode="stretch_width"),
        sizing_mode="stretch_width")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    offline.save_html(page, path, title=f"Lottery ticket run {run_id}")
    return path
