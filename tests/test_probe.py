"""Latency probes: FLOP counts, honest "unavailable" rows, progress and cancel, `lottery probe`."""
import json
import threading

import pytest
import torch
from torch import nn

import engine
from engine import probe
from engine.cli import main

from conftest import tiny

FAST = {"batches": (2,), "min_run_time": 0.001, "threads": 1}


def test_flops_of_lenet300_match_the_hand_count():
    model = engine.models.build(engine.ModelConfig(), (784,), 10, 0)
    per_example = 784 * 300 + 300 * 100 + 100 * 10
    assert probe.macs(model, torch.zeros(1, 784)) == per_example
    mask = engine.masks.ones(model)
    mask["hidden.0.weight"][:, ::2] = False  # half of the first layer
    assert probe.macs(model, torch.zeros(1, 784), mask) == per_example - 784 * 300 // 2
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 10))
    assert probe.macs(conv, torch.zeros(1, 1, 8, 8)) == 4 * 9 * 64 + 256 * 10  # a kernel weight per output pixel

    rows = probe.probe_model(model, mask, (784,), **FAST)["rows"]
    dense = next(r for r in rows if r["pattern"] == "dense")
    assert dense["flops"] == 2 * per_example * 2  # FLOPs = 2 x MACs, batch of 2
    assert dense["params"] == sum(p.numel() for p in model.parameters())


def test_layer_probe_on_cpu_reports_2_4_unavailable_without_failing():
    result = probe.probe_layer(64, 32, sparsities=(0.5, 0.75), dtypes=("float32", "float16"), **FAST)
    assert "cpu" in result["device"]
    rows = {(r["pattern"], r["sparsity"], r["dtype"]): r for r in result["rows"]}
    assert len(result["rows"]) == 2 * (1 + 3 * 2 + 1)
    semi = rows[("2:4", 0.5, "float32")]
    if not torch.cuda.is_available():
        assert not semi["available"] and "CUDA" in semi["reason"] and semi["median_ms"] is None
    assert semi["theoretical_speedup"] == pytest.approx(2.0, rel=0.05)  # theory is shown even when unavailable
    assert rows[("dense", 0.0, "float32")]["available"]
    assert rows[("masked", 0.5, "float32")]["theoretical_speedup"] == 1.0
    assert rows[("csr", 0.75, "float32")]["theoretical_speedup"] == pytest.approx(4.0, rel=0.05)
    assert rows[("channel", 0.75, "float32")]["params"] == 8 * 64 + 8
    for r in result["rows"]:
        assert r["available"] == (r["median_ms"] is not None) and (r["available"] or r["reason"])
    assert "unavailable" in probe.format_table(result)


def test_probe_reports_progress_and_stops_when_cancelled():
    seen, cancel = [], threading.Event()

    def progress(done, total, row):
        seen.append((done, total, row["pattern"]))
        if done == 3:
            cancel.set()

    with pytest.raises(engine.errors.RunCancelled):
        probe.probe_layer(32, 16, sparsities=(0.5,), progress=progress, cancel=cancel, **FAST)
    assert [s[0] for s in seen] == [1, 2, 3] and seen[0][1] == 5 and seen[0][2] == "dense"


def test_probe_a_stored_channel_ticket_from_the_cli(tmp_path, capsys):
    runs = tmp_path / "runs"
    s = engine.run(tiny(**{"prune.pattern": "channel", "prune.levels": 1, "train.epochs": 1, "prune.controls": ()}),
                   runs_dir=runs)
    assert main(["probe", "--run", s["run_id"], "--runs-dir", str(runs), "--batch", "1,4", "--min-time", "0.001",
                 "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["pattern"], r["batch"]): r for r in result["rows"]}
    assert rows[("channel", 4)]["available"] and rows[("channel", 4)]["params"] < rows[("dense", 4)]["params"]
    assert rows[("channel", 4)]["theoretical_speedup"] > 1.2
    assert "no Linear layer of this mask is 2:4" in rows[("2:4", 4)]["reason"]
    assert main(["probe", "--layer", "16x8", "--batch", "1", "--min-time", "0.001", "--threads", "1"]) == 0
    assert "Linear 16->8" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--dtype", "float64"], "error: --dtype: 'float64' is not valid; allowed: float32, float16, bfloat16"),
    (["--layer", "4096"], "error: --layer: '4096' is not valid"),
    (["--batch", "1,x"], "error: --batch: '1,x' is not valid"),
    (["--sparsity", "1.5"], "error: --sparsity: 1.5 is not valid"),
    (["--run", "nope"], "error: --run: 'nope' is not valid; no such run"),
    (["--level", "2"], "error: --level: 2 is not valid; needs --run RUN_ID"),
])
def test_probe_bad_input_is_one_line(tmp_path, capsys, args, needle):
    assert main(["probe", *args, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(needle) and err.count("\n") == 1, err


def test_probe_device_is_checked_in_one_line():
    with pytest.raises(engine.ConfigError, match="device.*allowed: auto, cpu"):
        probe.probe_layer(8, 8, device="foo")


def test_a_bare_linear_is_probed_as_csr_too():
    layer = nn.Linear(32, 16)
    mask = {"weight": torch.rand(16, 32, generator=torch.Generator().manual_seed(0)) > 0.9}
    result = probe.probe_model(layer, mask, (32,), batches=(4,), min_run_time=0.01)
    csr = next(r for r in result["rows"] if r["pattern"] == "csr")
    assert csr["available"] and csr["params"] < probe.parameters(layer)
