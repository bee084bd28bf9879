"""`lottery`: the command line. Every flag is generated from an options dataclass (engine.settings): the
run config groups and each method's options for `run`, CompareOptions, ProbeOptions, each analysis's
options, and those of the commands other modules add (COMMAND_MODULES).

    lottery run --method imp --model lenet300 --dataset digits [--json]
    lottery list
    lottery show RUN_ID [--json]
    lottery export RUN_ID [--level L] --out ticket.safetensors

Every error is one line on stderr and a non-zero exit (2: bad input, 1: run failed, 130: cancelled);
`--debug` shows the traceback instead. Output piped into a reader that stops early (`| head`) ends the command
quietly with 141, as SIGPIPE would.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import shutil
import sys
import textwrap
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError, LotteryError
from .formatting import format_analysis, format_summary, pct
from .settings import (add_flags, build, config_from_settings, flag_of, run_settings, setting_values, settings_of,
                       values_from_args)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    return config_from_settings(values_from_args(args, run_settings()), base)


def options_from_flags(options: type, args: argparse.Namespace):
    """The options dataclass `options` from the flags `add_flags(parser, settings_of(options))` made; errors
    name the flag."""
    with errors_name_flags(options):
        return build(options, values_from_args(args, settings_of(options)))


@contextlib.contextmanager
def errors_name_flags(options: type | None):
    """A ConfigError naming a field of the options dataclass `options` (raised while building it, or later by the
    command's own checks, e.g. an analysis's) names the flag the user typed instead: --rewind-points, not
    rewind_points."""
    try:
        yield
    except ConfigError as e:
        if options is None or e.field not in options.__dataclass_fields__:
            raise
        raise ConfigError(flag_of(e.field), e.value, e.allowed) from None


# ---------------------------------------------------------------- output
def json_text(obj) -> str:
    """`obj` as the JSON a --json flag prints: a number that is not finite (a diverged run's NaN loss, a Bayesian
    run's NaN NLL) becomes null, since NaN and Infinity are not JSON (jq and JavaScript refuse them)."""
    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(obj), indent=1, allow_nan=False)


class _Progress:
    """A tqdm bar over all the iterations a run will train (counted by engine.progress, as in the explorer)."""

    def __init__(self, quiet: bool):
        from .progress import Progress

        self.quiet, self.bar, self.progress = quiet, None, Progress()

    def __call__(self, e) -> None:
        from tqdm import tqdm
        from . import events as ev

        if self.quiet:
            return
        step = self.progress.update(e)
        if isinstance(e, ev.RunStarted):
            self.bar = tqdm(total=self.progress.total, unit="it", file=sys.stderr, desc=e.run_id, dynamic_ncols=True)
        if self.bar is None:
            return
        self.bar.update(step)
        if isinstance(e, ev.TrainingStarted):
            self.bar.set_description(f"zoo chunk {e.level}" if e.variant == "zoo" else f"level {e.level} {e.variant}")
        elif isinstance(e, ev.Evaluated):
            self.bar.set_postfix(val_acc=f"{e.val_accuracy:.3f}", loss=f"{e.train_loss:.3f}")
        elif isinstance(e, (ev.RunFinished, ev.RunFailed, ev.RunStopped)):
            self.bar.close()


