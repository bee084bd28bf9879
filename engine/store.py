"""The run store: one directory per run id, everything written atomically.

    RUNS_DIR/RUN_ID/
      config.json          the full config (validated again on load)
      summary.json         the results table a user reads (rebuilt after every level)
      metrics.jsonl        append-only: every evaluation point and every finished level
      init.safetensors     the initial weights (theta_0)
      rewind.safetensors   the late-rewinding point (only with --rewind iter:K)
      levels/VARIANT/LLL/  VARIANT is "ticket" or a control's name; LLL the level (000 = dense)
        mask.safetensors   bool masks
        weights.safetensors the trained weights (state_dict, pruned entries stored as 0)
        record.json        the level's results; written last, so its presence marks the level complete

Files are written to a temporary name and renamed into place, so a crash never leaves a half-written
file under a real name. Nothing is ever unpickled: JSON and safetensors only.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, LotteryError

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported by the two functions that read and write tensors: everything else here
# is JSON, and the explorer lists and plots stored runs without waiting for torch to import.


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) and rename the result to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
    atomic_write(path, write)


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # safetensors sorts names; the model's layer order is kept in the metadata so loading gives it back
    # (masks iterate in layer order, and seeded per-layer draws depend on that order).
    order = json.dumps(list(tensors))
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata={"order": order}))


def load_tensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """The tensors of a file written by `save_tensors`, in the order they were saved."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path), device=str(device))
    with safe_open(str(path), framework="pt") as f:
        order = json.loads((f.metadata() or {}).get("order", "[]"))
    return {k: tensors[k] for k in order if k in tensors} | tensors


def check_writable(runs_dir: str | os.PathLike) -> Path:
    """Fail early, before any work, if runs cannot be stored under `runs_dir`."""
    root = Path(runs_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError("runs_dir", str(runs_dir), f"must be a writable directory ({e.strerror})") from None
    return root


class RunStore:
    """Read and write one run's directory."""

    def __init__(self, runs_dir: str | os.PathLike, run_id: str):
        self.root = Path(runs_dir).expanduser()
        self.run_id = run_id
        self.dir = self.root / run_id

    # ------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return (self.dir / "config.json").exists()

    def create(self, config: dict) -> None:
        """Write config.json for a new run (the caller has checked an existing run's identity)."""
        if not self.exists():
            write_json(self.dir / "config.json", config)

    def lock(self) -> None:
        """Claim the run so two processes or app sessions never train the same run at once.

        The pid is written to a temporary file that is hard-linked into place: the link either creates
        a complete lock or fails, so no one ever reads a half-written one. A lock whose process is gone
        (a crash) is taken over.
        """
        path = self.dir / ".lock"
        fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=self.dir)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, path)
                    return
                except FileExistsError:
                    try:
                        pid = int(path.read_text())
                    except (OSError, ValueError):
                        pid = -1
                    if pid == os.getpid():
                        raise LotteryError(f"run {self.run_id} is already running in this process") from None
                    if pid < 0 or _alive(pid):
                        raise LotteryError(f"run {self.run_id} is already running (process {pid})") from None
                    path.unlink(missing_ok=True)  # stale lock from a crashed process: take it over
            raise LotteryError(f"run {self.run_id} is being claimed by another process")
        finally:
            os.unlink(tmp)

    def unlock(self) -> None:
        (self.dir / ".lock").unlink(missing_ok=True)

    def is_running(self) -> bool:
        path = self.dir / ".lock"
        try:
            return _alive(int(path.read_text() or 0))
        except (OSError, ValueError):
            return False

    def delete(self) -> None:
        if self.is_running():
            raise LotteryError(f"run {self.run_id} is running; cancel it before deleting")
        shutil.rmtree(self.dir)

    # ------------------------------------------------------------ content
    def config(self) -> dict:
        return read_json(self.dir / "config.json")

    def summary(self) -> dict | None:
        path = self.dir / "summary.json"
        return read_json(path) if path.exists() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def append_metrics(self, row: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: skip it, keep the rest
                continue
        return rows

    def weights_path(self, name: str) -> Path:
        return self.dir / f"{name}.safetensors"

    def level_dir(self, variant: str, level: int) -> Path:
        return self.dir / "levels" / variant / f"{level:03d}"

    def level_record(self, variant: str, level: int) -> dict | None:
        path = self.level_dir(variant, level) / "record.json"
        return read_json(path) if path.exists() else None

    def save_level(self, variant: str, level: int, mask, weights, record: dict) -> None:
        d = self.level_dir(variant, level)
        save_tensors(d / "mask.safetensors", mask)
        save_tensors(d / "weights.safetensors", weights)
        write_json(d / "record.json", record)  # last: marks the level complete

    def load_mask(self, variant: str, level: int, device="cpu"):
        """Only the mask of a completed level (views that draw masks need no weights)."""
        return load_tensors(self.level_dir(variant, level) / "mask.safetensors", device)

    def load_level(self, variant: str, level: int, device="cpu"):
        """(mask, trained weights) of a completed level, in the model's layer order."""
        d = self.level_dir(variant, level)
        return load_tensors(d / "mask.safetensors", device), load_tensors(d / "weights.safetensors", device)

    def records(self, variant: str) -> list[dict]:
        base = self.dir / "levels" / variant
        if not base.exists():
            return []
        out = []
        for d in sorted(base.iterdir()):
            rec = d / "record.json"
            if rec.exists():
                out.append(read_json(rec))
        return out


def list_runs(runs_dir: str | os.PathLike) -> list[dict]:
    """Summaries of every run under `runs_dir` (those with no summary yet get a stub), newest first."""
    root = Path(runs_dir).expanduser()
    if not root.exists():
        return []
    out = []
    for d in root.iterdir():
        if not (d / "config.json").exists():
            continue
        store = RunStore(root, d.name)
        try:
            summary = store.summary() or {"run_id": d.name, "status": "created"}
        except (OSError, json.JSONDecodeError):
            summary = {"run_id": d.name, "status": "unreadable"}
        if summary.get("status") == "running" and not store.is_running():
            summary = {**summary, "status": "interrupted"}
        out.append(((d / "config.json").stat().st_mtime, summary))
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [summary for _, summary in out]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
