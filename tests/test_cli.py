"""The `lottery` command: JSON output, listing, errors as one line with no traceback, runs left intact."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from engine.cli import main

TINY = ["--epochs", "2", "--levels", "2", "--controls", "reinit,random", "--device", "cpu"]


def lottery(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_run_json_list_show_export(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["run", *TINY, "--runs-dir", runs, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"run_id", "status", "method", "model", "dataset", "seed", "dense", "levels", "controls"} <= set(summary)
    assert summary["dense"]["test_accuracy"] > 0.5
    assert set(summary["controls"]) == {"reinit", "random"}
    level = summary["levels"][0]
    assert {"level", "density", "test_accuracy", "val_accuracy", "early_stop_iteration", "train_seconds",
            "layers"} <= set(level)

    assert main(["list", "--runs-dir", runs]) == 0
    assert summary["run_id"] in capsys.readouterr().out
    assert main(["show", summary["run_id"], "--runs-dir", runs, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == summary  # run prints what show prints (analyses included)
    assert summary["analyses"] == {}
    assert main(["show", summary["run_id"], "--runs-dir", runs]) == 0
    table = capsys.readouterr().out
    assert "dense" in table and "reinit acc" in table

    out = tmp_path / "ticket.safetensors"
    assert main(["export", summary["run_id"], "--runs-dir", runs, "--out", str(out)]) == 0
    from safetensors.torch import load_file
    t = load_file(out)
    assert ((t["hidden.0.weight"] != 0) == t["mask.hidden.0.weight"]).all()


def _digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(p.encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def existing_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli") / "runs"
    assert main(["run", *TINY, "--levels", "1", "--runs-dir", str(runs), "--quiet"]) == 0
    return runs


@pytest.mark.parametrize("args,needle", [
    (["--prune-fraction", "-0.2"], "prune.prune_fraction: -0.2"),
    (["--prune-fraction", "1.5"], "prune.prune_fraction: 1.5"),
    (["--levels", "0"], "prune.levels: 0"),
    (["--levels", "two"], "prune.levels: 'two'"),
    (["--model", "vgg"], "model.model: 'vgg'"),
    (["--dataset", "imagenet"], "data.dataset: 'imagenet'"),
    (["--method", "magic"], "prune.method: 'magic'"),
    (["--rewind", "iter:abc"], "prune.rewind: 'iter:abc'"),
    (["--rewind", "iter:999999"], "prune.rewind: 'iter:999999'"),
    (["--dataset", "npz:/nonexistent/x.npz"], "does not exist"),
    (["--controls", "reinit,bogus"], "prune.controls"),
    (["--lr", "inf"], "train.lr"),
    (["--batch-size", "100000"], "train.batch_size: 100000"),
    (["--device", "cuda:7"], "device: 'cuda:7'"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_input_exits_nonzero_with_one_line_and_leaves_runs_intact(existing_runs, capsys, args, needle):
    before = _digest(existing_runs)
    try:
        code = main(["run", *TINY, "--runs-dir", str(existing_runs), *args])
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert _digest(existing_runs) == before


def test_a_real_process_exits_2_without_traceback(existing_runs):
    p = lottery("run", "--levels", "-1", "--runs-dir", str(existing_runs))
    assert p.returncode == 2 and p.stderr.startswith("error: prune.levels: -1") and "Traceback" not in p.stderr


def test_unwritable_runs_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = lottery("run", *TINY, "--runs-dir", str(blocker / "runs"))
    assert p.returncode == 2 and p.stderr.startswith("error: runs_dir:") and "Traceback" not in p.stderr


def test_debug_shows_the_traceback(tmp_path):
    p = lottery("--debug", "run", "--levels", "0", "--runs-dir", str(tmp_path))
    assert p.returncode != 0 and "Traceback" in p.stderr and "ConfigError" in p.stderr


def test_show_unknown_run(tmp_path):
    p = lottery("show", "nope", "--runs-dir", str(tmp_path))
    assert p.returncode == 2 and "no such run" in p.stderr


def test_engine_never_imports_ui_libraries():
    code = ("import sys, engine, engine.cli; engine.cli.build_parser(); "
            "bad = [m for m in ('panel', 'holoviews', 'bokeh', 'ipywidgets') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
