"""Pre-trained transformers as engine models (engine.transformer): what is prunable, theta_0, the MLM head, BERT
tickets and transfer through `engine.run`, bad hf: inputs; one test loads the real packaged MiniLM weights."""
import json
import subprocess
import sys

import pytest
import torch

import engine
from engine import masks as M
from engine import trainer, transformer
from engine.config import DataConfig
from engine.errors import ConfigError
from engine.store import load_tensors

pytestmark = pytest.mark.usefixtures("text_cache")

TYPES = ["query", "key", "value", "attn-out", "ffn-in", "ffn-out"]


def topics(**kw):
    return engine.data.load(DataConfig(dataset="pydoc-topics", tokenizer="minilm", max_length=32, **kw))


def tiny_run(**changes):
    base = {"data.dataset": "pydoc-topics", "model.model": "bert-tiny", "train.epochs": 1, "train.batch_size": 32,
            "prune.levels": 2, "prune.prune_fraction": 0.1, "prune.scope": "global", "prune.method": "bert-imp",
            "prune.controls": ("random", "start-magnitude"), "device": "cpu"}
    return engine.RunConfig().replace(**{**base, **changes})


def test_tiny_classifier_prunes_attention_and_ffn_only():
    d = topics()
    model = transformer.build_text_model("bert-tiny", d.input_shape, d.num_classes)
    names = M.prunable(model)
    assert len(names) == 2 * 6 and M.output_layer(model) is None
    assert [transformer.block_and_type(n) for n in names] == [(b, t) for b in range(2) for t in TYPES]
    params = dict(model.named_parameters())
    assert not [n for n in names if "embeddings" in n or "LayerNorm" in n or n.startswith("head")]
    assert all(params[n].dim() == 2 for n in names)
    assert model(d.train.x[:5]).shape == (5, d.num_classes)
    grid = transformer.density_grid({n: 0.5 for n in names})
    assert grid["blocks"] == [0, 1] and grid["types"] == TYPES and grid["values"][1][5] == 0.5


def test_theta0_is_seeded_and_reinit_redraws_everything():
    d = topics()
    cfg = engine.RunConfig().replace(**{"data.dataset": "pydoc-topics", "model.model": "bert-tiny"}).model
    a = engine.models.build(cfg, d.input_shape, d.num_classes, seed=1).state_dict()
    b = engine.models.build(cfg, d.input_shape, d.num_classes, seed=1).state_dict()
    c = engine.models.build(cfg, d.input_shape, d.num_classes, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_mlm_logits_at_slots_and_accuracy_over_real_targets():
    mlm = engine.data.load(DataConfig(dataset="pydoc-mlm", tokenizer="minilm", max_length=32))
    model = transformer.build_text_model("bert-tiny", mlm.input_shape, mlm.num_classes)
    model.init_from_seed(torch.Generator().manual_seed(0))
    split = engine.data.Split(mlm.test.x[:64], mlm.test.y[:64])
    with torch.no_grad():
        out = model.eval()(split.x)  # evaluation runs without dropout
    assert out.shape == (64, mlm.num_classes, model.slots)
    loss, acc = trainer.evaluate(model, split)
    y = split.y
    real = y != -100
    expect_acc = float((out.argmax(1) == y)[real].float().mean())
    expect_loss = float(torch.nn.functional.cross_entropy(out, y))  # mean over real targets only
    assert acc == pytest.approx(expect_acc) and loss == pytest.approx(expect_loss, rel=1e-4)
    # the decoder is the word-embedding matrix itself (tied), not a copy in the state dict
    assert not any("decoder" in k and k.endswith("weight") for k in model.state_dict())


def test_mlm_trains_in_the_engine_trainer_with_ignored_targets():
    from engine.config import TrainConfig

    mlm = engine.data.load(DataConfig(dataset="pydoc-mlm", tokenizer="minilm", max_length=32))
    small = engine.data.Split(mlm.train.x[:128], mlm.train.y[:128])
    data = engine.data.Dataset("pydoc-mlm", small, small, small, mlm.input_shape, mlm.num_classes)
    model = transformer.build_text_model("bert-tiny", mlm.input_shape, mlm.num_classes)
    model.init_from_seed(torch.Generator().manual_seed(0))
    before = trainer.evaluate(model, small)[0]
    result = trainer.train(model, data, TrainConfig(epochs=4, batch_size=32, lr=3e-3), None, seed=0)
    assert result.final["val_loss"] < before  # -100 slots are ignored by the loss, real targets learned


def test_mlm_head_warmup_is_stored_and_reused(monkeypatch):
    mlm = engine.data.load(DataConfig(dataset="pydoc-mlm", tokenizer="minilm", max_length=32))
    model = transformer.build_text_model("bert-tiny", mlm.input_shape, mlm.num_classes)
    model.pretrained = True  # pretend, so the tiny encoder gets a warmed head like MiniLM's
    monkeypatch.setattr(transformer, "WARMUP_STEPS", 3)
    transformer.warm_mlm_head(model, steps=3)
    path = transformer.warm_head_path("bert-tiny", 32)
    assert path.exists()
    encoder_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("bert.")}
    other = transformer.build_text_model("bert-tiny", mlm.input_shape, mlm.num_classes)
    other.pretrained = True
    transformer.warm_mlm_head(other)
    for n in model.head_names():
        assert torch.equal(dict(model.named_parameters())[n], dict(other.named_parameters())[n])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoder_before.items())  # encoder frozen


