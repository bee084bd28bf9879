"""`--batched auto`: a level's ticket and its controls train as one batched computation (engine.batched) and
end, are stored and are reported as when trained one after another (`--batched off`), to float rounding."""
import json

import pytest
import torch

import engine
from engine import batched
from engine import events as ev
from engine.config import DataConfig, ModelConfig
from engine.data import load
from engine.models import build
from engine.store import RunStore

from conftest import tiny

# late rewinding: the ticket and the random control start at step 5, reinit at 0 (two start groups in a batch)
CONTROLS = {"prune.controls": ("reinit", "random", "shuffle"), "prune.rewind": "iter:5"}
VARIANTS = ("ticket", "reinit", "random", "shuffle")


@pytest.fixture
def spy(monkeypatch):
    """How many members each train_batched call trained."""
    calls = []
    real = batched.train_batched

    def wrapped(model, data, cfg, members, **kw):
        calls.append(len(members))
        return real(model, data, cfg, members, **kw)
    monkeypatch.setattr(batched, "train_batched", wrapped)
    return calls


def _same_run(a: RunStore, b: RunStore, levels=(1, 2)):
    """Two stores of one config: identical masks, weights and records to float rounding, the same metrics rows."""
    sa, sb = a.summary(), b.summary()
    for key in ("dense", "levels", "controls"):
        _close_rows(sa[key], sb[key])
    for variant in ("ticket", *sa["controls"]):
        for level in levels:
            (ma, wa), (mb, wb) = a.load_level(variant, level), b.load_level(variant, level)
            assert ma.keys() == mb.keys() and all(torch.equal(ma[n], mb[n]) for n in ma), (variant, level)
            assert list(wa) == list(wb)
            for n in wa:
                torch.testing.assert_close(wa[n], wb[n], atol=2e-5, rtol=1e-4, msg=f"{variant} {level} {n}")
            for n, keep in ma.items():  # pruned entries exactly zero
                assert (wa[n][~keep] == 0).all() and (wb[n][~keep] == 0).all()

    def rows(store):
        return [(r["type"], r["level"], r["variant"], r.get("iteration")) for r in store.metrics()
                if r["type"] in ("eval", "level")]
    assert rows(a) == rows(b)  # the same rows in the same order: stored runs read the same either way