class _SweepBar:
    """One tqdm bar over runs training at the same time on several workers (engine.progress.SweepProgress);
    its total grows as each run starts."""

    def __init__(self, quiet: bool):
        from .progress import SweepProgress

        self.quiet, self.bar, self.progress = quiet, None, SweepProgress()

    def __call__(self, e) -> None:
        from tqdm import tqdm
        from . import events as ev

        if self.quiet:
            return
        step = self.progress.update(e)
        if self.bar is None:
            self.bar = tqdm(total=0, unit="it", file=sys.stderr, desc="sweep", dynamic_ncols=True)
        if isinstance(e, ev.RunStarted):
            self.bar.total = self.progress.total
        self.bar.update(step)
        running = sum(0 < p.done < p.total for p in self.progress.runs.values())
        self.bar.set_description(f"{len(self.progress.runs)} runs started, {running} training")

    def close(self) -> None:
        """Done: its last line goes out now, before the leaderboard (not after it, when the bar is collected)."""
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- commands
def run_config(args) -> RunConfig:
    """The config `lottery run` trains: defaults < --config < --preset < the flags typed. A method that does not
    take the default scope (ks-lottery and lota rank globally only) gets its own first scope when none was given
    (as `lottery compare` does), so `--method lota` alone is not refused for a scope the user never typed."""
    base = None
    if args.config:
        try:
            with open(args.config) as fh:
                base = json.load(fh)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError("--config", args.config, f"must be a readable JSON config file ({e})") from None
        if not isinstance(base, dict):
            raise ConfigError("--config", args.config, "must hold a JSON object: a run's config.json")
        if base.get("kind") == "zoo":
            raise ConfigError("--config", args.config, "is a model zoo's config: `lottery zoo` trains zoos (give "
                              "--config a ticket run's config.json)")
        if "custom_model" in base:  # (stored beside the config of a run of a user's own nn.Module)
            raise ConfigError("--config", args.config, f"is the config of a run of your own module "
                              f"({base['custom_model']}), which the CLI cannot build: run it again from Python, "
                              "engine.run(cfg, model=YourModule()) (README: 'Your own model and data')")
    from .config import PruneConfig
    from .presets import preset_for, preset_settings
    from .registry import METHODS

    typed = values_from_args(args, run_settings())
    settings = {**preset_settings(args.preset), **typed}
    stored = setting_values(base) if base is not None else {}
    method = settings.get("prune.method", stored.get("prune.method", PruneConfig.method))
    # before the config checks the values: a flag the method never reads is refused as such, whatever its value,
    # unless it names a run stored before that rule (below): the command that stored it resumes it
    given = {**stored, **settings}  # (--nm is read under --pattern nm only, --hidden by the mlp only)
    why = f"this run's method is {method}"
    try:
        _refuse_other_methods_flags(typed, [method], why, given)
        refused = None
    except ConfigError as e:
        refused = e
    # a preset is a bundle aimed at one method: what this method never reads keeps its default (one note says so)
    preset, unused = preset_for(args.preset, method, given)
    unused = {p: w for p, w in unused.items() if p not in typed}
    preset_values, settings = settings, {**preset, **typed}
    if "prune.scope" not in settings and "prune.scope" not in stored:
        settings["prune.scope"] = METHODS.get(method, "prune.method").scope_for(PruneConfig.scope)
    try:
        cfg = config_from_settings(settings, base)
    except ConfigError:
        if refused is not None:  # (an unread flag's value the config refutes too: the unread rule says why)
            raise refused from None
        raise
    from .store import RunStore

    stored_run = RunStore(args.runs_dir, cfg.run_id).exists()
    if refused is not None and not stored_run:
        raise refused
    if base is not None and not stored_run:  # the file's settings this method never reads are refused as typed
        read = setting_values(cfg.to_dict())  # flags are (a file of a stored run resumes it, as above)
        from_file = {p: v for p, v in setting_values(cfg.non_default()).items() if p not in settings}
        try:
            _refuse_other_methods_flags(from_file, [method], why, read)
        except ConfigError as e:
            raise ConfigError(e.field, e.value, f"in --config {args.config}, {e.allowed}") from None
    if unused:
        print(f"note: --preset {args.preset} sets " + "; ".join(f"{flag_of(p)} {preset_values[p]}, not used (left "
              f"at its default): {w}" for p, w in unused.items()), file=sys.stderr)
    return cfg


def cmd_run(args) -> int:
    from .runner import run

    cfg = run_config(args)
    progress = _Progress(args.quiet or args.json)
    try:
        summary = run(cfg, on_event=lambda e: (_interruptible_once_started(e), progress(e)), runs_dir=args.runs_dir)
    except KeyboardInterrupt:
        print(f"cancelled: completed levels are kept in {args.runs_dir}/{cfg.run_id}; run the same command "
              "to resume", file=sys.stderr)
        return 130
    from .store import RunStore

    _print_run(RunStore(args.runs_dir, summary["run_id"]), summary, args.json)  # what `lottery show` prints
    return {"completed": 0, "cancelled": 130}.get(summary["status"], 1)


