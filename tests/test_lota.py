"""LoTA (engine.methods.lota): the sparse task vector's mask, training only its entries (every other encoder
weight bit-identical to the base), sequential tasks on disjoint masks, and task-vector merging."""
import re

import pytest
import torch

import engine
from engine import masks as M
from engine import transformer
from engine.config import DataConfig, TrainConfig
from engine.errors import ConfigError
from engine.methods import lota
from engine.store import load_tensors

pytestmark = pytest.mark.usefixtures("text_cache")


def lota_cfg(**changes):
    base = {"data.dataset": "pydoc-topics", "model.model": "bert-tiny", "train.epochs": 2, "train.batch_size": 32,
            "prune.method": "lota", "prune.scope": "global", "prune.density": 0.1, "device": "cpu"}
    return engine.RunConfig().replace(**{**base, **changes})


def test_mask_is_the_exact_top_of_the_task_vector():
    base = {"a": torch.zeros(4, 5), "b": torch.zeros(3, 3)}
    tuned = {"a": torch.arange(20.).view(4, 5) - 10, "b": torch.full((3, 3), 0.5)}
    alive = {n: torch.ones_like(v, dtype=torch.bool) for n, v in base.items()}
    mask = lota.lota_mask(base, tuned, alive, density=0.2)
    assert M.kept(mask) == round(0.2 * 29)
    scores = torch.cat([(tuned[n] - base[n]).abs().flatten() for n in base])
    kept = torch.cat([mask[n].flatten() for n in base])
    assert scores[kept].min() >= scores[~kept].max()
    no_a = {"a": torch.zeros(4, 5, dtype=torch.bool), "b": alive["b"]}  # a used-up support is never chosen
    assert not lota.lota_mask(base, tuned, no_a, density=0.2)["a"].any()


def test_lota_run_trains_only_the_sparse_task_vector(runs_dir):
    s = engine.run(lota_cfg(), runs_dir=runs_dir)
    assert s["status"] == "completed" and s["controls"] == {}
    store = engine.store.RunStore(runs_dir, s["run_id"])
    base = load_tensors(store.weights_path("init"))
    mask, weights = store.load_level("ticket", 1)
    _, dense = store.load_level("ticket", 0)
    assert M.kept(mask) == round(0.1 * M.total(mask))
    # the mask is the top 10% of |dense fine-tune - base|
    delta = torch.cat([(dense[n] - base[n]).abs().flatten() for n in mask])
    kept = torch.cat([mask[n].flatten() for n in mask])
    assert delta[kept].min() >= delta[~kept].max()
    changed = 0
    for k, v in base.items():
        if k in mask:
            assert torch.equal(weights[k][~mask[k]], v[~mask[k]])  # bit-identical outside the mask
            changed += int((weights[k][mask[k]] != v[mask[k]]).sum())
        elif k.startswith("bert."):
            assert torch.equal(weights[k], v), k  # embeddings, LayerNorms, biases: frozen
    assert changed > 0.5 * M.kept(mask)  # the selected entries did train
    assert not torch.equal(weights["head.weight"], base["head.weight"])  # the new task head trains


def test_lota_refuses_weight_decay(runs_dir):
    cfg = lota_cfg(**{"train.weight_decay": 0.01})
    with pytest.raises(ConfigError, match="train.weight_decay"):
        engine.run(cfg, runs_dir=runs_dir)
    assert not (runs_dir / cfg.run_id).exists()


def two_tasks():
    data = {name: engine.data.load(DataConfig(dataset=name, tokenizer="minilm", max_length=32))
            for name in ("pydoc-topics", "pydoc-modules")}
    models = {name: transformer.build_text_model("bert-tiny", d.input_shape, d.num_classes)
              for name, d in data.items()}
    for i, m in enumerate(models.values()):
        m.init_from_seed(torch.Generator().manual_seed(i), keep_pretrained=False)
    encoder = lota.encoder_state(models["pydoc-topics"])  # one base encoder, a head per task
    models["pydoc-modules"] = lota.with_encoder(models["pydoc-modules"], encoder)
    return data, models


def test_sequential_tasks_use_disjoint_masks_and_report_forgetting():
    data, models = two_tasks()
    cfg = TrainConfig(epochs=1, batch_size=32)
    out = lota.sequential(models["pydoc-topics"], data["pydoc-topics"], models["pydoc-modules"],
                          data["pydoc-modules"], cfg, density=0.1, seed=0)
    assert out["lota"]["overlap"] == 0  # task B trained only what task A left untouched
    for kind in ("dense", "lota"):
        r = out[kind]
        assert r["forgetting"] == pytest.approx(r["a_before"] - r["a_after"])
        assert 0 <= r["b"] <= 1


def test_merging_searches_one_scale_on_validation():
    data, models = two_tasks()
    cfg = TrainConfig(epochs=1, batch_size=32)
    a = lota.fine_tune(models["pydoc-topics"], data["pydoc-topics"], cfg, 0.1, seed=0)
    b = lota.fine_tune(models["pydoc-modules"], data["pydoc-modules"], cfg, 0.1, seed=0)
    out = lota.merge(models["pydoc-topics"], a.model, data["pydoc-topics"], b.model, data["pydoc-modules"],
                     scales=(0.0, 1.0))
    assert out["scale"] in (0.0, 1.0)
    assert out["a_alone"] == pytest.approx(lota.accuracy(a.model, data["pydoc-topics"].test))
    # at scale 0 the merged encoder is the base: the task heads read it unchanged
    zero = lota.merge(models["pydoc-topics"], a.model, data["pydoc-topics"], b.model, data["pydoc-modules"],
                      scales=(0.0,))
    base_a = lota.with_encoder(a.model, lota.encoder_state(models["pydoc-topics"]))
    assert zero["a"] == pytest.approx(lota.accuracy(base_a, data["pydoc-topics"].test))


def test_lota_tasks_analysis_is_stored_and_formatted(runs_dir, capsys, monkeypatch):
    import json
    import sys

    from engine.analysis import analyze
    from engine.cli import main
    from engine.formatting import format_analysis

    s = engine.run(lota_cfg(**{"train.epochs": 1}), runs_dir=runs_dir)
    # in a terminal, `lottery analyze` says where a long analysis is (it was silent for minutes on MiniLM)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["analyze", s["run_id"], "lota-tasks", "--other", "pydoc-modules", "--runs-dir", str(runs_dir),
                 "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "lota-tasks: task A: dense fine-tune (0/9)" in out.err and "merging lota task vectors (8/9)" in out.err
    assert (runs_dir / s["run_id"] / "analyses" / "lota-tasks.json").exists()
    assert result["sequential"]["lota"]["overlap"] == 0
    assert set(result["merge"]) == {"dense", "lota"}
    text = format_analysis("lota-tasks", result)
    assert "forgetting" in text and "merged" in text
    with pytest.raises(ConfigError, match="must differ"):
        analyze("lota-tasks", runs_dir, s["run_id"], other="pydoc-topics")
    # a task B that is no text task names the flag the user typed (it said "data.dataset")
    for bad in ("digits", "nope", "text:/nope.jsonl"):  # (the last one fails on loading, not validation)
        with pytest.raises(ConfigError, match=r"^other: '" + re.escape(bad)):
            analyze("lota-tasks", runs_dir, s["run_id"], other=bad)
