"""A new user's walk through README.md: every `lottery ...` command the README shows parses and its settings are
valid, every flag its CLI section names exists, and what a newcomer mistypes on the way (`compare --method`, a
`compare` that fails at its fifth method after training four) is refused up front in one line."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _parser():
    from engine.cli import build_parser
    from explorer.cli import add_commands

    return build_parser(add_commands)


def _commands(parser) -> dict:
    """{name: sub-parser} of a parser's sub-commands (lottery's commands, or analyze's analyses)."""
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _code_lines() -> list[str]:
    """The `lottery ...` lines of the README's code blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```\w*\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*", "", line).strip()
            if line.startswith("lottery "):
                lines.append(line)
    return lines


def _inline_commands() -> list[str]:
    """The `lottery ...` spans of the README's text that name a whole command (no placeholder but a run or zoo id,
    no --help)."""
    spans = sorted(set(re.findall(r"`(lottery [^`]*)`", README)))
    return [x for x in spans if len(x.split()) > 2 and "--help" not in x and not _synopsis(x)
            and not re.search(r"\b(NAME|COMMAND)\b", x)]


def _synopsis(line: str) -> bool:
    return any(c in line for c in "[{|") or "..." in line


def _concrete(line: str) -> list[str]:
    """The command's arguments with the README's placeholders filled in."""
    words = shlex.split(line)[1:]
    return [{"RUN_ID": "imp-lenet300-digits-0123456789", "LOTA_RUN_ID": "lota-minilm-x", "ZOO_ID": "zoo-x",
             "runs/RUN_ID": "runs/imp-lenet300-digits-0123456789"}.get(w, w) for w in words]


def test_the_readme_shows_commands_to_check():
    lines = _code_lines()
    assert sum(not _synopsis(x) for x in lines) >= 12 and sum(_synopsis(x) for x in lines) >= 10, lines


@pytest.mark.parametrize("line", [x for x in _code_lines() if not _synopsis(x)] + _inline_commands())
def test_every_command_the_readme_shows_parses_and_its_settings_are_valid(line):
    """Parsing is not running: a README command that trains MiniLM for minutes is checked in milliseconds. For `run`
    and `compare` the settings are validated too (ranges, choices, another method's flag), as before training."""
    from engine.cli import options_from_flags, run_config
    from engine.compare import CompareOptions

    args = _parser().parse_args(_concrete(line))
    if args.command == "run":
        run_config(args)
    elif args.command == "compare":
        options_from_flags(CompareOptions, args)


def test_every_flag_of_the_synopsis_exists_on_its_command():
    parser = _parser()
    commands = _commands(parser)
    for line in filter(_synopsis, _code_lines()):
        words = line.split()
        if words[1].startswith("--"):
            continue  # `lottery --debug ...`
        sub = commands[words[1]]
        flags = set(sub._option_string_actions)
        if words[1] == "analyze":  # its flags live on each analysis
            flags = {f for one in _commands(sub).values() for f in one._option_string_actions}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
            assert flag in flags, (flag, line)


def test_every_flag_of_the_cli_table_is_a_flag_of_lottery_run():
    table = README.split("| group | flags |")[1].split("\n\n")[0]
    run = _commands(_parser())["run"]
    flags = re.findall(r"`(--[a-z][a-z0-9-]*)", table)
    assert len(flags) > 50
    missing = [f for f in flags if f not in run._option_string_actions]
    assert not missing, missing


def test_every_choice_of_the_cli_table_is_allowed():
    """The table lists the allowed values of --method, --model, --dataset, ...: each must be one the flag takes, and
    each registered method, model and dataset must be in it."""
    from engine.registry import DATASETS, METHODS, MODELS

    table = README.split("| group | flags |")[1].split("\n\n")[0]
    row = {m.group(1): m.group(2) for m in re.finditer(r"`--([a-z-]+)` \(([^)]*)\)", table)}
    listed = {flag: set(re.findall(r"`([a-z0-9:_.-]+)`", text)) for flag, text in row.items()}
    assert set(METHODS.names()) == listed["method"]
    assert set(MODELS.names()) <= listed["model"]
    assert set(DATASETS.names()) <= listed["dataset"], set(DATASETS.names()) - listed["dataset"]


@pytest.mark.parametrize("flag, value, instead", [("--method", "snip", "--methods"), ("--density", "0.3", "--densities"),
                                                  ("--seed", "4", "--seeds")])
def test_compare_refuses_the_run_flags_it_sets_itself(tmp_path, capsys, flag, value, instead):
    """`lottery compare --method snip` (run's flag, one letter short of --methods) was taken and ignored: the
    default ten methods trained, 3 seeds each; --density and --seed were ignored the same way."""
    from engine.cli import main

    runs = tmp_path / "runs"
    assert main(["compare", flag, value, "--epochs", "1", "--quiet", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and instead in err, err
    assert not runs.exists() or not any(runs.iterdir())
    help_text = _commands(_parser())["compare"].format_help().split("\nmethods:\n")[0]  # (not the listing)
    assert f"[{flag} " not in help_text and not re.search(rf"^\s+{flag}\b", help_text, re.M), help_text


def test_compare_checks_every_method_before_any_trains(tmp_path, capsys):
    """`lottery compare --epochs 1` trained imp, oneshot, snip, grasp, synflow, rigl and set at 3 densities and 3
    seeds, then stopped at cs ("needs at least 2 epochs"): bad input must be found before any work."""
    from engine.cli import main

    runs = tmp_path / "runs"
    assert main(["compare", "--methods", "snip,cs", "--densities", "0.5", "--seeds", "1", "--epochs", "1",
                 "--controls", "none", "--quiet", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs" in err and "cs" in err, err
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_help_never_shows_an_empty_default():
    """`--scheduler SCHEDULER ... (default: )` and `--mask-from ... (default: )` read as a typo."""
    commands = _commands(_parser())
    for name in ("run", "compare"):
        assert "(default: )" not in commands[name].format_help().replace("\n", " ").replace("  ", " "), name


def test_every_engine_flag_and_argument_says_what_it_is():
    """`lottery list --help` showed a bare `--json`, `lottery show --help` a bare RUN_ID: each flag and argument
    of the engine's commands (and of each analysis) has a line of help."""
    from engine.cli import build_parser

    commands = _commands(build_parser())
    parsers = dict(commands)
    parsers.update({f"analyze {k}": v for k, v in _commands(commands["analyze"]).items()})
    bare = [(name, action.dest) for name, p in parsers.items() for action in p._actions
            if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert not bare, bare


def test_list_says_one_level_not_one_levels(tmp_path, capsys):
    """`lottery list` after the README's `lottery compare`: every snip run read "1 levels, last density ..."."""
    from engine.cli import main
    from engine.store import write_json

    runs = tmp_path / "runs"
    level = {"level": 1, "density": 0.2, "test_accuracy": 0.9}
    for run_id, levels in [("snip-lenet300-digits-0123456789", [level]), ("imp-lenet300-digits-0123456789",
                                                                          [level, {**level, "level": 2}])]:
        write_json(runs / run_id / "config.json", {})
        write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp",
                                                    "dense": None, "levels": levels, "controls": {}})
    assert main(["list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert " 1 level, last density" in out and " 2 levels, last density" in out, out


def test_every_python_name_the_readme_gives_exists():
    """`engine.x.y` and `explorer.x.y` names of the README resolve, and so do the functions it lists beside a module
    (`explorer.leaderboard` (`accuracy_vs_density(result)`, ...) named a function the module never had)."""
    import importlib

    def resolve(dotted: str):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ImportError:
                continue
        for p in parts[i:]:
            obj = getattr(obj, p)  # AttributeError: the README names something that is not there
        return obj

    for dotted in set(re.findall(r"`((?:engine|explorer)(?:\.[A-Za-z_]\w*)+)", README)):
        resolve(dotted)
    for module, listed in re.findall(r"`((?:engine|explorer)\.\w+)`\s+\(((?:`\w+\([^`]*\)`(?:,\s*)?)+)\)", README):
        for name in re.findall(r"`(\w+)\(", listed):
            resolve(f"{module}.{name}")


def test_run_help_lists_methods_models_datasets_in_columns_that_fit(monkeypatch):
    """`lottery run --help` ends with every method, control, model, data set and preset: the names longer than 14
    characters (pydoc-topics-expanded, start-magnitude) ran into their text, and each text was one line of up to
    190 characters."""
    from engine.registry import DATASETS, METHODS

    monkeypatch.setenv("COLUMNS", "100")
    compare = _commands(_parser())["compare"].format_help()
    assert "\nmodels:\n" in compare and "\ndatasets:\n" in compare and "presets:" not in compare  # (no --preset)
    text = _commands(_parser())["run"].format_help().split("\nmethods:\n")[1]
    assert max(len(line) for line in text.splitlines()) <= 100
    starts = {line[2:].split("  ")[0]: line.index(line[2:].split("  ")[0]) for line in text.splitlines()
              if line.startswith("  ") and not line.startswith("   ")}
    assert set(METHODS.names()) <= set(starts) and set(DATASETS.names()) <= set(starts), starts
    assert "(issue" not in text


def test_layout_lists_no_file_or_folder_that_is_gone():
    """(tests/test_specs.py checks every module is listed; this checks the other way: nothing listed is missing.)"""
    root = Path(__file__).resolve().parents[1]
    layout = README.split("\n## Layout")[1].split("\n## ")[0]
    listed = re.findall(r"^(\S+\.py|\S+/)\s", layout, re.M)
    assert len(listed) > 60 and not [p for p in listed if not (root / p).exists()]


def test_stored_and_exported_files_get_the_users_usual_permissions(tmp_path):
    """`lottery export ... --out ticket.safetensors` wrote a file only its owner could read (0600, tempfile.mkstemp's
    mode), and so was every file of the run store: a colleague, or a Dask worker running as another user on the
    README's shared runs dir, could not read them. Files are created as the umask allows, like the HTML report."""
    import os

    import torch

    from engine.store import save_tensors, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "summary.json", {"a": 1})
        save_tensors(tmp_path / "ticket.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("summary.json", "ticket.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("where", ["before the command", "before the analysis", "after the run id", "at the end"])
def test_runs_dir_works_wherever_it_is_typed(tmp_path, capsys, where):
    """"Every command takes --runs-dir DIR": `lottery analyze --runs-dir DIR RUN_ID persistence` said "invalid choice:
    'RUN_ID' (choose from 'uncertainty', ...)" and `lottery --runs-dir DIR list` "invalid choice: 'DIR'"; only after
    the analysis's name was it taken."""
    from engine.cli import main
    from engine.store import write_json

    runs, run_id = tmp_path / "elsewhere", "imp-lenet300-digits-0123456789"
    write_json(runs / run_id / "config.json", {})
    write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp",
                                                "dense": None, "levels": [], "controls": {}})
    flag = ["--runs-dir", str(runs)]
    argv = {"before the command": [*flag, "analyze", run_id, "uncertainty"],
            "before the analysis": ["analyze", *flag, run_id, "uncertainty"],
            "after the run id": ["analyze", run_id, *flag, "uncertainty"],
            "at the end": ["analyze", run_id, "uncertainty", *flag]}[where]
    main(argv)
    err = capsys.readouterr().err
    assert "invalid choice" not in err and "no such run" not in err, err
    assert main([*flag, "list"]) == 0 and run_id in capsys.readouterr().out


def test_the_synopsis_names_every_analysis():
    from engine.analysis import computable

    line = next(x for x in _code_lines() if x.startswith("lottery analyze RUN_ID {"))
    assert set(line.split("{")[1].split("}")[0].split(",")) == set(computable()), line


def test_lottery_help_says_where_to_start(capsys):
    """`lottery --help` listed eleven commands and no first step."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Start with `lottery run`" in out and "lottery COMMAND --help" in out


def test_the_cli_table_names_every_setting_of_lottery_run():
    """`--amp` and ks-lottery's three flags were missing from the table that lists every setting."""
    from engine.settings import run_settings

    table = README.split("| group | flags |")[1].split("\n\n")[0]
    missing = [s.flag for s in run_settings()
               if not any(form in table for form in (f"`{s.flag}`", f"`{s.flag} ", f"`--no-{s.flag[2:]}`"))]
    assert not missing, missing


def test_an_early_bird_never_detected_reads_as_such():
    """`lottery run --method earlybird --epochs 2` printed "early-bird ticket not detected of 2 (eps 0.1)"."""
    from engine.analysis.earlybird_tracker import format_earlybird

    assert format_earlybird("earlybird", {"detected_epoch": None, "epochs_total": 2, "eps": 0.1}) == \
        "earlybird: early-bird ticket not detected in 2 epochs (eps 0.1)"
    assert format_earlybird("earlybird", {"detected_epoch": 4, "epochs_total": 10, "eps": 0.1}) == \
        "earlybird: early-bird ticket epoch 4 of 10 (eps 0.1)"


def test_compare_prints_its_table_after_the_progress_bar_is_done(tmp_path, monkeypatch):
    """The README's `lottery compare ... --seeds 2` printed the leaderboard and then, below it, the progress bar's
    last line (the sweep bar was never closed; it closed when it was collected)."""
    import io
    import sys

    from engine.cli import main

    both = io.StringIO()  # stdout and stderr in one stream, in the order a terminal shows them
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    assert main(["compare", "--methods", "snip", "--densities", "0.5", "--seeds", "2", "--epochs", "1",
                 "--controls", "none", "--runs-dir", str(tmp_path / "runs")]) == 0
    import gc

    gc.collect()  # as the process's exit would: an unclosed bar writes its last line when collected
    lines = both.getvalue().replace("\r", "\n").rstrip("\n").splitlines()
    assert lines[-1].startswith("snip ") and "runs started" not in lines[-1], lines[-3:]
