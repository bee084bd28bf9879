"""Bad input gets a clear one-line exit-2 error before any work: data, probe, analyze, compare, export, list,
report and serve flags; argparse abbreviations are off; Ctrl-C during start-up exits 130 without a traceback."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from explorer.cli import main as lottery

from conftest import stored_by_cli

TINY = ["--epochs", "2", "--levels", "1", "--controls", "reinit", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    return stored_by_cli(tmp_path_factory.mktemp("inputs"), "run", *TINY)


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())


def _exit(argv, capsys):
    """(exit code, the one error line) of `lottery ARGV` run in this process."""
    try:
        code = lottery(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "unexpected" not in lines[0] and "Traceback" not in captured.err
    assert "Lottery Ticket Explorer on" not in captured.err  # the serve banner never precedes an error
    return code, lines[0]


# ---------------------------------------------------------------- data
def test_a_huge_label_in_an_npz_is_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    y[5] = 10**9
    np.savez(path, x_train=rng.normal(size=(40, 4)).astype(np.float32), y_train=y,
             x_test=rng.normal(size=(10, 4)).astype(np.float32), y_test=rng.integers(0, 3, 10))
    code, line = _exit(["run", *TINY, "--dataset", f"npz:{path}", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "y_train" in line and "1000000000" in line
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


# ---------------------------------------------------------------- probe
@pytest.mark.parametrize("layer", ["9999999x9999999", "100000x100000", "0x5", "5x", "axb", "1x2x3", "-4x4"])
def test_probe_layer_sizes_are_bounded(layer, capsys):
    code, line = _exit(["probe", "--layer", layer, "--batch", "1", "--min-time", "0.01"], capsys)
    assert code == 2 and "--layer" in line


def test_probe_batch_is_bounded(capsys):
    code, line = _exit(["probe", "--layer", "8x8", "--batch", "100000000"], capsys)
    assert code == 2 and "--batch" in line


# ---------------------------------------------------------------- analyze
@pytest.mark.parametrize("args,field", [
    (["barrier", "--points", "0"], "points"), (["barrier", "--points", "-5"], "points"),
    (["barrier", "--points", "1"], "points"), (["barrier", "--points", "1000000"], "points"),
    (["earlybird-replay", "--eps", "-1"], "eps"), (["earlybird-replay", "--eps", "0"], "eps"),
    (["earlybird-replay", "--eps", "nan"], "eps"), (["earlybird-replay", "--eps", "2"], "eps"),
    (["earlybird-replay", "--density", "1.5"], "density"), (["earlybird-replay", "--density", "0"], "density"),
    (["barrier", "--level", "-1"], "level"),
    (["instability", "--rewind-points", "-3"], "rewind"),
])
def test_analyze_bounds_before_any_work(stored, capsys, args, field):
    runs, run_id = stored
    before = _tree(runs)
    code, line = _exit(["analyze", run_id, *args, "--runs-dir", str(runs)], capsys)
    assert code == 2 and field in line, line
    assert _tree(runs) == before


# ---------------------------------------------------------------- compare, export, list, report
@pytest.mark.parametrize("methods", [",", " , ", ""])
def test_compare_needs_methods(tmp_path, capsys, methods):
    code, line = _exit(["compare", "--methods", methods, "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "--methods" in line
    assert not (tmp_path / "runs").exists()


def test_compare_unknown_method_is_exit_2(tmp_path, capsys):
    code, line = _exit(["compare", "--methods", "imp,magic", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "magic" in line


def test_export_out_must_be_a_file(stored, tmp_path, capsys):
    runs, run_id = stored
    code, line = _exit(["export", run_id, "--out", str(tmp_path), "--runs-dir", str(runs)], capsys)
    assert code == 2 and "--out" in line and "directory" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _exit(["export", run_id, "--out", str(blocker / "t.safetensors"), "--runs-dir", str(runs)], capsys)
    assert code == 2 and "--out" in line


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["show", "x"], ["analyze", "x", "barrier"],
                                     ["run", *TINY]])
def test_a_runs_dir_that_is_a_file(tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _exit([*command, "--runs-dir", str(blocker)], capsys)
    assert code == 2 and "runs_dir" in line and str(blocker) in line
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("name", ["report.txt", "report", "dir"])
def test_report_html_must_be_an_html_file(stored, tmp_path, capsys, name):
    runs, run_id = stored
    (tmp_path / "dir").mkdir()
    code, line = _exit(["report", run_id, "--html", str(tmp_path / name), "--runs-dir", str(runs)], capsys)
    assert code == 2 and "--html" in line
    assert sorted(os.listdir(tmp_path)) == ["dir"] and not os.listdir(tmp_path / "dir")


def test_report_prints_the_path_it_wrote(stored, tmp_path, capsys):
    runs, run_id = stored
    target = tmp_path / "out" / "run.html"
    assert lottery(["report", run_id, "--html", str(target), "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    assert os.listdir(tmp_path / "out") == ["run.html"]


# ---------------------------------------------------------------- serve flags, before the banner
@pytest.mark.parametrize("args,field", [
    (["--port", "70000"], "--port"), (["--port", "-1"], "--port"), (["--port", "0"], "--port"),
    (["--port", "http"], "--port"), (["--torch-threads", "-3"], "--torch-threads"),
    (["--torch-threads", "100000"], "--torch-threads"), (["--address", "0.0.0.0"], "--address"),
    (["--allow-origin", "evil.example"], "--allow-origin"),
    (["--allow-remote", "--allow-origin", "http://x/y"], "--allow-origin"),
    (["--allow-remote", "--allow-origin", ""], "--allow-origin"),
])
def test_serve_flags_are_checked_before_the_banner(tmp_path, capsys, args, field):
    code, line = _exit(["serve", *args, "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and field in line


def test_serve_runs_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _exit(["serve", "--runs-dir", str(blocker)], capsys)
    assert code == 2 and "runs_dir" in line


# ---------------------------------------------------------------- no abbreviations
@pytest.mark.parametrize("argv", [
    ["run", "--epoch", "2"], ["run", "--lev", "1"], ["list", "--js"], ["list", "--runs", "x"],
    ["compare", "--densit", "0.5"], ["serve", "--allow-rem"], ["serve", "--po", "5007"],
    ["probe", "--lay", "8x8"], ["--deb", "list"],
])
def test_abbreviated_flags_are_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, line = _exit(argv, capsys)
    assert code == 2 and "unrecognized" in line or "ambiguous" in line or "invalid choice" in line, line
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_the_parser_is_built_exits_130(monkeypatch, capsys):
    import engine.cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine.cli, "build_parser", interrupted)
    assert lottery(["list"]) == 130
    assert capsys.readouterr().err.strip() == "cancelled"


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_ctrl_c_during_start_up_is_one_line(tmp_path, delay):
    p = subprocess.Popen([sys.executable, "-m", "explorer.cli", "run", *TINY, "--runs-dir", str(tmp_path / "r")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert p.returncode in (0, 130), (p.returncode, err)
