"""Damaged or missing files of the run store, zoos and generations: one line naming the file and how to recover,
nothing else stored lost, and `list`/`show` never call something completed that cannot be used."""
import json
import shutil

import pytest

from engine.cli import main

from conftest import copy_of, stored_by_cli

TINY = ["--epochs", "2", "--levels", "2", "--controls", "reinit", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return stored_by_cli(tmp_path_factory.mktemp("store"), "run", *TINY)


@pytest.fixture
def copy(pristine, tmp_path):
    return copy_of(pristine, tmp_path / "runs")


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], err
    return lines[0]


def _list(runs, capsys):
    capsys.readouterr()
    assert main(["list", "--json", "--runs-dir", str(runs)]) == 0
    return {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}


def test_a_missing_level_weights_file_is_named_with_how_to_train_it_again(copy, capsys, tmp_path):
    runs, run_id = copy
    level = runs / run_id / "levels" / "ticket" / "001"
    (level / "weights.safetensors").unlink()
    listed = _list(runs, capsys)[run_id]
    assert listed["status"] != "completed" and "001/weights.safetensors is missing" in listed["error"], listed
    summary = (runs / run_id / "summary.json").read_bytes()
    for argv in (["show", run_id], ["export", run_id, "--level", "1", "--out", str(tmp_path / "t.safetensors")],
                 ["run", *TINY]):
        assert main([*argv, "--runs-dir", str(runs)]) == 1
        line = _one_line(capsys.readouterr().err)
        assert "001/weights.safetensors is missing" in line and "delete" in line and "lottery run" in line, line
    assert (runs / run_id / "summary.json").read_bytes() == summary  # the failed resume changed nothing
    # doing what the message says trains the damaged level and those after it again; dense is kept
    dense = (runs / run_id / "levels" / "ticket" / "000" / "weights.safetensors").read_bytes()
    for variant in ("ticket", "reinit"):
        for lv in ("001", "002"):
            shutil.rmtree(runs / run_id / "levels" / variant / lv, ignore_errors=True)
    assert main(["run", *TINY, "--runs-dir", str(runs)]) == 0
    assert _list(runs, capsys)[run_id]["status"] == "completed"
    assert (runs / run_id / "levels" / "ticket" / "000" / "weights.safetensors").read_bytes() == dense
    assert main(["export", run_id, "--out", str(tmp_path / "t.safetensors"), "--runs-dir", str(runs)]) == 0


def test_a_missing_control_mask_names_only_its_folder(copy, capsys):
    runs, run_id = copy
    (runs / run_id / "levels" / "reinit" / "002" / "mask.safetensors").unlink()
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "reinit/002/mask.safetensors is missing" in line and "levels after" not in line, line


ZOO = ["--model", "mlp", "--hidden", "16", "--members", "2", "--epochs", "1", "--batch-size", "200", "--quiet"]


@pytest.fixture(scope="module")
def zoo_pristine(tmp_path_factory, pristine):
    return stored_by_cli(tmp_path_factory.mktemp("zoo"), "zoo", *ZOO)


@pytest.fixture
def zoo_copy(zoo_pristine, tmp_path):
    return copy_of(zoo_pristine, tmp_path / "zruns")


@pytest.mark.parametrize("damage", ["weights gone", "members truncated"])
def test_a_zoo_missing_its_weights_or_members_is_not_called_completed(zoo_copy, capsys, damage):
    runs, zoo_id = zoo_copy
    if damage == "weights gone":
        (runs / zoo_id / "weights.safetensors").unlink()
        named = "weights.safetensors is missing"
    else:
        members = runs / zoo_id / "members.json"
        members.write_text(members.read_text()[:40])
        named = "members.json is damaged"
    listed = _list(runs, capsys)[zoo_id]
    assert listed["status"] != "completed" and named in listed["error"] and "lottery zoo" in listed["error"], listed
    assert main(["show", zoo_id, "--runs-dir", str(runs)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert named in line and "run the same `lottery zoo` command again" in line, line
    # doing so trains it again
    assert main(["zoo", *ZOO, "--runs-dir", str(runs)]) == 0
    assert _list(runs, capsys)[zoo_id]["status"] == "completed"
    assert main(["show", zoo_id, "--runs-dir", str(runs)]) == 0
    assert "dense zoo: 2/2" in capsys.readouterr().out


@pytest.mark.parametrize("module,function,argv", [
    ("engine.zoo", "train_zoo", ["zoo", "--model", "mlp", "--members", "2", "--json"]),
    ("engine.generate", "generate", ["generate", "some-zoo", "--json"])])
def test_zoo_and_generate_json_print_a_nan_as_null(monkeypatch, capsys, tmp_path, module, function, argv):
    """`lottery zoo --json` and `lottery generate --json` printed json.dumps' NaN, which no JSON reader accepts."""
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, function, lambda *a, **k: {"status": "completed", "loss": float("nan")})
    if function == "train_zoo":
        monkeypatch.setattr(mod, "zoo_config", lambda *a, **k: None)
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "completed", "loss": None}


def test_show_and_list_agree_on_a_damaged_config(copy, capsys):
    """list said unreadable while show printed the run as if nothing were wrong."""
    runs, run_id = copy
    (runs / run_id / "config.json").write_text('{"seed": 0, "trai')
    listed = _list(runs, capsys)[run_id]
    assert listed["status"] == "unreadable" and "config.json is damaged" in listed["error"]
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 1
    assert "config.json is damaged: not valid JSON" in _one_line(capsys.readouterr().err)
