"""A damaged store never harms a completed run: errors name the file and what is wrong, `list` and the app list
every readable run and mark the rest unreadable, show and list agree on status, temp files left by a crash
are cleaned, the summary follows every stored training, and data fingerprints refuse a changed data set."""
import json
import os
import shutil
import struct

import numpy as np
import pytest

import engine
from engine import events as ev
from engine.cli import main
from engine.store import RunStore, StoreDamaged, list_runs, load_tensors, read_json, read_objects

from conftest import copy_of, stored_by_cli, tiny

TINY = ["--epochs", "2", "--levels", "1", "--controls", "reinit", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A completed tiny run, copied by each test that damages it."""
    return stored_by_cli(tmp_path_factory.mktemp("store"), "run", *TINY)


@pytest.fixture
def copy(pristine, tmp_path):
    return copy_of(pristine, tmp_path / "runs")


def _snapshot(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], err
    return lines[0]


# ---------------------------------------------------------------- damaged files
@pytest.mark.parametrize("relpath,damage,what", [
    ("levels/ticket/001/weights.safetensors", "truncate", "truncated"),
    ("levels/ticket/001/mask.safetensors", "garbage", "safetensors"),
    ("levels/reinit/001/weights.safetensors", "truncate", "truncated"),
    ("init.safetensors", "truncate", "truncated"),
    ("levels/ticket/001/record.json", "badjson", "JSON"),
    ("levels/ticket/000/record.json", "list", "not a JSON object"),
    ("config.json", "badjson", "JSON"),
])
def test_resuming_a_damaged_completed_run_names_the_file_and_harms_nothing(copy, capsys, relpath, damage, what):
    runs, run_id = copy
    path = runs / run_id / relpath
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": b"\x00" * 7,
                      "badjson": b'{"level": 1, "dens', "list": b"[1, 2]"}[damage])
    before = _snapshot(runs / run_id)
    code = main(["run", *TINY, "--runs-dir", str(runs)])
    line = _one_line(capsys.readouterr().err)
    assert code in (1, 2)
    assert relpath.split("/")[-1] in line and str(run_id) in line and what in line, line
    assert _snapshot(runs / run_id) == before  # status stays completed, no traceback appended to metrics
    assert read_json(runs / run_id / "summary.json")["status"] == "completed"


def test_readers_raise_store_damaged_naming_the_file(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**6) + b"{")
    with pytest.raises(StoreDamaged, match=r"x\.safetensors"):
        load_tensors(bad)
    js = tmp_path / "y.json"
    js.write_text("{oops")
    with pytest.raises(StoreDamaged, match=r"y\.json.*JSON"):
        read_json(js)


def test_read_objects_leaves_out_missing_and_damaged_files_saying_why(tmp_path):
    for name, text in {"a": '{"x": 1}', "b": "{oops", "c": "[1]", "d": '{"y": 2}'}.items():
        (tmp_path / f"{name}.json").write_text(text)
    paths = {k: tmp_path / f"{k}.json" for k in ("d", "missing", "c", "b", "a")}
    damaged = {}
    assert list(read_objects(paths, damaged).items()) == [("d", {"y": 2}), ("a", {"x": 1})]  # in the order given
    assert list(damaged) == ["c", "b"] and "c.json" in damaged["c"] and "not a JSON object" in damaged["c"]
    assert "b.json" in damaged["b"] and "JSON" in damaged["b"]
    assert read_objects(paths) == {"d": {"y": 2}, "a": {"x": 1}}  # (without `damaged`: only left out)


def test_show_of_a_damaged_summary_is_one_line(copy, capsys):
    runs, run_id = copy
    (runs / run_id / "summary.json").write_text("42")
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "summary.json" in line and "42" in line


def test_a_damaged_analysis_hides_neither_the_run_nor_its_other_analyses(copy, capsys):
    runs, run_id = copy
    store = RunStore(runs, run_id)
    store.save_analysis("notes", {"analysis": "notes"})  # (a record no analysis formats: "notes: stored")
    store.analysis_path("barrier").write_text('{"broken')
    damaged = {}
    assert list(store.analyses(damaged)) == ["notes"] and "barrier.json" in damaged["barrier"]
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "notes: stored" in out and "analysis barrier: unreadable" in out and f"lottery analyze {run_id} barrier" in out
    assert main(["show", run_id, "--runs-dir", str(runs), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert list(shown["analyses"]) == ["notes"] and "JSON" in shown["damaged_analyses"]["barrier"]


# ---------------------------------------------------------------- listing around damage
def _two_runs(copy):
    runs, good = copy
    bad = "imp-lenet300-digits-badbadbad0"
    shutil.copytree(runs / good, runs / bad)
    return runs, good, bad


@pytest.mark.parametrize("damage,reason", [
    (lambda d: (d / "summary.json").write_text("42"), "summary.json"),
    (lambda d: (d / "summary.json").write_text("{not json"), "summary.json"),
    (lambda d: (d / "summary.json").write_text('{"status": "completed", "levels": 3}'), "summary.json"),
    (lambda d: (d / "config.json").write_text("[]"), "config.json"),
    (lambda d: (d / "summary.json").chmod(0), "summary.json"),
])
def test_list_shows_every_readable_run_and_marks_the_rest_unreadable(copy, capsys, damage, reason):
    runs, good, bad = _two_runs(copy)
    damage(runs / bad)
    rows = {r["run_id"]: r for r in list_runs(runs)}
    if os.geteuid() == 0 and rows[bad]["status"] != "unreadable":
        pytest.skip("root reads files whatever their permissions")
    assert rows[good]["status"] == "completed"
    assert rows[bad]["status"] == "unreadable" and reason in rows[bad]["error"]
    assert main(["list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert good in out and bad in out and "unreadable" in out and reason in out
    assert main(["list", "--runs-dir", str(runs), "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[bad]["status"] == "unreadable" and reason in listed[bad]["error"]


def test_the_app_lists_every_run_around_a_damaged_one(copy):
    from explorer.app import ExplorerApp

    runs, good, bad = _two_runs(copy)
    (runs / bad / "summary.json").write_text("42")
    app = ExplorerApp(runs_dir=str(runs))
    table = app.browser.table.value.set_index("run_id")
    assert table.loc[good, "status"] == "completed" and table.loc[bad, "status"] == "unreadable"
    from explorer.tabs import TABS

    for tab in TABS:  # every view draws with the unreadable run among the summaries
        app.open(tab.title)
    app.choice.run.value = bad
    for title in ("Masks", "Analyses", "Accuracy"):
        app.open(title)


def test_show_and_list_agree_that_a_killed_run_is_interrupted(copy, capsys):
    runs, run_id = copy
    path = runs / run_id / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    (runs / run_id / ".lock").write_text("999999999")  # the process that held it is gone
    assert main(["show", run_id, "--runs-dir", str(runs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "interrupted"
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 0
    assert "interrupted" in capsys.readouterr().out.splitlines()[0]
    assert [r["status"] for r in list_runs(runs)] == ["interrupted"]


def test_a_live_run_is_running_in_show_and_list(copy, capsys):
    runs, run_id = copy
    path = runs / run_id / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    (runs / run_id / ".lock").write_text(str(os.getpid()))
    assert main(["show", run_id, "--runs-dir", str(runs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert [r["status"] for r in list_runs(runs)] == ["running"]


def test_leftover_temp_files_are_cleaned_on_the_next_open(copy):
    runs, run_id = copy
    d = runs / run_id
    leftovers = [d / ".summary.json.abc123.tmp", d / "levels" / "ticket" / "001" / ".weights.safetensors.x.tmp",
                 d / ".lock.zz9"]
    for p in leftovers:
        p.write_text("half")
    before = {k: v for k, v in _snapshot(d).items() if not k.split("/")[-1].startswith(".")}
    engine.run(engine.RunConfig.from_dict(read_json(d / "config.json")), runs_dir=runs)
    assert not any(p.exists() for p in leftovers)
    after = {k: v for k, v in _snapshot(d).items() if not k.split("/")[-1].startswith(".")}
    assert set(after) == set(before)


def test_temp_files_of_live_writers_are_left_alone(copy):
    runs, run_id = copy
    d = runs / run_id
    live = d / "analyses" / f".barrier.json.{os.getpid()}.abcd1234.tmp"  # an analysis this process is writing
    live.parent.mkdir(exist_ok=True)
    live.write_text("being written")
    dead = d / ".summary.json.999999999.abcd1234.tmp"  # its writer is gone
    dead.write_text("abandoned")
    assert list_runs(runs)[0]["status"] == "completed"
    assert live.exists() and dead.exists()  # listing and reading change nothing
    engine.run(engine.RunConfig.from_dict(read_json(d / "config.json")), runs_dir=runs)
    assert live.exists() and not dead.exists()


# ---------------------------------------------------------------- the summary follows the store
def test_summary_is_rewritten_after_every_stored_training(tmp_path):
    runs = tmp_path / "runs"
    seen = []

    def on_event(e):
        if isinstance(e, ev.LevelDone) and not e.reused:
            s = read_json(runs / e.run_id / "summary.json")
            rows = [s["dense"]] + s["levels"] if e.variant == "ticket" else s["controls"][e.variant]
            seen.append((e.variant, e.level, any(r and r["level"] == e.level for r in rows)))

    engine.run(tiny(), on_event=on_event, runs_dir=runs)
    assert len(seen) == 5 and all(ok for *_, ok in seen), seen


def test_a_summary_lagging_behind_the_store_is_caught_up_on_resume(copy):
    runs, run_id = copy
    d = runs / run_id
    s = read_json(d / "summary.json")
    s["status"], s["levels"] = "running", []  # killed between storing level 1 and rewriting the summary
    (d / "summary.json").write_text(json.dumps(s))
    summary = engine.run(engine.RunConfig.from_dict(read_json(d / "config.json")), runs_dir=runs)
    assert summary["status"] == "completed" and len(summary["levels"]) == 1
    assert read_json(d / "summary.json")["levels"] == summary["levels"]


def test_a_failing_resume_of_an_unfinished_run_is_still_recorded(copy, capsys):
    runs, run_id = copy
    d = runs / run_id
    shutil.rmtree(d / "levels" / "reinit")  # unfinished: the control of level 1 is still to train
    s = read_json(d / "summary.json")
    (d / "summary.json").write_text(json.dumps({**s, "status": "running"}))
    blob = (d / "levels/ticket/001/weights.safetensors").read_bytes()
    (d / "levels/ticket/001/weights.safetensors").write_bytes(blob[:100])
    assert main(["run", *TINY, "--runs-dir", str(runs)]) == 1
    assert "weights.safetensors" in _one_line(capsys.readouterr().err)
    assert read_json(d / "summary.json")["status"] == "failed"


# ---------------------------------------------------------------- data fingerprints
def _npz(path, seed=0, **extra):
    rng = np.random.default_rng(seed)
    arrays = dict(x_train=rng.normal(size=(60, 12)).astype(np.float32), y_train=rng.integers(0, 3, 60),
                  x_test=rng.normal(size=(20, 12)).astype(np.float32), y_test=rng.integers(0, 3, 20))
    (np.savez_compressed if extra.get("compressed") else np.savez)(path, **arrays)


def test_resume_against_changed_npz_contents_is_refused(tmp_path, capsys):
    data = tmp_path / "mine.npz"
    runs = tmp_path / "runs"
    _npz(data, seed=0)
    args = ["run", *TINY, "--dataset", f"npz:{data}", "--batch-size", "16", "--runs-dir", str(runs)]
    assert main(args) == 0
    capsys.readouterr()
    [run_id] = os.listdir(runs)
    stored = read_json(runs / run_id / "data.json")
    assert stored["dataset"] == f"npz:{data}" and len(stored["sha256"]) == 64

    _npz(data, seed=0, compressed=True)  # same arrays, another file: the same data set
    assert main(args) == 0
    capsys.readouterr()
    before = _snapshot(runs / run_id)

    _npz(data, seed=1)  # new contents under the same path
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"npz:{data}" in line and "changed" in line
    assert main(["analyze", run_id, "barrier", "--runs-dir", str(runs)]) == 2  # analyses read the same data
    assert "changed" in _one_line(capsys.readouterr().err)
    assert _snapshot(runs / run_id) == before


def test_fingerprints_cover_torchvision_files(tmp_path):
    from engine.data import load
    from test_data import _idx

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 10)):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = engine.config.DataConfig(dataset="mnist", data_dir=str(tmp_path))
    first = load(cfg).fingerprint
    assert first == load(cfg).fingerprint and len(first) == 64
    _idx(raw / "t10k-labels-idx1-ubyte", (np.arange(10) + 1) % 10)
    assert load(cfg).fingerprint != first
