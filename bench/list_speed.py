"""`lottery list` (engine.store.list_runs) with and without checking the files each summary promises: a script.

Builds a synthetic runs dir in a temporary folder (--runs runs, each with --variants variants x --levels
completed levels holding empty mask/weights files and a record.json, plus a summary listing them), then times
`list_runs` as it is (every summary's files checked: `RunStore.missing_files`) and with the check disabled, in
one process, interleaved, --repeats times; prints the medians and the ratio checked / unchecked.

    python bench/list_speed.py [--runs 300] [--variants 4] [--levels 11] [--repeats 7]

Timings on a shared machine are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from engine.store import RunStore, list_runs

VARIANTS = ("ticket", "reinit", "random", "shuffle")


def build(root: Path, runs: int, variants: int, levels: int) -> None:
    for r in range(runs):
        d = root / f"run-{r:04d}"
        rows = {v: [{"level": lv, "density": 0.8 ** lv, "test_accuracy": 0.9} for lv in range(levels)]
                for v in VARIANTS[:variants]}
        for v in rows:
            for lv in range(levels):
                level = d / "levels" / v / f"{lv:03d}"
                level.mkdir(parents=True)
                for name in ("mask.safetensors", "weights.safetensors"):
                    (level / name).touch()
                (level / "record.json").write_text(json.dumps({"level": lv}))
        (d / "config.json").write_text(json.dumps({"config": {}}))
        summary = {"run_id": d.name, "status": "completed", "dense": None, "levels": rows.pop("ticket"),
                   "controls": rows}
        (d / "summary.json").write_text(json.dumps(summary))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--variants", type=int, default=4, choices=range(1, len(VARIANTS) + 1))
    ap.add_argument("--levels", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, a.runs, a.variants, a.levels)
        listed = list_runs(root)
        assert len(listed) == a.runs and all(s["status"] == "completed" for s in listed), "synthetic store unread"
        checked, unchecked = [], []
        for _ in range(a.repeats):
            checked.append(timed(lambda: list_runs(root)))
            with mock.patch.object(RunStore, "missing_files", lambda self, summary: None):
                unchecked.append(timed(lambda: list_runs(root)))
    c, u = statistics.median(checked), statistics.median(unchecked)
    print(f"list_runs, {a.runs} runs x {a.variants} variants x {a.levels} levels, median of {a.repeats}:")
    print(f"  files checked   {c * 1000:8.1f} ms")
    print(f"  files unchecked {u * 1000:8.1f} ms")
    print(f"  ratio checked / unchecked {c / u:.2f}x")


if __name__ == "__main__":
    main()
