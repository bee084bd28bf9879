"""Text tasks (engine.text): the offline corpus, BERT's masking, the downstream tasks, users' own texts, and the
pairing of text datasets with transformer models."""
import json
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import text
from engine.config import DataConfig
from engine.errors import ConfigError

pytestmark = pytest.mark.usefixtures("text_cache")


def data_cfg(**kw):
    return DataConfig(**{"tokenizer": "minilm", "max_length": 32, **kw})


def test_sentences_keep_prose_and_drop_code():
    doc = """Return the sum of two numbers given as arguments.

    >>> add(1, 2)
    3

    short.
    This sentence is clean prose of a reasonable length. and this one is not capitalised so it joins the previous."""
    got = text.sentences(doc)
    assert got[0] == "Return the sum of two numbers given as arguments."
    assert not any(">>>" in s for s in got)
    assert "short." not in got


def test_corpus_is_large_deduplicated_and_cached(text_cache):
    rows = text.corpus()
    assert len(rows) > 10_000  # ~13k sentences of docstrings and help topics
    assert {r["source"] for r in rows} == {"module", "topic"}
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    assert list(text_cache.glob("text/corpus-*.json"))  # built once, read back next time
    assert text.corpus() == rows


def test_masking_follows_bert_recipe():
    tok = engine.transformer.load_tokenizer("minilm")
    rng = np.random.default_rng(1)
    length = 32
    ids = text.encode(["The quick brown fox jumps over the lazy dog near the river bank today."] * 400, "minilm",
                      length, truncate=True)
    x, y = text.mask_tokens(ids, "minilm", rng)
    slots = text.mlm_slots(length)
    assert x.shape == (400, 2, length) and y.shape == (400, slots)
    assert (x[:, 1].sum(1) == slots).all()  # exactly `slots` prediction slots per example
    special = set(tok.all_special_ids)
    masked = replaced = kept = 0
    for i in range(400):
        flagged = np.flatnonzero(x[i, 1])
        for pos, target in zip(flagged, y[i]):
            if target == -100:
                continue
            assert ids[i, pos] == target and target not in special  # only real tokens are predicted
            now = x[i, 0, pos]
            masked += now == tok.mask_token_id
            kept += now == target
            replaced += now not in (tok.mask_token_id, target)
        n_real = int((~np.isin(ids[i], list(special))).sum())
        assert (y[i] != -100).sum() == min(slots, max(1, round(0.15 * n_real)))
        unflagged = np.setdiff1d(np.arange(length), flagged)
        assert (x[i, 0, unflagged] == ids[i, unflagged]).all()  # nothing else changes
    total = masked + replaced + kept
    assert abs(masked / total - 0.8) < 0.05 and abs(kept / total - 0.1) < 0.04
    x2, y2 = text.mask_tokens(ids, "minilm", np.random.default_rng(1))
    assert (x2 == x).all() and (y2 == y).all()  # deterministic


def test_downstream_tasks_are_balanced_disjoint_and_held_out_of_mlm():
    for name, (source, classes, n_train, n_test) in text._TASKS.items():
        tr_x, tr_y, te_x, te_y, names = text._classification(source, classes, n_train, n_test)
        assert len(names) == classes >= 10  # many classes, few examples: hard enough to separate tickets
        assert np.bincount(tr_y).tolist() == [n_train] * classes
        assert np.bincount(te_y).tolist() == [n_test] * classes
        assert not set(tr_x) & set(te_x)
    d = engine.data.load(data_cfg(dataset="pydoc-topics"))
    assert d.num_classes == text.TOPIC_CLASSES and d.input_shape == (32,)
    assert len(d.train) + len(d.val) == text.TOPIC_CLASSES * text.TOPIC_TRAIN
    mlm = engine.data.load(data_cfg(dataset="pydoc-mlm"))
    assert mlm.input_shape == (2, 32) and mlm.num_classes == 30522
    splits = text.mlm_texts()
    assert not set(splits["train"]) & text.downstream_test_texts()  # an MLM ticket never saw a task's test set
    assert len(splits["train"]) + len(splits["test"]) > 0.95 * len(text.corpus())
    assert len(mlm.train) + len(mlm.val) == len(splits["train"])


def test_text_datasets_are_listed_by_run_help():
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "run", "--help"], capture_output=True, text=True,
                         timeout=300).stdout
    for name in ("pydoc-mlm", "pydoc-modules", "pydoc-topics", "text:PATH", "minilm", "bert-tiny", "lota",
                 "bert-imp", "transfer"):
        assert name in out, name


