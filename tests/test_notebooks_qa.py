"""What a teacher or student sees in the teaching notebooks, cell by cell (found by running them in JupyterLab).

tests/test_notebooks.py runs every notebook top to bottom and tests/test_jupyter_offline.py checks that its
plots are drawn in a browser; neither reads what a cell shows. Here single cells run in this process against
stand-ins for the runs they would train (`run_cell`), so each check costs milliseconds, not a training.
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path
from types import SimpleNamespace

import holoviews as hv
import nbformat
import pandas as pd

from engine.formatting import format_analysis
from explorer.offline import load_bokeh

load_bokeh()  # HoloViews' Bokeh backend, as the notebooks' setup_notebook() loads it

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def code_cell(notebook: str, marker: str) -> str:
    """The source of the one code cell of `notebook` holding `marker`."""
    cells = [c.source for c in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells
             if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells of {notebook} hold {marker!r}"
    return cells[0]


def run_cell(notebook: str, marker: str, **namespace):
    """Run that cell with `namespace` as its globals; the value of its last line if that is an expression (what
    the notebook displays), as IPython does."""
    tree = ast.parse(code_cell(notebook, marker))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, notebook, "exec"), namespace)
    return eval(compile(ast.Expression(last.value), notebook, "eval"), namespace) if last else None


def test_02_earlybird_not_detected_in_a_short_run_says_so(capsys):
    # the smoke setting trains 2 epochs: too few for 5 settled masks; it printed "detected at epoch None of 2"
    record = {"analysis": "earlybird-replay", "method": "imp", "detected_epoch": None, "epochs_total": 2, "eps": 0.1,
              "imp_ticket": {"level": 2, "density": 0.64, "test_accuracy": 0.93}}
    run_cell("02_stability_and_topology.ipynb", "run_earlybird", RUNS="runs", RUN="r", format_analysis=format_analysis,
             analysis=SimpleNamespace(run_earlybird=lambda runs, run: record),
             ap=SimpleNamespace(earlybird=lambda eb: None))
    out = capsys.readouterr().out
    assert "None" not in out
    assert "not detected in 2 epochs" in out


def test_03_edge_popup_plot_shows_a_single_width(caplog):
    # the smoke setting trains one width: a Curve of one point draws nothing, and its log axis warned in the
    # cell's output ("Logarithmic axis range encountered value less than or equal to zero")
    summary = {"levels": [{"test_accuracy": 0.88}], "dense": {"test_accuracy": 0.95}}
    base = SimpleNamespace(replace=lambda **changes: changes)
    with caplog.at_level(logging.WARNING):
        plot = run_cell("03_ticket_families.ipynb", "Edge-Popup vs width", SMOKE=True, pd=pd, hv=hv, base=base,
                        engine=SimpleNamespace(run=lambda cfg, runs_dir: summary), RUNS="runs")
        figure = hv.render(plot, backend="bokeh")
    assert not [r.getMessage() for r in caplog.records if "Logarithmic" in r.getMessage()]
    markers = [r for r in figure.renderers if type(r.glyph).__name__ == "Scatter"]
    assert len(markers) == 2  # supermask and dense: one point each is visible
    assert 0 < figure.x_range.start < 0.5 < figure.x_range.end


def test_09_shows_the_settings_it_trains(monkeypatch):
    # its first cell showed the preset alone (resnet20, 10 epochs, iter:20) above a smoke run of lenet300 for
    # one epoch rewound to iter:1
    import torch

    monkeypatch.setenv("LOTTERY_SMOKE", "1")
    threads = torch.get_num_threads()
    try:
        shown = run_cell("09_stability_story.ipynb", "preset_settings(PRESET)")
    finally:
        torch.set_num_threads(threads)  # the cell sets the notebook kernel's
    assert shown["model.model"] == "lenet300" and shown["train.epochs"] == 1 and shown["prune.rewind"] == "iter:1"
    assert shown["data.dataset"] == "digits"  # the preset's own settings are still there


def test_setup_notebook_run_again_sends_bokehjs_again(tmp_path):
    # Reloading the browser page (or opening the notebook in a new tab) keeps the kernel; Run All then ran the
    # setup cell a second time in that kernel, where Panel and HoloViews send only a "reloading" bundle without
    # BokehJS, and every plot of the fresh page stayed blank
    from nbclient import NotebookClient

    setup = "from explorer.offline import setup_notebook\nsetup_notebook()"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(setup)])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    def bokehjs_sent(cell):  # BokehJS's own source, inlined, is in what the cell sent to the page
        return any("BEGIN bokeh.min.js" in str(o.get("data", {}).get("application/javascript", ""))
                   for o in cell.outputs)

    first, again = nb.cells
    assert bokehjs_sent(first)
    assert bokehjs_sent(again)


def test_04_speedup_table_shows_sparsity_as_read():
    # the sparsity a float32 mask reaches: the table showed 0.899994 for the 90% row
    def row(pattern, sparsity, batch):
        return {"pattern": pattern, "sparsity": sparsity, "batch": batch, "speedup": 1.0, "available": True,
                "theoretical_speedup": 1 / (1 - sparsity), "dtype": "float32", "reason": ""}

    rows = [row("dense", 0.0, b) for b in (1, 64)] + [row("csr", s, b) for s in (0.5, 0.8999940156936646)
                                                       for b in (1, 64)]
    namespace = {"pd": pd, "ORDER": ["dense", "masked", "csr", "channel", "2:4"], "layer": {"rows": rows},
                 "display": lambda obj: None}
    exec(code_cell("04_hardware_lottery.ipynb", "def speedup_table"), namespace)
    table = namespace["speedup_table"](rows)
    assert sorted(set(table.index.get_level_values("sparsity"))) == [0.0, 0.5, 0.9]


def test_07_puts_at_most_two_plots_in_a_row_and_wraps_them_on_a_narrower_page():
    """At 1400 px in JupyterLab the KS cell showed three plots in one row (`ks_tokens(record) + ks_curves(record)`,
    a HoloViews Layout): ~300 px each, their titles cut. Plots beside each other go through plots.side_by_side, as
    in the app (two to a row on a wide page, one per row below 1300 px); a Layout never wraps."""
    import panel as pn

    from explorer import foundation_ii
    from explorer.plots import side_by_side

    top = [{"id": i, "statistic": 1 / (i + 1), "token": f"t{i}"} for i in range(8)]
    levels = [{"k": k, **{v: {"tokens": [0, 1], "precision": 0.5, "recovered": 0.4} for v in foundation_ii.RANKINGS}}
              for k in (2, 4)]
    lora = {f"run-{rule}": {"rule": rule, "rank": 4, "adapter_density": 0.25, "trainable": 900, "test_accuracy": 0.5,
                            "layers": {"0.attention.self.query": {"ratio": 0.3}}, "dense_lora_test_accuracy": 0.6,
                            "dense_lora_trainable": 3600} for rule in ("subspace-random", "uniform-random")}
    namespace = {**{n: getattr(foundation_ii, n) for n in dir(foundation_ii) if not n.startswith("_")},
                 "side_by_side": side_by_side, "lora_records": lora,
                 "record": {"top": top, "known": [0], "levels": levels, "embedding_test_accuracy": 0.6}}
    cells = [c.source for c in nbformat.read(NOTEBOOKS / "07_embedding_and_adapter_tickets.ipynb", as_version=4).cells
             if c.cell_type == "code" and "import" not in c.source and "engine." not in c.source]
    shown = [run_cell("07_embedding_and_adapter_tickets.ipynb", source, **namespace) for source in cells]
    for source, s in zip(cells, shown):
        assert not (isinstance(s, hv.Layout) and len(s) > 1), f"a Layout of plots in one row, never wrapped: {source}"
        if isinstance(s, pn.Row):
            assert "side-by-side" in s.css_classes and len(s) <= 2, source
    assert len(shown) == 3 and all(s is not None for s in shown)  # the tokens; precision and recovery; LoRA's two
    assert sum(isinstance(s, pn.Row) for s in shown) == 2
