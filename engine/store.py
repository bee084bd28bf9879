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
      data.json            the content hash of the data set the run trains on (a resume on changed data is
                           refused)

Files are written to a temporary name (.NAME.PID.RANDOM.tmp) and renamed into place, so a crash never leaves
a half-written file under a real name; the temporary files of a process that is gone are removed when the
run is next claimed for training. Nothing is ever unpickled: JSON and safetensors only.

Paths: a run id is one plain name (`validate_run_id`, used by the CLI, the API and the app alike), and every
path in a run's folder is built by `RunStore.path`, which checks it lies inside that folder. A damaged file
raises `StoreDamaged` naming the file and what is wrong with it; `list_runs` lists such runs as
"unreadable" with the reason instead of failing.
"""
from __future__ import annotations

import json
import operator
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, LotteryError

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported by the two functions that read and write tensors: everything else here
# is JSON, and the explorer lists and plots stored runs without waiting for torch to import.

RUN_ID_SYNTAX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# a temporary file: written by process PID (so a later open can tell an abandoned one from one being written)
TEMP_FILE = re.compile(r"\.(?:.+\.(?P<pid>\d+)\.[^.]+\.tmp|lock\.(?P<lockpid>\d+)\.[^.]+|lock\.[^.]+|.+\.tmp)")


class StoreDamaged(LotteryError):
    """A file of the run store cannot be read as what it should be (truncated, not JSON, wrong shape); the
    message names the file and what is wrong."""


def validate_run_id(run_id) -> str:
    """`run_id` if it is a plain run id (one folder name inside the runs dir), else ConfigError. The one check
    every way in (CLI, Python API, app) goes through, via RunStore."""
    if not isinstance(run_id, str) or not RUN_ID_SYNTAX.fullmatch(run_id):
        raise ConfigError("RUN_ID", run_id, "must be a run id as `lottery list` shows it: letters, digits, "
                          "'.', '_' and '-', starting with a letter or digit, no path")
    return run_id


def _runs_path(runs_dir) -> Path:
    """`runs_dir` as a Path; ConfigError if it is not a path, or empty ('' would be the working directory)."""
    if not isinstance(runs_dir, (str, os.PathLike)) or runs_dir == "":
        raise ConfigError("runs_dir", runs_dir, "must be the path of a directory (a str or os.PathLike, not empty)")
    return Path(runs_dir).expanduser()


def runs_root(runs_dir: str | os.PathLike) -> Path:
    """The runs dir as a Path; ConfigError if something that is not a directory sits at that path."""
    root = _runs_path(runs_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError("runs_dir", str(runs_dir), "is a file, not a directory of runs")
    return root


def check_output_file(path: str | os.PathLike, flag: str, suffixes: tuple[str, ...] = ()) -> Path:
    """A file path the user named for output (`export --out`, `report --html`), checked before any work: not a
    directory, no file standing where a folder is needed, and ending in one of `suffixes` (if given)."""
    out = Path(path).expanduser()
    if out.is_dir() or str(path).endswith(os.sep):
        raise ConfigError(flag, str(path), "is a directory; give a file name" +
                          (f" ending in {suffixes[0]}" if suffixes else ""))
    if suffixes and out.suffix.lower() not in suffixes:
        raise ConfigError(flag, str(path), f"must end in {' or '.join(suffixes)}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(flag, str(path), f"cannot be written: {parent} is a file, not a directory")
    return out


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) and rename the result to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    # created as the umask allows, as any file the user writes (tempfile.mkstemp's 0600 kept a colleague, or a
    # worker running as another user on a shared runs dir, from reading a run or an exported ticket)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = os.stat(tmp).st_mode & 0o777
    try:
        write(tmp)
        os.chmod(tmp, mode)  # safetensors writes its file anew, as 0600
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
    """The JSON in `path`; StoreDamaged (naming the file) if it is not valid JSON or cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreDamaged(f"{path} is damaged: not valid JSON ({e})") from None
    except OSError as e:
        raise StoreDamaged(f"{path} cannot be read ({e.strerror})") from None


