"""The Embedding & adapter tickets tab's plots as a reader sees them (explorer.foundation_ii), without a browser:
one bar per adapted layer, and legends outside the data."""
import holoviews as hv
import pytest
from bokeh.models import Legend

from explorer import foundation_ii as f2

hv.extension("bokeh")

LAYERS = [f"bert.encoder.layer.{i}.{m}.weight" for i in (0, 1) for m in (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense")]


def lora_rows():
    ratios = {layer: 0.1 + 0.01 * i for i, layer in enumerate(LAYERS)}
    return [{"run_id": "r", "rule": "subspace-random", "rank": 4, "density": 0.25, "trainable": 893,
             "test_accuracy": 0.08, "layers": ratios},
            {"run_id": "r", "rule": "dense", "rank": 4, "density": 1.0, "trainable": 3584, "test_accuracy": 0.08}]


def test_every_adapted_layer_has_its_own_bar():
    """A BERT layer's attention output and its FFN output both shortened to "0.output.dense": the tab drew 10 bars
    for bert-tiny's 12 adapted layers, the attention output's ratio hidden under the FFN's."""
    bars = f2.lora_ratios(lora_rows())
    assert len(set(bars.dimension_values("layer"))) == len(LAYERS) == len(bars)


@pytest.mark.parametrize("plot", [
    lambda: f2.lora_ratios(lora_rows()),
    lambda: f2.lora_accuracy(lora_rows()),
    lambda: f2.ks_precision({"known": [1], "levels": [{"k": k, "ticket": {"precision": 0.1 * k, "recovered": None},
                                                       "l2-change": {"precision": 0.4, "recovered": None}}
                                                      for k in (8, 16)]}),
], ids=["ratios", "accuracy", "precision"])
def test_legends_stay_off_the_data(plot):
    """Inside the plot (top right, bottom right) the legend covered the last layers' bars, the dense LoRA point (most
    entries, a low accuracy) and the precision curves at the largest K."""
    figure = hv.render(plot())
    assert not any(isinstance(r, Legend) for r in figure.center)
