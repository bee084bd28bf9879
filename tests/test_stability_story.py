"""The stability story (issue 17): batched instability, the BatchNorm subset, the stability-story preset."""
import json

import pytest
import torch

import engine
from engine import data as D
from engine.analysis import StoredRun, instability
from engine.analysis.interpolation import bn_subset

from conftest import tiny

# What instability-L{level}.json held before the batched path: the explorer reads these keys.
STORED_KEYS = {"analysis", "run_id", "level", "density", "rewind_points", "barriers", "loss_barriers",
               "endpoint_test_accuracy", "curves", "stable_threshold", "points", "iterations", "seconds",
               "name"}  # (name: added by the store)


@pytest.fixture(scope="module", params=["lenet300", "resnet20"])
def stored(request, tmp_path_factory):
    """A tiny run with a late-rewinding point (stored rewind weights) and one ticket level."""
    changes = {"prune.levels": 1, "prune.controls": (), "prune.rewind": "iter:6", "train.epochs": 2}
    if request.param == "resnet20":  # BatchNorm: per-member statistics in the batched trainer, BN subset
        changes.update({"model.model": "resnet20", "model.width": 0.25, "train.epochs": 1, "train.batch_size": 128})
    runs_dir = tmp_path_factory.mktemp("runs")
    summary = engine.run(tiny(**changes), runs_dir=runs_dir)
    return runs_dir, summary["run_id"], request.param


def test_batched_instability_matches_one_copy_at_a_time(stored):
    runs_dir, run_id, model = stored
    kw = dict(rewind_points=[0, 3, 6], level=1, points=5, bn_examples=300)
    ref = instability(run_id, runs_dir, batched=False, **kw)
    got = instability(run_id, runs_dir, batched=True, **kw)
    assert got["rewind_points"] == ref["rewind_points"] == [0, 3, 6]
    # Barriers are differences of accuracies on a few hundred examples: float rounding of the weights may
    # flip at most a prediction or two at one alpha.
    tol = 2.5 / len(StoredRun(runs_dir, run_id).data.test)
    for k, b_ref, b_got in zip(ref["rewind_points"], ref["barriers"], got["barriers"]):
        assert b_got == pytest.approx(b_ref, abs=tol), f"k={k} ({model})"
    for k in ref["curves"]:
        for p, q in zip(ref["curves"][k], got["curves"][k]):
            assert q["loss"] == pytest.approx(p["loss"], rel=1e-3, abs=1e-4), f"k={k} alpha={p['alpha']} ({model})"
    for a, b in zip(ref["endpoint_test_accuracy"], got["endpoint_test_accuracy"]):
        assert a == pytest.approx(b, abs=tol)


def test_stored_format_is_unchanged(stored):
    runs_dir, run_id, model = stored
    result = instability(run_id, runs_dir, rewind_points=[0, 6], level=0, points=3, bn_examples=200)
    extra = {"bn_examples"} if model == "resnet20" else set()
    # (method: added since, so that the output of a run whose tickets never train from W_k can say so)
    assert set(result) == STORED_KEYS | {"method"} | extra
    path = StoredRun(runs_dir, run_id).store.dir / "analyses" / "instability-L0.json"
    assert json.loads(path.read_text()) == result
    if model == "resnet20":
        assert result["bn_examples"] == 200


def test_bn_subset_is_fixed_and_deterministic():
    train = D.load(tiny().data).train
    a, b = bn_subset(train, 100, seed=0), bn_subset(train, 100, seed=0)
    assert len(a) == 100 and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = bn_subset(train, 100, seed=1)
    assert not torch.equal(a.y, other.y) or not torch.equal(a.x, other.x)  # its own stream of the run seed
    rows = {tuple(r.tolist()) for r in train.x.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in a.x.flatten(1))  # a subset of the training split
    assert bn_subset(train, len(train) + 5, seed=0) is train  # no larger than the split: all of it