def read_object(path: Path) -> dict:
    """The JSON object in `path` (config, summary, record); StoreDamaged if it holds anything else."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise StoreDamaged(f"{path} is damaged: holds {_clip(obj)}, not a JSON object")
    return obj


def read_objects(paths: dict, damaged: dict | None = None) -> dict:
    """{key: the JSON object at path} for each (key, path) of `paths` whose file exists, in their order. A damaged
    file is left out (one damaged file must not hide the others), what is wrong with it put in `damaged[key]`
    when given."""
    out = {}
    for key, path in paths.items():
        try:
            out[key] = read_object(path)
        except FileNotFoundError:
            continue
        except StoreDamaged as e:
            if damaged is not None:
                damaged[key] = str(e)
    return out


def _clip(obj) -> str:
    text = json.dumps(obj)
    return text if len(text) <= 40 else text[:37] + "..."


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

    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            order = json.loads((f.metadata() or {}).get("order", "[]"))
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError, OSError, bad metadata: say which file and what is wrong
        raise StoreDamaged(f"{path} is damaged: {_safetensors_problem(Path(path), e)}") from None
    return {k: tensors[k] for k in order if k in tensors} | tensors


def _safetensors_problem(path: Path, error: Exception) -> str:
    """What is wrong with a safetensors file that failed to load, in words (truncation is the usual case: the
    8-byte header length, the JSON header and the data offsets it lists say how long the file must be)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"not a safetensors file ({size} bytes)"
            n = int.from_bytes(head, "little")
            if 8 + n > size:
                return f"truncated safetensors file (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            return f"truncated safetensors file ({size} bytes, needs {8 + n + end})"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return f"not a readable safetensors file ({type(error).__name__}: {error})"
    return f"not a readable safetensors file ({type(error).__name__}: {error})"


