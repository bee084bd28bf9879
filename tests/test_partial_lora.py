"""Partial-LoRA (engine.methods.partial_lora): adapters through peft, masks with exact per-layer counts whose
pruned entries stay exactly 0 while the base stays bit-identical, merging a masked adapter gives the same
outputs, the subspace ratio rule, `--method partial-lora` end to end (stored, resumed, shown, compared at an
equal trainable budget with lota), and one-line errors that store nothing."""
import contextlib
import io
import json

import pytest
import torch

import engine
from engine import transformer
from engine.config import DataConfig, TrainConfig
from engine.errors import ConfigError
from engine.methods import partial_lora as pl
from engine.store import load_tensors

from conftest import assert_progress_reaches_total

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


def test_scaled_ratios_meet_the_budget_and_keep_the_shape():
    shapes = {"a.lora_A.default.weight": torch.Size([4, 100]), "a.lora_B.default.weight": torch.Size([100, 4]),
              "b.lora_A.default.weight": torch.Size([4, 300]), "b.lora_B.default.weight": torch.Size([300, 4])}
    sub = {"a.weight": 0.1, "b.weight": 0.4}
    for d in (0.05, 0.3, 0.9, 1.0):
        at = pl.scaled(sub, shapes, d)
        assert pl.budget_of(at, shapes) == pytest.approx(d * 3200, abs=4)  # one entry of rounding per matrix
        assert at["b.weight"] >= at["a.weight"] and max(at.values()) <= 1
        if at["b.weight"] < 1:
            assert at["b.weight"] / at["a.weight"] == pytest.approx(4)
    with pytest.raises(ConfigError, match="prune.density"):
        pl.scaled(sub, shapes, 0)


# ---------------------------------------------------------------- the method through engine.run
def pl_cfg(**changes):
    base = {"data.dataset": "pydoc-topics", "model.model": "bert-tiny", "train.epochs": 1, "train.batch_size": 32,
            "prune.method": "partial-lora", "prune.lora_rank": 4, "prune.density": 0.25,
            "prune.lora_rule": "subspace-magnitude", "device": "cpu"}
    return engine.RunConfig().replace(**{**base, **changes})


def test_method_stores_an_exact_masked_adapter_merged_into_the_base(runs_dir):
    events = []
    s = engine.run(pl_cfg(), runs_dir=runs_dir, on_event=events.append)
    assert s["status"] == "completed" and [lv["level"] for lv in s["levels"]] == [1]
    store = engine.store.RunStore(runs_dir, s["run_id"])
    record = json.loads(store.analysis_path(pl.RECORD).read_text())
    base = load_tensors(store.weights_path("init"))
    mask, weights = store.load_level("ticket", 1)
    factors = load_tensors(store.weights_path("adapters.ticket"))
    dense = load_tensors(store.weights_path("adapters.dense-lora"))
    assert set(mask) == set(factors) == set(dense) and all(pl.is_adapter(n) for n in mask)
    # exact per-layer counts at the recorded ratios; the budget is --density of the adapter entries
    for n, m in mask.items():
        assert int(m.sum()) == pl.count(record["layers"][pl.layer_of(n)]["ratio"], m.numel()), n
    assert record["trainable"] == engine.masks.kept(mask) == store.level_record("ticket", 1)["kept_weights"]
    assert abs(record["trainable"] - 0.25 * record["adapter_entries"]) <= len(mask)
    # the magnitude rule: the largest |entries| of the dense adapter at those counts
    for n, m in mask.items():
        assert dense[n].abs()[m].min() >= dense[n].abs()[~m].max(), n
    # pruned adapter entries exactly 0 after training; kept ones trained
    assert all(torch.count_nonzero(factors[n][~m]) == 0 for n, m in mask.items())
    assert any(torch.count_nonzero(factors[n]) for n in factors if ".lora_B." in n)
    # the stored weights: the base with each adapter merged (W + B A, alpha = rank); the rest bit-identical
    for layer in record["layers"]:
        stem = layer[:-len(".weight")]
        delta = factors[f"{stem}.lora_B.default.weight"] @ factors[f"{stem}.lora_A.default.weight"]
        assert torch.allclose(weights[layer], base[layer] + delta, atol=1e-6), layer
    for k, v in base.items():
        if k.startswith("bert.") and k not in record["layers"]:
            assert torch.equal(weights[k], v), k
    # resume: nothing retrains, the same summary
    again = []
    s2 = engine.run(pl_cfg(), runs_dir=runs_dir, on_event=again.append)
    assert s2["levels"] == s["levels"]
    done = [e for e in again if type(e).__name__ == "LevelDone"]
    assert len(done) == 3 and all(e.reused for e in done)  # full fine-tune, dense-lora, ticket
    started = next(e for e in events if type(e).__name__ == "RunStarted")
    assert started.trainings * started.iterations + started.search_steps == 3 * started.iterations
    for run_events in (events, again):  # the bar reaches its total, and a resume's (all reused) never passes it
        assert_progress_reaches_total(run_events)
    # `lottery show` prints the record
    from engine import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["show", s["run_id"], "--runs-dir", str(runs_dir)]) == 0
    assert "partial-lora: rank 4, rule subspace-magnitude" in out.getvalue()
    from explorer.foundation_ii import EmbeddingTicketsPanel  # the app's view reads the stored record
    panel = EmbeddingTicketsPanel(str(runs_dir))
    assert panel.lora_rows and panel.lora_rows[0]["rule"] == "subspace-magnitude"