def test_own_texts_jsonl_and_npz(tmp_path):
    rows = [{"text": f"sentence number {i} about {'cats' if i % 2 else 'dogs'}", "label": i % 2} for i in range(40)]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    d = engine.data.load(data_cfg(dataset=f"text:{path}"))
    assert d.num_classes == 2 and len(d.test) == 8 and len(d.train) + len(d.val) == 32
    npz = tmp_path / "mine.npz"
    np.savez(npz, text_train=np.array(["a cat", "a dog", "two cats"]), y_train=np.array([0, 1, 0]),
             text_test=np.array(["one dog"]), y_test=np.array([1]))
    d = engine.data.load(data_cfg(dataset=f"text:{npz}", val_fraction=0.3))
    assert d.num_classes == 2 and d.test.y.tolist() == [1]


@pytest.mark.parametrize("rows, message", [
    ([{"text": "a cat", "label": 0, "split": "train"}, {"text": "a dog", "label": 3, "split": "test"}],
     "test label 3 is out of range"),
    ([{"text": "a cat", "label": -1}, {"text": "a dog", "label": 0}], "label -1 is out of range"),
    ([{"text": "word " * 100, "label": 0, "split": "train"}, {"text": "a dog", "label": 0, "split": "test"}],
     "tokens: raise --max-length"),
    ([{"txt": "a cat", "label": 0}], "needs a \"text\" string"),
])
def test_bad_texts_are_one_line_errors(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError, match=message) as e:
        engine.data.load(data_cfg(dataset=f"text:{path}"))
    assert "\n" not in str(e.value)
    runs = tmp_path / "runs"
    cfg = engine.RunConfig().replace(**{"data.dataset": f"text:{path}", "model.model": "bert-tiny",
                                        "train.epochs": 1, "device": "cpu"})
    with pytest.raises(ConfigError, match=message):
        engine.run(cfg, runs_dir=runs)
    assert not (runs / cfg.run_id).exists()  # refused before anything was stored


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        engine.data.load(data_cfg(dataset=f"text:{tmp_path / 'nope.jsonl'}"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match=".jsonl or .npz"):
        engine.data.load(data_cfg(dataset=f"text:{tmp_path / 'x.csv'}"))


def test_text_data_pairs_with_transformers_only():
    base = engine.RunConfig()
    with pytest.raises(ConfigError, match="holds token ids"):
        base.replace(**{"data.dataset": "pydoc-topics"})  # lenet300 on token ids
    with pytest.raises(ConfigError, match="reads token ids"):
        base.replace(**{"model.model": "minilm"})  # a transformer on digits
    with pytest.raises(ConfigError, match="pass --tokenizer hf:/some/bert"):
        base.replace(**{"data.dataset": "pydoc-topics", "model.model": "hf:/some/bert"})
    with pytest.raises(ConfigError, match="data.tokenizer"):
        base.replace(**{"data.tokenizer": "gpt2"})
    cfg = base.replace(**{"data.dataset": "pydoc-topics", "model.model": "hf:/some/bert",
                          "data.tokenizer": "hf:/some/bert"})
    assert cfg.run_id.startswith("imp-hf-pydoctopics-")  # no path in the run id


def test_hub_dataset_only_with_download(runs_dir, monkeypatch):
    def refused(**kw):
        cfg = engine.RunConfig().replace(**{"data.dataset": "hf:someone/some-texts", "model.model": "bert-tiny",
                                            "train.epochs": 1, "device": "cpu", **kw})
        with pytest.raises(ConfigError) as e:
            engine.run(cfg, runs_dir=runs_dir)
        assert "\n" not in str(e.value) and "hf:someone/some-texts" in str(e.value)
        assert not (runs_dir / cfg.run_id).exists()  # nothing stored
        return str(e.value)

    assert "needs the network: pass --download" in refused()
    # offline here: without the `datasets` package, or with it and no network, a one-line error
    assert any(m in refused(**{"data.download": True}) for m in ("pip install -e '.[hub]'", "could not be downloaded"))
    fake = type(sys)("datasets")

    def offline(name):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\ntraceback details")

    fake.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert "could not be downloaded (ConnectionError: Couldn't reach" in refused(**{"data.download": True})
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "run", "--dataset", "hf:someone/some-texts",
                          "--model", "bert-tiny", "--runs-dir", str(runs_dir)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "pass --download" in out.stderr and "Traceback" not in out.stderr