def check_writable(runs_dir: str | os.PathLike) -> Path:
    """Fail early, before any work, if runs cannot be stored under `runs_dir`."""
    root = _runs_path(runs_dir)
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
        self.root = runs_root(runs_dir)
        self.run_id = validate_run_id(run_id)
        self.dir = self.root / run_id
        self._real_dir = self.root.resolve() / run_id

    def path(self, *parts: str) -> Path:
        """RUN_DIR/PART/...: each part one plain name, the result checked to lie inside the run's folder (so a
        run folder, or anything in it, that is a link leading elsewhere is refused, not followed)."""
        for part in parts:
            if not isinstance(part, str) or part in ("", ".", "..") or any(c in part for c in "/\\\0"):
                raise ConfigError("path", part, f"must be one plain file or folder name inside run {self.run_id}")
        path = self.dir.joinpath(*parts)
        real = path.resolve()
        if real != self._real_dir and self._real_dir not in real.parents:
            raise StoreDamaged(f"{path} leads to {real}, outside its run folder {self._real_dir}; refusing to "
                               "follow it")
        return path

    # ------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self.path("config.json").exists()

    def create(self, config: dict) -> None:
        """Write config.json for a new run (the caller has checked an existing run's identity)."""
        if not self.exists():
            write_json(self.path("config.json"), config)

    def check_data(self, dataset: str, fingerprint: str, *, record: bool = True) -> None:
        """Refuse to go on with data whose contents differ from those the run was trained on (data.json);
        a run without data.json records `fingerprint` (when `record`). An empty fingerprint checks nothing."""
        if not fingerprint:
            return
        path = self.path("data.json")
        if path.exists():
            stored = read_object(path)
            if stored.get("sha256") != fingerprint:
                raise ConfigError("data.dataset", dataset, f"its contents changed since run {self.run_id} trained "
                                  f"on it (sha256 {str(stored.get('sha256'))[:12]}... stored, {fingerprint[:12]}... "
                                  "now); restore that data, give the new data another path, or delete the run")
        elif record:
            write_json(path, {"dataset": dataset, "sha256": fingerprint})

    def lock(self) -> None:
        """Claim the run so two processes or app sessions never train the same run at once.

        The pid is written to a temporary file that is hard-linked into place: the link either creates
        a complete lock or fails, so no one ever reads a half-written one. A lock whose process is gone
        (a crash) is taken over.
        """
        path = self.path(".lock")
        fd, tmp = tempfile.mkstemp(prefix=f".lock.{os.getpid()}.", dir=self.dir)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, path)
                    self.clean_temp_files()
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
        self.path(".lock").unlink(missing_ok=True)

    def clean_temp_files(self) -> None:
        """Remove the temporary files that processes now gone left behind (a kill during a write). Called
        once this process holds the lock; another live process's files (an analysis being written) stay."""
        for p in self.dir.rglob(".*"):
            m = TEMP_FILE.fullmatch(p.name)
            pid = m and (m["pid"] or m["lockpid"])
            if m and p.is_file() and not p.is_symlink() and not (pid and _alive(int(pid))):
                p.unlink(missing_ok=True)

    def is_running(self) -> bool:
        path = self.path(".lock")
        try:
            return _alive(int(path.read_text() or 0))
        except (OSError, ValueError):
            return False

    def delete(self) -> None:
        """Delete the run: only a real folder (not a link) directly inside the runs dir that holds a
        config.json, and only when no process is training it."""
        if self.dir.is_symlink() or self.dir.resolve() != self._real_dir:
            raise StoreDamaged(f"{self.dir} is a link to {self.dir.resolve()}, outside the runs dir; not deleting")
        if not (self.dir / "config.json").is_file():
            raise LotteryError(f"{self.dir} is not a run folder (no config.json); not deleting it")
        if self.is_running():
            raise LotteryError(f"run {self.run_id} is running; cancel it before deleting")
        shutil.rmtree(self.dir)

    # ------------------------------------------------------------ content
    def config(self) -> dict:
        return read_object(self.path("config.json"))

    def summary(self, *, check_files: bool = True) -> dict | None:
        """summary.json, checked (and, with `check_files`, the files it promises: `missing_files`); a "running"
        run whose process is gone is "interrupted" (as `list` says)."""
        path = self.path("summary.json")
        if not path.exists():
            return None
        summary = read_object(path)
        problem = _summary_problem(summary, self.run_id)
        if problem:
            raise StoreDamaged(f"{path} is damaged: {problem}")
        problem = check_files and self.missing_files(summary)
        if problem:
            raise StoreDamaged(problem)
        if summary["status"] == "running" and not self.is_running():
            summary = {**summary, "status": "interrupted"}
        return summary

    def missing_files(self, summary: dict) -> str | None:
        """What is gone that the summary promises, saying how to recover, or None: a level whose record.json marks
        it complete without its mask or weights (a zoo's files: `zoo.missing_files`). `list_runs` calls it for
        every run, so it lists folders rather than stat each file: one `os.scandir` of levels/ and of each
        levels/VARIANT/, one `os.listdir` per level folder (bench/list_speed.py times it)."""
        if summary.get("kind") == "zoo":  # zoo.KIND, read without importing zoo: the app's first page lists runs
            from . import zoo  # zoo imports store; its layout stays in its module
            return zoo.missing_files(self, summary)
        try:
            variants = sorted(e.path for e in os.scandir(self.path("levels")) if e.is_dir())
        except OSError:  # no levels yet
            return None
        for variant in variants:
            with os.scandir(variant) as entries:
                levels = sorted(e.path for e in entries if e.is_dir())
            for level in levels:
                names = set(os.listdir(level))
                if "record.json" in names:
                    for name in ("mask.safetensors", "weights.safetensors"):
                        if name not in names:
                            return _missing_level_file(Path(level, name))
        return None

    def status(self) -> str | None:
        """The status summary.json records (as `summary()` reports it, files unchecked: a resume of a completed run
        that finds a file gone fails leaving its summary as it was), or None: no summary, or unreadable."""
        try:
            summary = self.summary(check_files=False)
        except LotteryError:
            return None
        return summary and summary["status"]

    def write_summary(self, summary: dict) -> None:
        write_json(self.path("summary.json"), summary)

    def append_metrics(self, row: dict) -> None:
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict]:
        path = self.path("metrics.jsonl")
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
        return self.path(f"{name}.safetensors")

    def level_dir(self, variant: str, level: int) -> Path:
        try:
            level = operator.index(level)  # an int or a numpy integer; not '1' or 1.0
        except TypeError:
            raise ConfigError("level", level, "must be an integer level number (0 = the dense network)") from None
        return self.path("levels", variant, f"{level:03d}")

    def level_record(self, variant: str, level: int) -> dict | None:
        path = self.level_dir(variant, level) / "record.json"
        return read_object(path) if path.exists() else None

    def save_level(self, variant: str, level: int, mask, weights, record: dict) -> None:
        d = self.level_dir(variant, level)
        save_tensors(d / "mask.safetensors", mask)
        save_tensors(d / "weights.safetensors", weights)
        write_json(d / "record.json", record)  # last: marks the level complete

    def load_mask(self, variant: str, level: int, device="cpu"):
        """Only the mask of a completed level (views that draw masks need no weights)."""
        return self._level_file(self.level_dir(variant, level) / "mask.safetensors", device)

    def load_level(self, variant: str, level: int, device="cpu"):
        """(mask, trained weights) of a completed level, in the model's layer order. A file missing from a level
        whose record.json marks it complete is StoreDamaged, saying how to train the level again."""
        d = self.level_dir(variant, level)
        return self._level_file(d / "mask.safetensors", device), self._level_file(d / "weights.safetensors", device)

    def _level_file(self, path: Path, device):
        try:
            return load_tensors(path, device)
        except FileNotFoundError:
            if not (path.parent / "record.json").exists():  # not a completed level: nothing is damaged
                self._refuse_level(path.parent.parent.name, int(path.parent.name))
            raise StoreDamaged(_missing_level_file(path)) from None

    def _refuse_level(self, variant: str, level: int):
        """ConfigError naming what the run does hold, for a level of `variant` it has not completed (a level or
        variant typed wrong in a script, or a run id that is not in the runs dir)."""
        if not self.exists():
            raise ConfigError("RUN_ID", self.run_id, f"no such run in {self.root} (see `lottery list`)")
        levels = [r["level"] for r in self.records(variant)]
        if levels:
            raise ConfigError("level", level, f"completed {variant} levels of run {self.run_id}: {levels}")
        folder = self.path("levels")
        variants = sorted(d.name for d in (folder.iterdir() if folder.exists() else ()) if d.is_dir() and
                          self.records(d.name))
        raise ConfigError("variant", variant, f"run {self.run_id} has no completed level of it; its variants: "
                          f"{variants}")

    # ------------------------------------------------------------ analyses: RUN_DIR/analyses/NAME.json
    def analysis_path(self, name: str) -> Path:
        """Where the analysis (or a method's record) `name` is stored; a name is one path component."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ConfigError("analysis", name, "must be a plain name (letters, digits, '.', '_', '-')")
        return self.path("analyses", f"{name}.json")

    def save_analysis(self, name: str, result: dict) -> Path:
        """Write `result` atomically as the analysis `name`; `result["name"]` becomes `name`."""
        result["name"] = name
        path = self.analysis_path(name)
        write_json(path, result)
        return path

    def analyses(self, damaged: dict[str, str] | None = None) -> dict[str, dict]:
        """{name: result} of every analysis stored with the run, by name. A damaged file is left out (one analysis
        must not hide the run and its other analyses; computing it again replaces the file), its name and what is
        wrong with it put in `damaged` when given."""
        folder = self.path("analyses")
        return read_objects({p.stem: p for p in sorted(folder.glob("*.json"))} if folder.exists() else {}, damaged)

    def records(self, variant: str) -> list[dict]:
        base = self.path("levels", variant)
        if not base.exists():
            return []
        out = []
        for d in sorted(base.iterdir()):
            rec = d / "record.json"
            if rec.exists():
                out.append(read_object(rec))
        return out


def list_runs(runs_dir: str | os.PathLike) -> list[dict]:
    """Summaries of every run under `runs_dir`, newest first: those with no summary yet get a stub, and those
    that cannot be read are listed with status "unreadable" and the reason as "error". The run id is always
    the folder's name, never what a summary claims."""
    root = runs_root(runs_dir)
    if not root.exists():
        return []
    out = []
    for d in root.iterdir():
        if d.name.startswith(".") or not (d / "config.json").exists():
            continue
        try:
            store = RunStore(root, d.name)
            store.config()
            summary = store.summary() or {"run_id": d.name, "status": "created"}
        except LotteryError as e:
            summary = {"run_id": d.name, "status": "unreadable", "error": _relative(str(e), root),
                       "dense": None, "levels": [], "controls": {}}
        try:
            mtime = (d / "config.json").stat().st_mtime
        except OSError:
            mtime = 0.0
        out.append((mtime, summary))
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [summary for _, summary in out]


