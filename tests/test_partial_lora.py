"""Partial-LoRA (engine.methods.partial_lora): adapters through peft, masks with exact per-layer counts whose
pruned entries stay exactly 0 while the base stays bit-identical, merging a masked adapter gives the same
outputs, the subspace ratio rule, and one-line errors."""
import pytest
import torch

import engine
from engine import transformer
from engine.config import DataConfig, TrainConfig
from engine.errors import ConfigError
from engine.methods import partial_lora as pl

pytestmark = pytest.mark.usefixtures("text_cache")


@pytest.fixture(scope="module")
def task():
    data = engine.data.load(DataConfig(dataset="pydoc-topics", tokenizer="minilm", max_length=32))
    model = transformer.build_text_model("bert-tiny", data.input_shape, data.num_classes)
    model.init_from_seed(torch.Generator().manual_seed(0), keep_pretrained=False)
    return data, model


def test_masked_adapter_trains_with_exact_counts_and_merges(task):
    data, model = task
    ratios = pl.subspace_ratios(model, data.train.x[:32])
    assert set(ratios) == set(engine.masks.prunable(model))
    assert all(0 < r <= 1 for r in ratios.values())
    lora = pl.add_lora(model, 4)
    adapters = pl.adapter_params(lora)
    assert len(adapters) == 2 * len(ratios)
    mask = pl.random_mask(adapters, ratios, torch.Generator().manual_seed(1))
    counts = {n: int(m.sum()) for n, m in mask.items()}
    assert counts == {n: pl.count(ratios[pl.layer_of(n)], p.numel()) for n, p in adapters.items()}
    base = {n: p.detach().clone() for n, p in lora.named_parameters() if not pl.is_adapter(n)}
    pl.train_adapter(lora, data, TrainConfig(epochs=1, batch_size=32, lr=1e-2), mask, seed=0)
    after = pl.adapter_params(lora)
    for n, m in mask.items():
        assert int(m.sum()) == counts[n]
        assert torch.count_nonzero(after[n][~m]) == 0          # pruned entries exactly 0
    assert any(torch.count_nonzero(after[n]) for n in after if ".lora_B." in n)  # kept entries trained
    for n, v in base.items():
        if n.startswith("bert."):
            assert torch.equal(dict(lora.named_parameters())[n], v), n   # the base stays bit-identical
    merged = pl.merge(lora)
    from peft.tuners.lora import LoraLayer
    plain = dict(merged.named_parameters())
    assert not any(pl.is_adapter(n) for n in plain)  # a plain model: nothing of the adapters is left to run
    moved = 0
    for name, layer in [(n, m) for n, m in lora.named_modules() if isinstance(m, LoraLayer)]:
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        expected = layer.base_layer.weight + layer.scaling["default"] * (b @ a)
        assert torch.allclose(plain[f"{name}.weight"], expected, atol=1e-6), name
        moved += int(not torch.equal(plain[f"{name}.weight"], layer.base_layer.weight))
    assert moved > 0  # the merge did change base weights
    lora.eval(), merged.eval()
    x = data.test.x[:16]
    with torch.no_grad():
        assert torch.allclose(lora(x), merged(x), atol=1e-5)


def test_magnitude_and_uniform_keep_the_budget(task):
    data, model = task
    lora = pl.add_lora(model, 4)
    adapters = pl.adapter_params(lora)
    ratios = {n: 0.25 if "query" in n else 0.5 for n in engine.masks.prunable(model)}
    uniform = pl.uniform_like(ratios, adapters)
    kept_sub = sum(pl.count(ratios[pl.layer_of(n)], p.numel()) for n, p in adapters.items())
    kept_uni = engine.masks.kept(pl.random_mask(adapters, uniform, torch.Generator().manual_seed(0)))
    assert abs(kept_uni - kept_sub) <= len(adapters)  # rounding per matrix only
    fake = {n: torch.arange(p.numel(), dtype=torch.float).view(p.shape) for n, p in adapters.items()}
    mag = pl.magnitude_mask(fake, ratios)
    for n, m in mag.items():
        assert fake[n][m].min() > fake[n][~m].max()


def test_subspace_ratio_is_small_for_a_low_rank_input():
    class Tiny(torch.nn.Module):
        has_output_layer = False

        def __init__(self):
            super().__init__()
            self.bert = torch.nn.Sequential(torch.nn.Linear(8, 8))

        def prunable_names(self):
            return ["bert.0.weight"]

        def forward(self, x):
            return self.bert(x)

    m = Tiny()
    with torch.no_grad():
        m.bert[0].weight.copy_(torch.eye(8))
    x = torch.zeros(100, 8)
    x[:, 0] = torch.randn(100)  # the task's inputs use one direction only
    assert pl.subspace_ratios(m, x) == {"bert.0.weight": 1 / 8}
    assert pl.subspace_ratios(m, torch.randn(400, 8), capture=1.0) == {"bert.0.weight": 1.0}


@pytest.mark.parametrize("rank", [0, 10 ** 4, 2.5])
def test_bad_rank_is_a_one_line_error(task, rank):
    with pytest.raises(ConfigError, match="prune.lora_rank") as e:
        pl.add_lora(task[1], rank)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
def test_bad_ratio_is_a_one_line_error(task, ratio):
    with pytest.raises(ConfigError, match="prune.lora_capture"):
        pl.subspace_ratios(task[1], task[0].train.x[:4], capture=ratio)
    adapters = pl.adapter_params(pl.add_lora(task[1], 2))
    with pytest.raises(ConfigError, match="prune.lora_ratio"):
        pl.random_mask(adapters, {n: ratio for n in engine.masks.prunable(task[1])}, torch.Generator())