def test_compare_at_equal_trainable_budget_with_lota(runs_dir):
    from engine.compare import compare

    base = pl_cfg(**{"prune.lora_budget": "model", "prune.lora_rule": "uniform-random",
                     "prune.lora_reference": False, "prune.scope": "global"})
    result = compare(base, ["lota", "partial-lora"], [0.02], 1, runs_dir=runs_dir)
    assert result["status"] == "completed" and {r["method"] for r in result["rows"]} == {"lota", "partial-lora"}
    kept = {}
    for r in result["rows"]:
        store = engine.store.RunStore(runs_dir, r["runs"][0])
        kept[r["method"]] = store.level_record("ticket", 1)["kept_weights"]
    assert abs(kept["partial-lora"] - kept["lota"]) <= 48  # 24 adapter matrices, one entry of rounding each


@pytest.mark.parametrize("rank", [0, 10 ** 4, 2.5])
def test_bad_rank_is_a_one_line_error(task, rank):
    with pytest.raises(ConfigError, match="prune.lora_rank") as e:
        pl.add_lora(task[1], rank)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, field", [({"prune.lora_rank": 0}, "prune.lora_rank"),
                                           ({"prune.lora_rank": 33}, "prune.lora_rank"),  # bert-tiny: H = 32
                                           ({"prune.lora_capture": 0.0}, "prune.lora_capture"),
                                           ({"prune.lora_capture": 1.5}, "prune.lora_capture"),
                                           ({"prune.density": 1.5}, "prune.density"),
                                           ({"prune.lora_budget": "model", "prune.density": 0.5}, "prune.density"),
                                           ({"train.weight_decay": 0.01}, "train.weight_decay"),
                                           ({"model.model": "lenet300", "data.dataset": "digits"}, "model.model")])
def test_bad_run_input_is_a_one_line_error_and_stores_nothing(runs_dir, change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        engine.run(pl_cfg(**change), runs_dir=runs_dir)
    assert "\n" not in str(e.value)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
def test_bad_ratio_is_a_one_line_error(task, ratio):
    with pytest.raises(ConfigError, match="prune.lora_capture"):
        pl.subspace_ratios(task[1], task[0].train.x[:4], capture=ratio)
    adapters = pl.adapter_params(pl.add_lora(task[1], 2))
    with pytest.raises(ConfigError, match="prune.lora_ratio"):
        pl.random_mask(adapters, {n: ratio for n in engine.masks.prunable(task[1])}, torch.Generator())