def _missing_level_file(path: Path) -> str:
    """What to do about a completed level's file that is gone: train that level (and those after it) again."""
    level, variant = path.parent.name, path.parent.parent.name
    # later ticket levels are pruned from this one, and every control of a level copies its ticket's mask
    what = (f"the folders {path.parents[2] / '*' / level} and every later level (the ticket's and its controls')"
            if variant == "ticket" else f"the folder {path.parent}")
    return (f"{path} is missing, so level {level} of {variant} cannot be used; delete {what}, then run the same "
            "`lottery run` command (or engine.run call, for your own module) again to train them")


def _relative(message: str, root: Path) -> str:
    """A message about files of the runs dir with the runs dir's own path left out (shorter, and the app does
    not show clients where the store lives)."""
    for prefix in {str(root) + os.sep, str(root.resolve()) + os.sep}:
        message = message.replace(prefix, "")
    return message


def _summary_problem(s: dict, run_id: str) -> str | None:
    """What is wrong with a summary's shape (what the views and `list` rely on), or None."""
    if s.get("run_id", run_id) != run_id:
        return f"it names run {_clip(s.get('run_id'))}, not its folder {run_id}"
    if not isinstance(s.get("status"), str):
        return f"status {_clip(s.get('status'))} is not a string"
    if not isinstance(s.get("levels", []), list) or not all(isinstance(r, dict) for r in s.get("levels", [])):
        return "levels is not a list of rows"
    if not isinstance(s.get("dense"), (dict, type(None))):
        return "dense is not a row"
    controls = s.get("controls", {})
    if not isinstance(controls, dict) or not all(isinstance(v, list) for v in controls.values()):
        return "controls is not a mapping of lists of rows"
    return None


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