def test_the_stability_story_preset_exists_validates_and_yields_to_flags(tmp_path, capsys):
    from engine.cli import main
    from engine.presets import preset_config

    cfg = preset_config("stability-story")
    assert (cfg.data.dataset, cfg.model.model, cfg.model.width, cfg.train.optimizer, cfg.train.lr,
            cfg.train.batch_size, cfg.prune.rewind) == ("digits", "resnet20", 0.5, "sgd", 0.1, 32, "iter:20")
    assert preset_config("stability-story", seed=3).seed == 3
    assert "--preset" in _run_help() and "stability-story" in _run_help()  # listed by `lottery run --help`
    # flags beside --preset override it; an unknown preset is a one-line error naming --preset
    assert main(["run", "--preset", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "--preset" in capsys.readouterr().err
    with pytest.raises(engine.ConfigError, match="train.lr"):
        preset_config("stability-story", **{"train.lr": -1})


def _run_help() -> str:
    from engine.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["run"].format_help()


def test_digits28_is_built_offline_and_reproducibly():
    a = D.load(engine.DataConfig(dataset="digits28"))
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert len(a.train) + len(a.val) == 4 * 1437 and len(a.test) == 360  # test: the digits test images only
    assert D.load(engine.DataConfig(dataset="digits28")).fingerprint == a.fingerprint


# A story small enough for a test: the preset with a tiny MLP, one epoch, two levels
STORY = {"model.model": "lenet300", "data.dataset": "digits", "train.epochs": 1, "train.batch_size": 128,
         "prune.levels": 2, "prune.rewind": "iter:1", "prune.controls": ("reinit",), "device": "cpu"}


@pytest.fixture(scope="module")
def story_store(tmp_path_factory):
    from engine.analysis import story

    runs_dir = tmp_path_factory.mktemp("story")
    ids = story.run_story(runs_dir, "stability-story", seeds=(0,), points=5, **STORY)
    return runs_dir, ids


def test_the_story_runs_three_rewinds_and_measures_each_ticket_at_its_own_rewind_point(story_store):
    from engine.analysis import story

    runs_dir, ids = story_store
    assert [_config(runs_dir, i).prune.rewind for i in ids] == ["init", "iter:1", "lr"]
    groups = story.story_groups(runs_dir)  # one story: the three runs differ only in their rewind point
    assert len(groups) == 1 and sorted(next(iter(groups.values()))) == sorted(ids)
    dense = story.dense_instability(runs_dir, ids)
    assert len(dense) == 1 and dense[0]["rewind_points"] == [0, 1, 5]  # 0, K, 5K of the late-rewinding run
    rows = story.story_rows(runs_dir, ids)
    tickets = [r for r in rows if r["variant"] == "ticket"]
    assert {(r["rewind"], r["level"]) for r in tickets} == {(w, v) for w in ("init", "iter:1", "lr") for v in (1, 2)}
    for r in tickets:  # init: k = 0, iter:1: k = 1, lr: no W_k, so no barrier (never invented)
        assert (r["barrier"] is None) == (r["rewind"] == "lr")
        if r["barrier"] is not None:
            a = engine.RunStore(runs_dir, r["run_id"]).analyses()[f"instability-L{r['level']}"]
            assert a["rewind_points"] == [{"init": 0, "iter:1": 1}[r["rewind"]]] and a["barriers"][0] == r["barrier"]
    assert {r["variant"] for r in rows} == {"dense", "ticket", "reinit"}
    # a second call reuses what is stored: no analysis is recomputed
    before = {i: engine.RunStore(runs_dir, i).analyses() for i in ids}
    story.run_story(runs_dir, "stability-story", seeds=(0,), points=5, **STORY)
    assert {i: engine.RunStore(runs_dir, i).analyses() for i in ids} == before


def _config(runs_dir, run_id) -> engine.RunConfig:
    return engine.RunConfig.from_dict(engine.RunStore(runs_dir, run_id).config())


def test_the_stability_tab_draws_the_story_and_its_button_runs_the_preset(story_store, tmp_path):
    import holoviews as hv

    from explorer.stability import StabilityPanel
    from conftest import wait_until

    runs_dir, ids = story_store
    panel = StabilityPanel(runs_dir)
    assert len(panel.story.options) == 1
    for name, pane in panel.panes.items():  # every plot has data (an empty one is a lone hv.Text)
        texts = [e for e in pane.object.traverse(lambda x: x) if isinstance(e, hv.Text)]
        assert not texts, name
    fresh = StabilityPanel(tmp_path, overrides=STORY)
    assert fresh.story.options == []
    fresh.start()
    assert fresh.button.disabled
    wait_until(lambda: fresh.poll() or (fresh.job is None), timeout=600, what="the story to finish")
    assert fresh.job is None and "stored" in fresh.status.object
    assert len(fresh.story.options) == 1 and not fresh.button.disabled


def test_a_story_stopped_during_a_run_stops_there_and_keeps_what_is_stored(tmp_path):
    """runner.run returns a cancelled run's summary rather than raising: the story must not go on to its next
    run (which then had nothing to analyse, 'has no completed ticket level 0', and stored one more empty run)."""
    import threading

    from engine.analysis import story
    from engine.errors import RunCancelled
    from engine.events import Evaluated

    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, Evaluated):
            cancel.set()  # a Stop click during the first run's dense training

    with pytest.raises(RunCancelled, match="stopped"):
        story.run_story(tmp_path, "stability-story", seeds=(0,), points=5, on_event=on_event, cancel=cancel, **STORY)
    stored = engine.list_runs(tmp_path)
    assert [s["status"] for s in stored] == ["cancelled"]  # the first run, kept; no second run begun