def _refuse_other_methods_flags(typed: dict, methods: list[str], why: str, given: dict | None = None) -> None:
    """A method's own flag typed for runs of other methods only (`--method imp --synflow-rounds 5`), or a shared one
    no method there reads (`--method snip --levels 5`: engine.settings.unread_because), is a one-line error: no
    method there reads it, and it would still enter the config and change the run id. (The
    Python API keeps taking every method's options: stored configs and run ids stay as they were; the app's
    launch panel shows and sends only the chosen method's.) `given`: the run's settings, for those read only under
    others' values (`--nm` without `--pattern nm`)."""
    from .config import method_option_fields
    from .registry import METHODS
    from .settings import read_by, refuse_unread_by_model, unread_because

    refuse_unread_by_model(typed, given or {})  # (--hidden with lenet300: whatever the methods)
    for path, value in typed.items():  # ({setting path: value} of the flags typed)
        if not any(read_by(path, m, given) for m in methods):
            if path.removeprefix("prune.") in method_option_fields():
                because = f"an option of {' and '.join(m for m in METHODS.names() if read_by(path, m))} only ({why})"
            else:  # a shared setting these methods ignore (`--method snip --levels 5`): why
                because = "; ".join(unread_because(path, m, given) for m in methods)
                because = because if len(methods) == 1 else f"no method of {why} reads it ({because})"
            raise ConfigError(flag_of(path), value, f"{because}: leave it out")


def _unread_flags(typed: dict, methods: list[str]) -> list[str]:
    """The typed flags `_refuse_other_methods_flags` refuses for these methods, as `--flag value`."""
    unread = []
    for path, value in typed.items():
        try:
            _refuse_other_methods_flags({path: value}, methods, "", typed)
        except ConfigError as e:
            unread.append(f"{e.field} {e.value}")
    return unread


def _ctrl_c_quits() -> None:
    """Until a command's own work starts, Ctrl-C ends the process at once with "cancelled". A KeyboardInterrupt
    raised inside a third-party import (torch, NumPy, SciPy, scikit-learn load while the parser is built and
    the data set loads) can leave that library half-imported, and its next use then fails with an unrelated
    error (a RecursionError in NumPy's lazy attributes was seen). Nothing is stored yet, or only whole files
    (every write is atomic). `_ctrl_c_interrupts` gives Ctrl-C back its usual meaning: `run` does so once the
    run has claimed its folder (RunStarted), and the runner then stores it as cancelled. Only the main thread
    can set signal handlers; elsewhere (a caller's own thread) nothing changes."""
    import signal
    import threading

    def quit_now(signum, frame):
        print("cancelled", file=sys.stderr, flush=True)
        os._exit(130)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, quit_now)


def _interruptible_once_started(e) -> None:
    if type(e).__name__ == "RunStarted":  # the run holds its folder: Ctrl-C now cancels it (see _ctrl_c_quits)
        _ctrl_c_interrupts()