def _close_rows(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            if "seconds" not in k:  # timings differ run to run
                _close_rows(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close_rows(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)  # accuracies: the same examples right (no tie flips here)
    else:
        assert a == b


def test_a_level_and_its_controls_train_batched_and_end_as_one_by_one(tmp_path, spy):
    cfg = tiny(**CONTROLS)
    seen = []
    auto = engine.run(cfg, on_event=seen.append, runs_dir=tmp_path / "auto")
    assert spy == [4, 4]  # each level: the ticket and its three controls as one computation
    off = engine.run(cfg.replace(**{"train.batched": "off"}), runs_dir=tmp_path / "off")
    assert spy == [4, 4] and off["run_id"] == auto["run_id"]  # off: none; batched is not part of the run id
    _same_run(RunStore(tmp_path / "auto", auto["run_id"]), RunStore(tmp_path / "off", off["run_id"]))
    # events in one-by-one order: each variant started, evaluated and done before the next one starts
    order = [(e.kind, e.level, e.variant) for e in seen if isinstance(e, (ev.TrainingStarted, ev.LevelDone))]
    assert order == [(k, lv, v) for lv in (0, 1, 2) for v in (VARIANTS if lv else ("ticket",))
                     for k in ("TrainingStarted", "LevelDone")]
    stored = json.loads((tmp_path / "auto" / auto["run_id"] / "config.json").read_text())
    assert stored["train"]["batched"] == "auto"


def test_a_half_done_level_resumes_batched_and_matches_a_clean_run(tmp_path, spy):
    cfg = tiny(**CONTROLS, **{"prune.levels": 1})

    class Crash(Exception):
        pass

    def crash(e):  # one by one: the ticket and reinit of level 1 stored, then a crash
        if isinstance(e, ev.TrainingStarted) and e.level == 1 and e.variant == "random":
            raise Crash()
    with pytest.raises(Crash):
        engine.run(cfg.replace(**{"train.batched": "off"}), on_event=crash, runs_dir=tmp_path / "half")
    store = RunStore(tmp_path / "half", cfg.run_id)
    assert [v for v in VARIANTS if store.level_record(v, 1)] == ["ticket", "reinit"]
    ticket = (tmp_path / "half" / cfg.run_id / "levels" / "ticket" / "001" / "weights.safetensors").read_bytes()
    seen = []
    engine.run(cfg, on_event=seen.append, runs_dir=tmp_path / "half")  # auto
    assert spy == [2]  # the two controls left, batched
    reused = [e.variant for e in seen if isinstance(e, ev.LevelDone) and e.reused]
    assert reused == ["ticket", "ticket", "reinit"]  # the dense net, then level 1's stored ones, first
    assert (tmp_path / "half" / cfg.run_id / "levels" / "ticket" / "001" / "weights.safetensors").read_bytes() == ticket
    clean = engine.run(cfg.replace(**{"train.batched": "off"}), runs_dir=tmp_path / "clean")
    _same_run(store, RunStore(tmp_path / "clean", clean["run_id"]), levels=(1,))


def test_a_crash_inside_a_batched_level_keeps_the_level_out_and_resumes(tmp_path, spy):
    cfg = tiny(**CONTROLS, **{"prune.levels": 1})

    class Crash(Exception):
        pass

    def crash(e):
        if isinstance(e, ev.Evaluated) and e.level == 1:
            raise Crash()
    with pytest.raises(Crash):
        engine.run(cfg, on_event=crash, runs_dir=tmp_path / "runs")
    store = RunStore(tmp_path / "runs", cfg.run_id)
    assert not any(store.level_record(v, 1) for v in VARIANTS)  # nothing half-written
    summary = engine.run(cfg, runs_dir=tmp_path / "runs")
    assert summary["status"] == "completed" and spy == [4, 4]
    for v in VARIANTS:
        assert store.level_record(v, 1) is not None


def test_methods_that_change_the_mask_while_training_fall_back_to_one_by_one(tmp_path, spy):
    summary = engine.run(tiny(**{"prune.method": "set", "prune.density": 0.5, "prune.controls": ("reinit", "random")}),
                         runs_dir=tmp_path)
    assert summary["status"] == "completed" and spy == []


def test_auto_batches_only_what_is_supported_and_measured_faster():
    data = load(DataConfig(), torch.device("cpu"))

    def net(**kw):
        return build(ModelConfig(**kw), data.input_shape, data.num_classes, 0)
    assert batched.auto_reason(net(model="lenet300"), data) is None
    assert batched.auto_reason(net(model="mlp", hidden=(16,)), data) is None
    assert "Linear" in batched.auto_reason(net(model="conv2", width=0.25), data)  # CPU: vmap measured ~1x
    assert "Bayesian" in batched.auto_reason(net(model="mlp", hidden=(8,), bayesian=True), data)


def test_a_convolutional_run_on_cpu_trains_one_by_one_with_auto(tmp_path, spy):
    summary = engine.run(tiny(**{"model.model": "conv2", "model.width": 0.125, "train.epochs": 1,
                                 "prune.levels": 1, "prune.controls": ("reinit", "random")}), runs_dir=tmp_path)
    assert summary["status"] == "completed" and spy == []


def test_batched_is_a_flag_and_a_config_field_with_one_line_errors():
    from engine.cli import build_parser
    from engine.errors import ConfigError

    assert engine.RunConfig().train.batched == "auto"
    with pytest.raises(ConfigError, match="train.batched.*auto, off"):
        engine.RunConfig().replace(**{"train.batched": "yes"})
    args = build_parser().parse_args(["run", "--batched", "off"])
    assert getattr(args, "train.batched") == "off"


def test_amp_runs_train_one_by_one_with_auto(tmp_path, spy):
    summary = engine.run(tiny(**{"train.amp": "bf16", "train.epochs": 1, "prune.levels": 1,
                                 "prune.controls": ("reinit", "random")}), runs_dir=tmp_path)
    assert summary["status"] == "completed" and spy == []


# ---------------------------------------------------------------- lottery compare: a cell's seeds side by side
def _cell_base(batched_mode):
    return tiny(**{"train.epochs": 1, "train.eval_every": 5, "prune.levels": 1, "prune.controls": ("reinit", "random"),
                   "train.batched": batched_mode})


def test_the_seeds_of_a_leaderboard_cell_train_batched_and_match_one_by_one(tmp_path, spy):
    from engine.compare import compare

    auto = compare(_cell_base("auto"), ["imp", "snip"], [0.5], 3, runs_dir=tmp_path / "auto")
    # imp: the 3 dense nets, then each level's 3 tickets + 6 controls; snip: its dense nets, then its level
    assert spy[0] == 3 and set(spy[1:]) == {9, 3} and spy[-1] == 9
    batches = list(spy)
    off = compare(_cell_base("off"), ["imp", "snip"], [0.5], 3, runs_dir=tmp_path / "off")
    assert spy == batches and auto["status"] == off["status"] == "completed"
    _close_rows(auto["rows"], off["rows"])
    for run_id in auto["rows"][0]["runs"]:
        _same_run(RunStore(tmp_path / "auto", run_id), RunStore(tmp_path / "off", run_id), levels=(1,))


def test_a_cancelled_cell_stops_every_seed_and_keeps_what_is_stored(tmp_path):
    import threading

    from engine.compare import compare

    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ev.Evaluated) and e.level == 1:
            cancel.set()
    result = compare(_cell_base("auto"), ["snip"], [0.5], 2, runs_dir=tmp_path, on_event=on_event, cancel=cancel)
    assert result["status"] == "cancelled"
    for store in (RunStore(tmp_path, p.name) for p in tmp_path.iterdir()):
        assert store.summary()["status"] == "cancelled"
        assert store.level_record("ticket", 0) is not None and store.level_record("ticket", 1) is None
    cancel.clear()
    assert compare(_cell_base("auto"), ["snip"], [0.5], 2, runs_dir=tmp_path)["status"] == "completed"


def test_a_failing_seed_fails_the_cell_without_hanging(tmp_path):
    from engine.compare import compare

    class Boom(Exception):
        pass

    def on_event(e):  # one seed's run fails at its first evaluation of level 1; the other must not wait forever
        if isinstance(e, ev.Evaluated) and e.level == 1 and e.run_id.endswith(seed1):
            raise Boom()
    from engine.compare import _config  # (compare's config of the run: snip's without the --levels it never reads)

    seed1 = _config(_cell_base("auto"), "snip", 1, 0.5, None).run_id[-10:]
    with pytest.raises(Boom):
        compare(_cell_base("auto"), ["snip"], [0.5], 2, runs_dir=tmp_path, on_event=on_event)
