"""KS-Lottery (engine.methods.ks_lottery) and its known-answer task (engine.vocab_task): the statistic against
SciPy, the ranking and the BH selection, a run whose untouched embedding rows and frozen encoder stay
bit-identical to the base, and one-line errors."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

import engine
from engine.config import DataConfig
from engine.errors import ConfigError
from engine.methods import ks_lottery as ks
from engine.store import load_tensors

from conftest import assert_progress_reaches_total

pytestmark = pytest.mark.usefixtures("text_cache")


def ks_cfg(**changes):
    base = {"data.dataset": "pydoc-topics-expanded", "model.model": "bert-tiny", "train.epochs": 1,
            "train.batch_size": 32, "prune.method": "ks-lottery", "prune.scope": "global", "prune.ks_top_k": (4,),
            "prune.ks_baselines": False, "device": "cpu"}
    return engine.RunConfig().replace(**{**base, **changes})


def test_statistic_matches_scipy_and_finds_the_shifted_row():
    g = torch.Generator().manual_seed(0)
    before = torch.randn(3, 200, generator=g)
    after = before.clone()
    after[1] += 1.0                                    # shifted: a different distribution
    after[2] = before[2][torch.randperm(200, generator=g)]  # permuted: the same values, D = 0
    stat, pval = ks.ks_statistics(before, after)
    for i in range(3):
        ref = ks_2samp(before[i].double().numpy(), after[i].double().numpy())
        assert stat[i] == pytest.approx(ref.statistic) and pval[i] == pytest.approx(ref.pvalue)
    assert stat[0] == 0 and stat[2] == 0 and stat[1] > 0.3
    assert list(ks.rank(stat, pval))[0] == 1
    assert list(ks.significant(pval, np.arange(3), 0.05)) == [1]
    # rows left out of the test are not tested at all
    s2, p2 = ks.ks_statistics(before, after, torch.tensor([True, False, True]))
    assert s2[1] == 0 and p2[1] == 1


def test_selection_helpers():
    assert ks.precision_recall([1, 2, 3, 4], [3, 4, 5]) == {"precision": 0.5, "recall": 2 / 3, "hits": 2}
    scores = np.array([0.0, 5.0, 1.0, 5.0, 9.0])
    assert list(ks.top(scores, np.array([0, 1, 2, 3]), 2)) == [1, 3]  # 4 is not a candidate; ties by id
    m = ks.row_mask((5, 3), [1, 4])[ks.EMBEDDING]
    assert m.sum() == 6 and m[1].all() and m[4].all() and not m[0].any()


def test_known_answer_task_rewrites_informative_words_into_unused_rows():
    from engine import vocab_task

    cfg = DataConfig(dataset=vocab_task.EXPANDED, tokenizer="minilm", max_length=32)
    data = engine.data.load(cfg)
    plain = engine.data.load(DataConfig(dataset="pydoc-topics", tokenizer="minilm", max_length=32))
    known = vocab_task.known_tokens(cfg)
    assert len(known) == vocab_task.WORDS and known == vocab_task.unused_ids("minilm", vocab_task.WORDS)
    ids = set(torch.cat([data.train.x.flatten(), data.test.x.flatten()]).tolist())
    assert set(known) <= ids                          # every new token is used
    words = vocab_task.informative_words(*[np.asarray(a) for a in (plain.train.x, plain.train.y)], "minilm")
    assert len(words) == vocab_task.WORDS
    assert vocab_task.known_tokens(DataConfig(dataset="pydoc-topics")) is None


def test_run_retunes_only_the_selected_rows(runs_dir):
    events = []
    s = engine.run(ks_cfg(), runs_dir=runs_dir, on_event=events.append)
    assert s["status"] == "completed"
    # the progress total counts the embedding fine-tune, the head alone and the baselines (it counted only the
    # dense net and the tickets: `lottery run` showed 8/8 with 30 iterations to go)
    assert_progress_reaches_total(events)
    resumed = []
    engine.run(ks_cfg(), runs_dir=runs_dir, on_event=resumed.append)
    assert_progress_reaches_total(resumed)
    store = engine.store.RunStore(runs_dir, s["run_id"])
    base = load_tensors(store.weights_path("init"))
    record = json.loads(store.analysis_path(ks.RECORD).read_text())
    mask, weights = store.load_level("ticket", 1)
    rows = mask[ks.EMBEDDING].all(dim=1)
    assert int(rows.sum()) == 4 and sorted(record["levels"][0]["ticket"]["tokens"]) == rows.nonzero().flatten().tolist()
    # the ticket is the top 4 of the stored statistic of the embedding fine-tune
    _, tuned = store.load_level("embedding", 0)
    stat, _ = ks.ks_statistics(base[ks.EMBEDDING], tuned[ks.EMBEDDING])
    specials = ks.special_ids("bert-tiny")
    stat[specials] = -1
    assert stat[rows.numpy()].min() >= stat[~rows.numpy()].max()
    assert np.allclose(stat[stat >= 0], np.array(record["statistic"])[stat >= 0], atol=1e-5)
    emb = weights[ks.EMBEDDING]
    assert torch.equal(emb[~rows], base[ks.EMBEDDING][~rows])    # every other row bit-identical to the base
    assert not torch.equal(emb[rows], base[ks.EMBEDDING][rows])  # the selected rows did train
    for k, v in base.items():
        if k.startswith("bert.") and k != ks.EMBEDDING:
            assert torch.equal(weights[k], v), k         # the rest of the encoder is frozen
    assert torch.equal(tuned[ks.EMBEDDING][specials], base[ks.EMBEDDING][specials])  # special tokens frozen
    _, head = store.load_level("head-only", 0)  # the recovery share's zero: no row re-tuned at all
    assert torch.equal(head[ks.EMBEDDING], base[ks.EMBEDDING])
    assert record["levels"][0]["ticket"]["recovered"] is None or isinstance(record["levels"][0]["ticket"]["recovered"], float)
    from explorer.foundation_ii import EmbeddingTicketsPanel  # the app's view reads the stored record
    panel = EmbeddingTicketsPanel(str(runs_dir))
    assert panel.run.options == [s["run_id"]] and "Selected at the largest K" in panel.text.object
    import holoviews as hv  # per-K curves in panes of their own: as one hv.Layout they drew as empty axes in the app
    assert not any(isinstance(p.object, hv.Layout) for p in (panel.tokens_pane, panel.precision_pane,
                                                            panel.recovery_pane))
    known = set(record["known"])
    assert record["levels"][0]["ticket"]["hits"] == len(known & set(record["levels"][0]["ticket"]["tokens"]))


def test_progress_counts_the_baselines(runs_dir):
    events = []
    engine.run(ks_cfg(**{"prune.ks_baselines": True, "prune.ks_top_k": (2, 3), "train.epochs": 1}),
               runs_dir=runs_dir, on_event=events.append)
    assert_progress_reaches_total(events)


@pytest.mark.parametrize("change, field", [({"prune.ks_top_k": (10 ** 6,)}, "prune.ks_top_k"),
                                           ({"train.weight_decay": 0.01}, "train.weight_decay"),
                                           ({"prune.ks_alpha": 1.5}, "prune.ks_alpha")])
def test_bad_input_is_a_one_line_error(runs_dir, change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        engine.run(ks_cfg(**change), runs_dir=runs_dir)
    assert "\n" not in str(e.value)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