def _ctrl_c_interrupts() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def cmd_list(args) -> int:
    from .store import list_runs
    from .zoo import LIST_FIELDS as ZOO_LIST_FIELDS, list_tail as zoo_list_tail

    runs = list_runs(args.runs_dir)
    if args.json:
        print(json_text([{k: r.get(k) for k in ("run_id", "status", "method", "model", "dataset", "seed")}
                         | ({k: r.get(k) for k in ZOO_LIST_FIELDS} if r.get("kind") == "zoo" else {})
                         | ({"error": r["error"]} if r.get("error") else {}) for r in runs]))
        return 0
    if not runs:
        print(f"no runs in {args.runs_dir}")
    width = max([44] + [len(r["run_id"]) for r in runs])  # partial-lora-bert-tiny-pydocmodules-... has 46
    # seed, learning rate and Bayesian or not, where the listed runs differ in them (runs differing only there looked
    # alike: imp on a --bayesian net beside bayes-imp's deterministic imp run); the table keeps its width otherwise
    from .config import TrainConfig

    def stored(group: str, field: str, default):
        return [((r.get("config") or {}).get(group) or {}).get(field, default)
                if isinstance(r.get("config"), dict) else None for r in runs]

    shown = []
    for name, values in {"seed": [r.get("seed") for r in runs], "lr": stored("train", "lr", TrainConfig.lr),
                         "": [None if v is None else "bayesian" if v else "deterministic"
                              for v in stored("model", "bayesian", False)]}.items():
        texts = ["" if v is None else f"{name} {v:g}" if isinstance(v, (int, float)) else f"{name} {v}".strip()
                 for v in values]  # (None: a run not yet summarised, or unreadable)
        if len(set(texts) - {""}) > 1:
            shown.append([f"{t:<{max(map(len, texts))}} " for t in texts])
    counts = [f"{len(r.get('levels') or [])} level{'s' * (len(r.get('levels') or []) != 1)}," for r in runs]
    count_width = max(map(len, counts), default=0)  # '1 level,' beside '14 levels,': densities in one column
    for i, r in enumerate(runs):
        levels = r.get("levels") or []
        last = levels[-1] if levels else r.get("dense")
        tail = f"{counts[i]:>{count_width}} last density {pct(last.get('density'))} test " \
            f"{pct(last.get('test_accuracy'))}" if last else "no level yet"
        if r.get("kind") == "zoo":  # dense or ticket zoo (and which ticket)
            tail = zoo_list_tail(r)
        if r.get("status") == "unreadable":  # a damaged run: say why, the others are listed as usual
            tail = r["error"]
        print(f"{r['run_id']:<{width}} {r.get('status', '?'):<11} {''.join(column[i] for column in shown)}{tail}")
    return 0


def _open_run(args):
    from .store import RunStore

    store = RunStore(args.runs_dir, args.run_id)
    if not store.exists():
        import difflib

        stored = [d.name for d in store.root.iterdir() if d.is_dir()] if store.root.is_dir() else []
        zoos = sorted(name for name in stored if (store.root / name / "generations" / args.run_id).is_dir())
        if len(zoos) == 1:  # (a generation is kept inside its zoo's folder)
            raise ConfigError("RUN_ID", args.run_id, f"is a generation of the zoo {zoos[0]}, not a run: "
                              f"`lottery show {zoos[0]}` shows it with the zoo")
        if zoos:  # its id hashes the generate options alone: the same options on other zoos give the same id
            raise ConfigError("RUN_ID", args.run_id, f"is a generation of each of the zoos {', '.join(zoos)}, not a "
                              "run: `lottery show ZOO_ID` shows it with that zoo")
        near = difflib.get_close_matches(args.run_id, stored, n=1, cutoff=0.8)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError("RUN_ID", args.run_id, f"no such run in {args.runs_dir} (see `lottery list`){hint}")
    return store


def cmd_compare(args) -> int:
    from .compare import CompareOptions, compare, format_table, resumes_stored_before

    opts = options_from_flags(CompareOptions, args)
    base = values_from_args(args, run_settings())
    for path, instead in COMPARE_SETS.items():  # compare sets these per run: a typed one would be ignored
        if path in base:
            raise ConfigError(flag_of(path), base[path],
                              f"lottery compare sets it for each run from {instead}: leave it out")
    try:
        _refuse_other_methods_flags(base, list(opts.methods), f"--methods {','.join(opts.methods)}", base)
    except ConfigError:  # unless the sweep it names was stored before that rule: the command that stored it
        # resumes it, as `lottery run` does a run (the runs not stored get only what their method reads)
        if not resumes_stored_before(base, list(opts.methods), list(opts.densities), opts.seeds, args.runs_dir):
            raise
        print(f"note: {', '.join(_unread_flags(base, list(opts.methods)))}: taken for the stored runs this sweep "
              "resumes (stored before settings no method reads were refused); runs it trains anew leave them out",
              file=sys.stderr)
    quiet = args.quiet or args.json
    side_by_side = opts.seeds > 1 and base.get("train.batched", "auto") == "auto"  # a cell's seeds interleave
    progress = _Progress(quiet) if opts.executor == "local" and not side_by_side else _SweepBar(quiet)
    try:
        result = compare(base, list(opts.methods), list(opts.densities), opts.seeds, runs_dir=args.runs_dir,
                         on_event=progress, executor=opts.executor, workers=opts.workers, scheduler=opts.scheduler,
                         on_dashboard=lambda link: print(f"Dask dashboard: {link}", file=sys.stderr))
    except KeyboardInterrupt:
        print("cancelled: finished runs are kept; run the same command to continue", file=sys.stderr)
        return 130
    finally:
        if isinstance(progress, _SweepBar):
            progress.close()
    print(json_text(result) if args.json else format_table(result))
    return 0 if result["status"] == "completed" else 130


