"""Paths stay inside the runs dir: run ids are validated by one function (CLI, API, app), every path the store
writes or deletes is checked to lie inside it, and the app deletes the folder it listed."""
import json
import os

import pytest

import engine
from engine.cli import main
from engine.errors import ConfigError
from engine.store import RunStore, list_runs, validate_run_id

from conftest import tiny

BAD_IDS = ["../victim", "..", ".", "", "/etc", "/tmp/x", "a/b", "a\\b", ".hidden", "x\x00y", "-rf", "a" * 300,
           "run id", "~root"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A runs dir with one tiny completed run, and a victim folder beside it (outside the runs dir)."""
    base = tmp_path_factory.mktemp("paths")
    runs = base / "runs"
    summary = engine.run(tiny(**{"prune.levels": 1}), runs_dir=runs)
    victim = base / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("{}")
    (victim / "keep.txt").write_text("precious")
    return runs, summary["run_id"], victim


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("bad", BAD_IDS)
def test_one_function_refuses_every_id_that_is_not_a_plain_name(bad):
    with pytest.raises(ConfigError, match="RUN_ID"):
        validate_run_id(bad)
    with pytest.raises(ConfigError, match="RUN_ID"):
        RunStore("runs", bad)


@pytest.mark.parametrize("bad", [None, 42, b"imp", ["imp"]])
def test_ids_that_are_not_strings_are_refused(bad):
    with pytest.raises(ConfigError, match="RUN_ID"):
        validate_run_id(bad)


def test_real_ids_pass():
    assert validate_run_id(tiny().run_id) == tiny().run_id
    assert validate_run_id("imp-lenet300-digits-44136fa355-custom1a2b3c4d")
    assert validate_run_id("oneshot-conv2-fashionmnist-0123456789")


@pytest.mark.parametrize("command", [
    ["show", "{bad}"], ["show", "{bad}", "--json"], ["export", "{bad}", "--out", "{out}"],
    ["analyze", "{bad}", "persistence"], ["analyze", "{bad}", "sanity"], ["probe", "--run", "{bad}"],
])
@pytest.mark.parametrize("bad", ["../victim", "{abs}"])
def test_cli_refuses_ids_outside_the_runs_dir_before_any_work(stored, tmp_path, capsys, command, bad):
    runs, _, victim = stored
    before = _tree(victim)
    bad = bad.format(abs=str(victim))
    args = [a.format(bad=bad, out=tmp_path / "t.safetensors") for a in command]
    assert main([*args, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "RUN_ID" in err and "\n" not in err and "unexpected" not in err
    assert _tree(victim) == before  # nothing written beside the runs dir (no analyses/ folder)
    assert not (tmp_path / "t.safetensors").exists()


def test_report_refuses_ids_outside_the_runs_dir(stored, tmp_path, capsys):
    from explorer.cli import main as lottery

    runs, _, victim = stored
    assert lottery(["report", "../victim", "--html", str(tmp_path / "r.html"), "--runs-dir", str(runs)]) == 2
    assert "RUN_ID" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_the_python_api_refuses_them_too(stored):
    runs, _, _ = stored
    for call in (lambda: engine.analysis.analyze("persistence", runs, "../victim"),
                 lambda: engine.analysis.analyze("sanity", runs, "../victim"),
                 lambda: engine.analysis.StoredRun(runs, "/abs/victim")):
        with pytest.raises(ConfigError, match="RUN_ID"):
            call()


def test_store_paths_are_checked_to_lie_inside_the_run(stored):
    runs, run_id, _ = stored
    store = RunStore(runs, run_id)
    assert store.path("analyses", "barrier.json") == store.dir / "analyses" / "barrier.json"
    for parts in (("..", "x.json"), ("analyses", "../../x.json"), ("/etc/passwd",), ("levels", "")):
        with pytest.raises(ConfigError):
            store.path(*parts)
    with pytest.raises(ConfigError):
        store.weights_path("../init")
    with pytest.raises(ConfigError):
        store.level_dir("../ticket", 0)


def test_a_run_folder_that_links_outside_is_not_followed(tmp_path, stored):
    _, _, victim = stored
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "imp-lenet300-digits-0000000000").symlink_to(victim, target_is_directory=True)
    store = RunStore(runs, "imp-lenet300-digits-0000000000")
    with pytest.raises(engine.LotteryError, match="outside"):
        store.delete()
    with pytest.raises(engine.LotteryError, match="outside"):
        store.path("summary.json")
    assert (victim / "keep.txt").read_text() == "precious"


# ---------------------------------------------------------------- the app deletes what it listed
def _forged_run(runs, victim_name="../victim"):
    """A run folder whose summary.json claims another run id (the attack the issue describes)."""
    d = runs / "imp-lenet300-digits-f0f0f0f0f0"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(tiny().to_dict()))
    (d / "summary.json").write_text(json.dumps({"run_id": victim_name, "status": "completed", "method": "imp",
                                                "model": "lenet300", "dataset": "digits", "seed": 0,
                                                "dense": None, "levels": [], "controls": {}}))
    return d


def test_listing_uses_the_folder_not_the_id_a_summary_claims(tmp_path):
    runs = tmp_path / "runs"
    folder = _forged_run(runs)
    [row] = list_runs(runs)
    assert row["run_id"] == folder.name
    assert row["status"] == "unreadable" and "summary.json" in row["error"]


def test_app_delete_removes_only_the_listed_folder_inside_the_runs_dir(tmp_path):
    from explorer.browser import RunBrowser

    runs = tmp_path / "runs"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("{}")
    folder = _forged_run(runs)
    browser = RunBrowser(str(runs))
    assert list(browser.table.value["run_id"]) == [folder.name]
    browser.select([folder.name])
    assert browser.selected == [folder.name]
    browser.delete_selected()
    assert not folder.exists()
    assert (victim / "config.json").exists()


def test_app_refuses_to_delete_what_it_did_not_list(tmp_path):
    from explorer.browser import RunBrowser

    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "config.json").write_text("{}")
    (runs / "notarun").mkdir()  # no config.json: not a run folder
    browser = RunBrowser(str(runs))
    for forged in ("../victim", "notarun", str(tmp_path / "victim")):
        browser.selected = [forged]  # as if a client forged the selection
        browser.delete_selected()
        assert "refused" in browser.notice.object
    assert (tmp_path / "victim" / "config.json").exists() and (runs / "notarun").exists()


def test_store_delete_needs_a_run_folder(tmp_path):
    runs = tmp_path / "runs"
    (runs / "imp-x").mkdir(parents=True)
    (runs / "imp-x" / "data.bin").write_text("not a run")
    with pytest.raises(engine.LotteryError, match="not a run"):
        RunStore(runs, "imp-x").delete()
    assert (runs / "imp-x" / "data.bin").exists()


def test_analyses_are_written_inside_the_run_dir(stored):
    runs, run_id, _ = stored
    store = RunStore(runs, run_id)
    path = store.analysis_path("persistence")
    assert os.path.commonpath([path.resolve(), store.dir.resolve()]) == str(store.dir.resolve())
    with pytest.raises(ConfigError):
        store.analysis_path("../../escape")
    (store.dir / "analyses").mkdir(exist_ok=True)
    (store.dir / "analyses" / "linked.json").symlink_to("/etc/hostname")
    with pytest.raises(engine.LotteryError, match="outside"):
        store.analysis_path("linked")
    (store.dir / "analyses" / "linked.json").unlink()


def test_export_writes_where_the_user_said(stored, tmp_path, capsys):
    runs, run_id, _ = stored
    out = tmp_path / "elsewhere" / "ticket.safetensors"
    assert main(["export", run_id, "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out
