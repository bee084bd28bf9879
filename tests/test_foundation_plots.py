"""The Foundation models tab's LoTA bars as a reader sees them (explorer.foundation), without a browser: a title
that fits a 1000 px page's plot, and a mean over the seeds of one experiment only."""
import holoviews as hv

from explorer import foundation

hv.extension("bokeh")


def lota(task_a="pydoc-topics", task_b="pydoc-modules", density=0.1, forgetting=0.2, model="bert-tiny"):
    return {"task_a": task_a, "task_b": task_b, "density": density, "model": model,
            "sequential": {k: {"forgetting": forgetting} for k in ("dense", "lota")},
            "merge": {k: {"a": 0.5, "b": 0.4} for k in ("dense", "lota")}}


def test_the_title_fits_and_the_axis_names_the_tasks():
    """At 1000 px the title ran past the plot and was cut after "merged task vectors": the task pair and the
    count of seeds were lost."""
    plot = foundation.lota_bars([lota(), lota()])
    opts = plot.opts.get().kwargs
    assert len(opts["title"]) <= 60
    assert "pydoc-topics" in opts["xlabel"] and "pydoc-modules" in opts["xlabel"] and "n=2" in opts["xlabel"]


def test_the_mean_is_over_one_experiment():
    """Analyses of other task pairs, densities or models were averaged in with the first one's and labelled
    with its task pair."""
    results = [lota(forgetting=0.2), lota(forgetting=0.2), lota(task_a="pydoc-modules", task_b="pydoc-topics",
                                                                 forgetting=0.9),
               lota(density=0.5, forgetting=0.9), lota(model="minilm", forgetting=0.9)]
    plot = foundation.lota_bars(results)
    forgetting = {v for m, v in zip(plot.dimension_values("measure"), plot.dimension_values("value"))
                  if m == "forgetting of A"}
    assert forgetting == {20.0}
    assert "n=2" in plot.opts.get().kwargs["xlabel"] and "3 other analyses" in plot.opts.get().kwargs["xlabel"]