# Run settings `lottery compare` sets for each run itself, and the flag of its own that does so.
COMPARE_SETS = {"prune.method": "--methods", "prune.density": "--densities", "seed": "--seeds",
                "prune.levels": "--densities (an iterative method's levels reach the lowest)"}


def cmd_show(args) -> int:
    store = _open_run(args)
    store.config()  # a damaged config makes the run unreadable here too, as `lottery list` says
    summary = store.summary()
    if summary is None:
        raise LotteryError(f"run {args.run_id} has no summary yet")
    _print_run(store, summary, args.json)
    return 0


def _print_run(store, summary: dict, as_json: bool) -> None:
    """A run's summary and its stored analyses (a Bayesian run's NLL and ECE, ks-lottery's and partial-lora's
    records), as `lottery show` and `lottery run` print them."""
    if summary.get("kind") == "zoo":  # a zoo also lists the networks generated from it
        from .generate import generation_rows
        summary = {**summary, "generations": generation_rows(store.root, store.run_id)}
    damaged: dict[str, str] = {}
    analyses = store.analyses(damaged)
    if as_json:
        print(json_text({**summary, "analyses": analyses, **({"damaged_analyses": damaged} if damaged else {})}))
        return
    print(format_summary(summary))
    for name, a in analyses.items():
        print(format_analysis(name, a))
    if damaged:
        from .analysis import computable
        for name, problem in damaged.items():
            again = f"; `lottery analyze {store.run_id} {name}` computes it again" if name in computable() else ""
            print(f"analysis {name}: unreadable ({problem}){again}")


def cmd_analyze(args) -> int:
    from .analysis import analyze
    from .registry import ANALYSES

    store = _open_run(args)
    options = ANALYSES.get(args.analysis, "analysis").options
    opts = options and options_from_flags(options, args)
    with errors_name_flags(options):
        result = analyze(args.analysis, args.runs_dir, args.run_id, opts,
                         on_event=_analysis_progress if sys.stderr.isatty() else None)
    name = result["name"]
    print(json_text(result) if args.json else format_analysis(name, result))
    print(f"stored in {store.analysis_path(name)}", file=sys.stderr)
    return 0


def _analysis_progress(e) -> None:
    """A long analysis's steps, one line each on stderr (in a terminal: piped output stays what it was)."""
    from .events import AnalysisProgress

    if isinstance(e, AnalysisProgress):
        print(f"{e.analysis}: {e.message} ({e.done}/{e.total})", file=sys.stderr, flush=True)


def cmd_probe(args) -> int:
    """Inference latency of dense vs masked vs CSR vs channel vs 2:4, for a layer size or a stored ticket."""
    from . import probe

    result = probe.probe(options_from_flags(probe.ProbeOptions, args), args.runs_dir)
    print(json_text(result) if args.json else probe.format_table(result))
    return 0