def test_bert_tickets_through_run_and_show(runs_dir):
    cfg = tiny_run()
    s = engine.run(cfg, runs_dir=runs_dir)
    assert [lv["density"] for lv in s["levels"]] == pytest.approx([0.9, 0.8], abs=1e-4)
    store = engine.store.RunStore(runs_dir, s["run_id"])
    init = load_tensors(store.weights_path("init"))
    total = sum(init[n].numel() for n in s["levels"][0]["layers"])
    for level in (1, 2):
        mask, weights = store.load_level("ticket", level)
        assert M.kept(mask) == round((1 - 0.1 * level) * total)  # 10% of the ORIGINAL per level, global
        for n, m in mask.items():
            assert (weights[n][~m] == 0).all()
        for k in init:  # embeddings and LayerNorms are never masked
            if "embeddings" in k:
                assert k not in mask
        for control in ("random", "start-magnitude"):
            c_mask, _ = store.load_level(control, level)
            assert M.kept(c_mask) == M.kept(mask)
        random_mask, _ = store.load_level("random", level)
        assert M.layer_densities(random_mask) == pytest.approx(M.layer_densities(mask))
    # the start-magnitude control keeps the largest pre-trained (theta_0) weights
    mag, _ = store.load_level("start-magnitude", 2)
    flat = torch.cat([init[n].abs().flatten() for n in mag])
    kept = torch.cat([mag[n].flatten() for n in mag])
    assert flat[kept].min() >= flat[~kept].max()
    shown = subprocess.run([sys.executable, "-m", "explorer.cli", "show", s["run_id"], "--json", "--runs-dir",
                            str(runs_dir)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and json.loads(shown.stdout)["model"] == "bert-tiny"
    again = engine.run(cfg, runs_dir=runs_dir)  # resumes: nothing retrained
    assert [lv["train_seconds"] for lv in again["levels"]] == [lv["train_seconds"] for lv in s["levels"]]


def test_transfer_fine_tunes_another_runs_ticket(runs_dir):
    source = engine.run(tiny_run(**{"prune.levels": 1, "prune.controls": ()}), runs_dir=runs_dir)
    source_dir = runs_dir / source["run_id"]
    cfg = engine.RunConfig().replace(**{
        "data.dataset": "pydoc-modules", "model.model": "bert-tiny", "train.epochs": 1, "train.batch_size": 32,
        "prune.method": "transfer", "prune.mask_from": str(source_dir), "prune.controls": ("random",),
        "device": "cpu"})
    s = engine.run(cfg, runs_dir=runs_dir)
    store = engine.store.RunStore(runs_dir, s["run_id"])
    mask, _ = store.load_level("ticket", 1)
    source_mask, _ = engine.store.RunStore(runs_dir, source["run_id"]).load_level("ticket", 1)
    assert all(torch.equal(mask[n], source_mask[n]) for n in mask)
    bad = cfg.replace(**{"prune.mask_from": str(runs_dir / "nope")})
    with pytest.raises(ConfigError, match="neither a run directory nor a mask file"):
        engine.run(bad, runs_dir=runs_dir)
    # a bare run id (what `lottery list` shows) is not a folder: the error says what is
    with pytest.raises(ConfigError, match="runs/RUN_ID"):
        engine.run(cfg.replace(**{"prune.mask_from": source["run_id"]}), runs_dir=runs_dir)
    assert not (runs_dir / bad.run_id).exists()  # refused before anything was written


def test_bad_models_are_one_line_errors(tmp_path, runs_dir):
    def run(model, **kw):
        cfg = tiny_run(**{"model.model": model, "data.tokenizer": model if model.startswith("hf:") else "minilm",
                          **kw})
        with pytest.raises(ConfigError) as e:
            engine.run(cfg, runs_dir=runs_dir)
        assert "\n" not in str(e.value)
        assert not (runs_dir / cfg.run_id).exists()
        return str(e.value)

    assert "local Hugging Face cache" in run("hf:no-such-org/no-such-model")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a model")
    assert "holds no" in run(f"hf:{tmp_path / 'empty'}")
    assert "at most 128 tokens" in run("bert-tiny", **{"data.max_length": 256})
    # --bayesian converts vision nets only: a transformer used to train deterministically under a Bayesian run id
    assert "not Bayesian" in run("bert-tiny", **{"model.bayesian": True})
    assert "not Bayesian" in run("bert-tiny", **{"model.bayesian": True, "prune.method": "bayes-imp"})
    # a folder whose tokenizer (MiniLM's, 30522 tokens) does not fit its model (100 embedding rows)
    import transformers
    folder = tmp_path / "mismatch"
    transformers.BertModel(transformers.BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
                                                   num_attention_heads=1, intermediate_size=8)).save_pretrained(folder)
    transformer.load_tokenizer("minilm").save_pretrained(folder)
    assert "tokenizer/model mismatch" in run(f"hf:{folder}")


def test_hf_folder_loads_like_a_registered_model(tmp_path, runs_dir):
    import transformers
    folder = tmp_path / "my-bert"
    transformers.BertModel(transformer.tiny_config()).save_pretrained(folder)
    transformer.load_tokenizer("minilm").save_pretrained(folder)
    name = f"hf:{folder}"
    s = engine.run(tiny_run(**{"model.model": name, "data.tokenizer": name, "prune.levels": 1,
                               "prune.controls": ()}), runs_dir=runs_dir)
    assert s["status"] == "completed" and s["run_id"].startswith("bert-imp-hf-pydoctopics-")
    init = load_tensors(runs_dir / s["run_id"] / "init.safetensors")
    saved = transformers.BertModel.from_pretrained(folder).state_dict()
    assert torch.equal(init["bert.encoder.layer.0.attention.self.query.weight"],
                       saved["encoder.layer.0.attention.self.query.weight"])  # theta_0 = the folder's weights


def test_real_minilm_weights_load_offline(monkeypatch):
    """The one test with the real packaged weights (22.7M parameters, ~90 MB): they load offline, and the MLM
    head MiniLM lacks is warmed up on them once (2 steps here instead of 300), stored and reused."""
    from safetensors.torch import load_file

    d = topics()
    model = transformer.build_text_model("minilm", d.input_shape, d.num_classes)
    model.init_from_seed(torch.Generator().manual_seed(0))
    encoder = sum(p.numel() for p in model.bert.parameters())
    assert 22_000_000 < encoder < 23_000_000
    names = M.prunable(model)
    assert len(names) == 36 and {transformer.block_and_type(n) for n in names} == {
        (b, t) for b in range(6) for t in TYPES}
    shipped = load_file(f"{transformer.minilm_path()}/model.safetensors")
    key = next(k for k in shipped if k.endswith("encoder.layer.5.output.dense.weight"))
    assert torch.equal(model.state_dict()["bert.encoder.layer.5.output.dense.weight"], shipped[key])
    with torch.no_grad():
        assert model(d.test.x[:4]).shape == (4, d.num_classes)
    monkeypatch.setattr(transformer, "WARMUP_STEPS", 2)  # (part of the stored head's key: not the real one's)
    mlm = engine.data.load(DataConfig(dataset="pydoc-mlm", tokenizer="minilm", max_length=32))
    lm = transformer.build_text_model("minilm", mlm.input_shape, mlm.num_classes)
    drawn = {n: p.clone() for n, p in lm.named_parameters() if n in lm.head_names()}
    path = transformer.warm_head_path("minilm", 32)
    assert not path.exists()
    lm.init_from_seed(torch.Generator().manual_seed(0))  # a pre-trained encoder's head: warmed up, stored
    assert path.exists()
    warmed = dict(lm.named_parameters())
    assert torch.equal(lm.state_dict()["bert.encoder.layer.5.output.dense.weight"], shipped[key])  # frozen
    assert not torch.equal(warmed["decoder_bias"], drawn["decoder_bias"])  # trained (it starts at zero)
    again = transformer.build_text_model("minilm", mlm.input_shape, mlm.num_classes)
    mtime = path.stat().st_mtime_ns
    again.init_from_seed(torch.Generator().manual_seed(1))  # another seed: the stored head, not retrained
    assert path.stat().st_mtime_ns == mtime
    for n in lm.head_names():
        assert torch.equal(dict(again.named_parameters())[n], warmed[n])


def test_foundation_tab_draws_the_stored_runs(runs_dir):
    from explorer.foundation import FoundationPanel, lota_bars

    s = engine.run(tiny_run(**{"prune.levels": 1, "prune.controls": ()}), runs_dir=runs_dir)
    panel = FoundationPanel(runs_dir)
    assert panel.run.value == s["run_id"] and panel.level.value == 1
    matrix = panel.matrix_pane.object
    assert "HeatMap" in str(matrix)  # one cell: the ticket on its own task
    blocks = panel.block_pane.object
    assert sorted(set(blocks.data["block"])) == ["0", "1"] and len(blocks.data) == 12
    panel.level.value = 0
    assert set(panel.block_pane.object.data["density"]) == {1.0}  # the dense fine-tune
    result = {"task_a": "pydoc-topics", "task_b": "pydoc-modules",
              "sequential": {k: {"forgetting": f} for k, f in (("dense", 0.2), ("lota", 0.05))},
              "merge": {k: {"a": 0.5, "b": 0.4} for k in ("dense", "lota")}}
    bars = lota_bars([result, result])
    assert len(bars.data) == 6 and "n=2" in bars.opts.get().kwargs["xlabel"]
    panel.__panel__()


def test_compare_includes_bert_imp_and_lota_on_a_tiny_bert(runs_dir, capsys):
    from engine.cli import main

    args = ["compare", "--methods", "bert-imp,lota", "--densities", "0.8", "--seeds", "2", "--model", "bert-tiny",
            "--dataset", "pydoc-topics", "--epochs", "1", "--batch-size", "32", "--prune-fraction", "0.1",
            "--scope", "global", "--controls", "random", "--runs-dir", str(runs_dir), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == {"bert-imp", "lota"} and out["model"] == "bert-tiny"
    assert rows["bert-imp"]["density"] == pytest.approx(0.8, abs=1e-3)  # two levels of 10% of the original
    assert rows["lota"]["density"] == pytest.approx(0.8, abs=1e-3)
    assert all(r["seeds"] == 2 and 0 <= r["test_accuracy_mean"] <= 1 for r in rows.values())
    assert "random" in rows["bert-imp"]["control_deltas"]  # lota trains no controls
    assert rows["bert-imp"]["search_steps"] > rows["lota"]["search_steps"] > 0  # dense + level 1 vs dense


def test_models_and_tokenizers_load_from_several_threads_at_once():
    # transformers' lazy module is not thread-safe: `lottery compare --seeds 3` (a cell's seeds run side by side in
    # threads) failed with "module 'transformers' has no attribute 'BertModel'" / "holds no tokenizer Hugging Face
    # can read"; peft's first import from threads too. A fresh interpreter, so nothing is imported yet.
    code = """
import threading
from engine import transformer
from engine.methods import partial_lora
errors = []
def go(i):
    try:
        if i % 3 == 0:
            transformer.load_tokenizer("minilm")
        elif i % 3 == 1:
            transformer.build_text_model("bert-tiny", (32,), 4)
        else:
            partial_lora.inject(transformer.build_text_model("bert-tiny", (32,), 4), 2, 0)
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