def cmd_export(args) -> int:
    """Write a ticket as a plain state_dict (pruned weights are zeros) plus its masks, as safetensors."""
    from .store import check_output_file, save_tensors

    check_output_file(args.out, "--out")
    store = _open_run(args)
    from .zoo import refuse_zoo

    refuse_zoo(store, f"its members are stacked in {store.weights_path('weights')} (engine.zoo.load_zoo(...)"
               ".member(i) gives one)")
    levels = [r["level"] for r in store.records("ticket")]
    level = levels[-1] if args.level is None and levels else args.level
    if level not in levels:
        raise ConfigError("--level", args.level, f"completed levels of this run: {levels}")
    mask, weights = store.load_level("ticket", level)
    out = {k: v * mask[k] if k in mask else v for k, v in weights.items()}
    out.update({f"mask.{k}": v for k, v in mask.items()})
    save_tensors(Path(args.out), out)
    print(f"wrote level {level} of {args.run_id} to {args.out} ({len(weights)} tensors + {len(mask)} masks)")
    return 0


# ---------------------------------------------------------------- commands defined in their own modules
# Each module here defines add_command(subparsers, common), usually with `options_command`: a new command is
# its module (an options dataclass + a function) and one line here.
COMMAND_MODULES = ("engine.zoo", "engine.generate")


def options_command(sub, common, name: str, help: str, options: type, run, *, more=()) -> argparse.ArgumentParser:
    """`lottery NAME`: --runs-dir, --json and one flag per field of the options dataclass `options` (plus the
    Settings in `more`, e.g. some of `run_settings()`); `run(opts, args)` gets the validated options and the
    parsed arguments and returns the exit code. Errors name the flag."""
    parser = sub.add_parser(name, help=help, description=help)
    common(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_flags(parser, settings_of(options))
    add_flags(parser, list(more))
    parser.set_defaults(func=lambda args: run(options_from_flags(options, args), args))
    return parser


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 2` is a mistake, not --epochs
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser(extend=None) -> argparse.ArgumentParser:
    """The parser; `extend(subparsers, common)` lets the explorer add its commands (serve, report)
    without the engine importing any UI code."""
    from .runner import DEFAULT_RUNS_DIR

    p = _Parser(prog="lottery", description="Find and study lottery tickets of PyTorch models.",
                epilog="Start with `lottery run` (IMP on LeNet-300-100 / digits, with its controls), then `lottery "
                "list`, `lottery show RUN_ID` and `lottery serve` (the app). A command's flags: lottery COMMAND "
                "--help. Runs are stored in ./runs (--runs-dir).")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    runs_help = f"where runs are stored (default: {DEFAULT_RUNS_DIR})"
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help=runs_help)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp):  # also taken after the command; no default here, so one typed before it is kept
        sp.add_argument("--runs-dir", default=argparse.SUPPRESS, help=runs_help)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    from .registry import CONTROLS, DATASETS, METHODS, MODELS, PRESETS

    kinds = (("methods", METHODS), ("controls", CONTROLS), ("models", MODELS), ("datasets", DATASETS),
             ("presets", PRESETS))
    width = max(len(name) for _, reg in kinds for name in reg.names())  # pydoc-topics-expanded: 21
    wrap = max(40, shutil.get_terminal_size().columns - width - 6)  # as argparse wraps the flags' help

    def entry(name: str, text: str) -> str:
        return f"  {name:<{width}}  " + f"\n  {'':<{width}}  ".join(textwrap.wrap(text, wrap))

    def listing(skip=()) -> str:  # the epilog of `run` (and of `compare`, which takes no --preset)
        return "\n".join(f"{kind}:\n" + "\n".join(entry(name, text) for name, text in reg.describe().items())
                         for kind, reg in kinds if kind not in skip)

    r = sub.add_parser("run", help="find tickets (trains; resumes a stored run with the same config)",
                       epilog=listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    common(r)
    r.add_argument("--config", help="start from a JSON config (as stored in a run's config.json)")
    r.add_argument("--preset", metavar="NAME", help="named settings over the defaults (and --config); flags typed "
                   "beside it override it. Presets: " + ", ".join(PRESETS.names()) + " (listed below)")
    r.add_argument("--json", action="store_true", help="print the summary and the run's stored analyses as JSON on "
                   "stdout (as `lottery show RUN_ID --json`)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(r, run_settings())
    r.set_defaults(func=cmd_run)

    run_id_help = "a run id as `lottery list` prints it"
    ls = sub.add_parser("list", help="list stored runs, newest first (their ids, status, last level)")
    common(ls)
    ls.add_argument("--json", action="store_true", help="print the list as JSON on stdout")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="show a run's summary: its levels, controls and stored analyses")
    common(sh)
    sh.add_argument("run_id", metavar="RUN_ID", help=run_id_help)
    sh.add_argument("--json", action="store_true", help="print the summary and its analyses as JSON on stdout")
    sh.set_defaults(func=cmd_show)

    cp = sub.add_parser("compare", help="leaderboard: several methods at the same densities and budget",
                        epilog=listing(skip=("presets",)), formatter_class=argparse.RawDescriptionHelpFormatter)
    common(cp)
    from .compare import CompareOptions

    cp.add_argument("--json", action="store_true", help="print the leaderboard as JSON on stdout")
    cp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(cp, settings_of(CompareOptions))
    add_flags(cp, [s for s in run_settings() if s.path not in COMPARE_SETS])
    for s in run_settings():  # taken only to be refused with a pointer to compare's own flag (cmd_compare)
        if s.path in COMPARE_SETS:
            cp.add_argument(s.flag, dest=s.path, default=None, help=argparse.SUPPRESS)
    cp.set_defaults(func=cmd_compare)

    from .analysis import computable
    from .registry import ANALYSES

    an = sub.add_parser("analyze", help="analyse a stored run: " + ", ".join(computable()),
                        description="Compute an analysis of a stored run and store it with the run (`lottery show` "
                        "prints it). Its flags: lottery analyze RUN_ID ANALYSIS --help")
    common(an)
    an.add_argument("--json", action="store_true", help="print the result as JSON on stdout")  # (before ANALYSIS)
    an.add_argument("run_id", metavar="RUN_ID", help=run_id_help)
    kinds = an.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=_Parser)
    for name in computable():  # one sub-command per registered analysis, its flags from its options
        help_text = ANALYSES.describe()[name]
        one = kinds.add_parser(name, help=help_text, description=help_text)
        common(one)
        # (no default here: a --json typed before the analysis's name is kept, as --runs-dir in `common`)
        one.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print the result as JSON on stdout")
        if ANALYSES.get(name, "analysis").options is not None:
            add_flags(one, settings_of(ANALYSES.get(name, "analysis").options))
        one.set_defaults(func=cmd_analyze)

    ex = sub.add_parser("export", help="write a ticket as a plain safetensors state_dict plus masks")
    common(ex)
    ex.add_argument("run_id", metavar="RUN_ID", help=run_id_help)
    ex.add_argument("--level", type=int, default=None, help="level to export (default: the last)")
    ex.add_argument("--out", required=True, help="output .safetensors file")
    ex.set_defaults(func=cmd_export)

    from .probe import ProbeOptions

    pr = sub.add_parser("probe", help="inference latency of dense vs masked vs CSR vs channel vs 2:4 weights")
    common(pr)
    pr.add_argument("--json", action="store_true", help="print the measurements as JSON on stdout")
    add_flags(pr, settings_of(ProbeOptions))
    pr.set_defaults(func=cmd_probe)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(sub, common)
    if extend is not None:
        extend(sub, common)
    return p


def main(argv: list[str] | None = None, extend=None) -> int:
    _ctrl_c_quits()
    try:
        return _main(argv, extend)
    except BrokenPipeError:  # the reader of the output stopped early (`lottery list --json | head`): not an error
        try:  # Python's flush of stdout at exit would fail again and say so
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141  # as a command killed by SIGPIPE
    finally:  # --help and argparse's own errors leave through SystemExit
        _ctrl_c_interrupts()


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (captured by a test, say)
        return False


def _main(argv, extend) -> int:
    try:
        args = build_parser(extend).parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the registries (and torch) import
        print("cancelled", file=sys.stderr)
        return 130
    try:
        if args.func is not cmd_run:  # run gives Ctrl-C back once its run has started
            _ctrl_c_interrupts()
        return args.func(args)
    except LotteryError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless --debug
        if isinstance(e, BrokenPipeError) and _reader_gone():
            raise  # main's: the reader of the output went away (not a worker's pipe, say)
        if args.debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
