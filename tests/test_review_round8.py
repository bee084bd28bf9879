"""Defects a review of this session's unread-settings rule found (round 8): each test failed before its fix."""
import json

import engine
from engine.cli import main
from engine.config import RunConfig

TINY = ["--dataset", "digits", "--epochs", "1", "--controls", "none"]


# ---------------------------------------------------------------- 1. --prune-fraction under --pattern nm
def test_imp_and_oneshot_under_nm_refuse_the_prune_fraction_they_never_read(tmp_path, capsys):
    """Each IMP level under --pattern nm keeps one weight fewer per group of M, and one-shot keeps N of every M: both
    took --prune-fraction into their config and id, and 0.2 and 0.5 trained the same computation twice."""
    from engine.settings import read_by

    nm = {"prune.pattern": "nm"}
    for method, more in (("imp", ["--levels", "1"]), ("oneshot", [])):
        assert not read_by("prune.prune_fraction", method, nm)
        assert read_by("prune.prune_fraction", method, {"prune.pattern": "channel"})  # a channel level's fraction
        runs = tmp_path / method
        argv = ["run", "--method", method, "--pattern", "nm", "--prune-fraction", "0.5", *more, *TINY]
        assert main([*argv, "--runs-dir", str(runs)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --prune-fraction: '0.5'"), err
        assert f"{method} " in err and "so it never reads --prune-fraction" in err, err
        assert not runs.exists()


def test_the_output_fraction_is_read_under_nm_by_imp_and_oneshot(tmp_path):
    """Under --pattern nm the output layer is still pruned weight by weight at --output-fraction per IMP level (and
    one-shot prunes it as those levels would): two values give two tickets."""
    from engine.settings import read_by

    for method in ("imp", "oneshot"):
        assert read_by("prune.output_fraction", method, {"prune.pattern": "nm"})
        cfgs = [RunConfig().replace(**{"prune.method": method, "prune.pattern": "nm", "prune.levels": 1,
                                       "prune.controls": (), "prune.output_fraction": f, "train.epochs": 1})
                for f in (0.0, 0.5)]
        densities = [engine.run(c, runs_dir=tmp_path / "runs")["levels"][0]["density"] for c in cfgs]
        assert densities[0] > densities[1], (method, densities)


def test_compare_picks_imps_levels_under_nm_without_the_prune_fraction():
    """`compare` set an IMP run's --levels from --prune-fraction (levels_to_reach) under --pattern nm too, where the
    run never reads the fraction: the levels (and so the ticket) followed a setting the rule now refuses. Under nm
    IMP's levels are its M - N steps from M:M to N:M; the leaderboard reads each target off the nearest."""
    from engine.methods.imp import levels_to_reach

    def prune(**changes):
        return RunConfig().replace(**{f"prune.{k}": v for k, v in changes.items()}).prune

    assert {levels_to_reach(prune(pattern="nm", nm="2:8", prune_fraction=f), d)
            for f in (0.2, 0.9) for d in (0.5, 0.01)} == {6}
    assert levels_to_reach(prune(), 0.5) == 4 and levels_to_reach(prune(prune_fraction=0.9), 0.5) == 1


# ---------------------------------------------------------------- 2. the same command resumes a run stored before
def test_the_same_command_resumes_a_run_stored_with_a_flag_now_refused(tmp_path, capsys):
    """A run stored with `--hidden 64` on lenet300 (accepted before the unread rule; never read, but in its config and
    id) could not be resumed by its own command: the flag was refused, and leaving it out named another run. A typed
    flag the run never reads is taken when the run it names is stored; else it is refused as before."""
    runs = tmp_path / "runs"
    old = RunConfig.from_dict({"model": {"model": "lenet300", "hidden": [64]}, "data": {"dataset": "digits"},
                               "train": {"epochs": 1}, "prune": {"levels": 1, "controls": []}})
    engine.run(old, runs_dir=runs)
    weights = sorted((runs / old.run_id).rglob("*.pt")) or sorted((runs / old.run_id).rglob("*.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in weights}
    assert before
    argv = ["run", "--model", "lenet300", "--hidden", "64", "--levels", "1", *TINY, "--json", "--quiet"]
    assert main([*argv, "--runs-dir", str(runs)]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["run_id"] == old.run_id and resumed["status"] == "completed"
    assert {p: p.stat().st_mtime_ns for p in weights} == before  # nothing trained again
    assert sorted(p.name for p in runs.iterdir()) == [old.run_id]
    assert main([*argv[:4], "32", *argv[5:], "--runs-dir", str(runs)]) == 2  # not stored: refused as before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --hidden: '32'") and "lenet300" in err, err
    assert sorted(p.name for p in runs.iterdir()) == [old.run_id]


# ---------------------------------------------------------------- 3. messages name the flag
def test_a_ticket_zoo_refusing_a_model_flag_names_the_flag(tmp_path, capsys):
    """It named `model.hidden` where every other refusal names the flag typed."""
    runs = tmp_path / "runs"
    ticket = RunConfig.from_dict({"model": {"model": "mlp", "hidden": [16]}, "train": {"epochs": 1},
                                  "prune": {"levels": 1, "controls": []}})
    engine.run(ticket, runs_dir=runs)
    for flags in (["--hidden", "64"], ["--dataset", "digits"]):
        assert main(["zoo", "--ticket", ticket.run_id, *flags, "--runs-dir", str(runs), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {flags[0]}: '{flags[1]}'"), err
        assert "a ticket zoo trains the ticket run's own model and data" in err, err


# ---------------------------------------------------------------- 4. code health
def test_the_settings_and_cli_modules_keep_the_projects_line_width():
    from pathlib import Path

    root = Path(__file__).parent.parent / "engine"
    for path in ("settings.py", "cli.py", "zoo.py", "methods/imp.py"):
        long = [i for i, line in enumerate((root / path).read_text().splitlines(), 1) if len(line) > 120]
        assert not long, (path, long)


def test_the_same_command_resumes_a_dense_zoo_stored_with_a_flag_now_refused(tmp_path, capsys):
    """As for runs: a dense zoo stored with `--hidden 64` on lenet300 (before the refusal) is found by its command."""
    from engine import zoo as Z

    runs = tmp_path / "runs"
    options = Z.ZooOptions(members=2)
    old = Z.train_zoo(options, Z.zoo_config(options, {"model.model": "lenet300", "model.hidden": (64,),
                                                     "train.epochs": 1}), runs_dir=runs)
    weights = runs / old["run_id"] / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    argv = ["zoo", "--model", "lenet300", "--hidden", "64", "--members", "2", "--epochs", "1", "--json", "--quiet"]
    assert main([*argv, "--runs-dir", str(runs)]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == old["run_id"] and weights.stat().st_mtime_ns == before
    argv[4] = "32"
    assert main([*argv, "--runs-dir", str(runs)]) == 2  # not stored: refused as before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --hidden: '32'") and "lenet300" in err, err
    assert sorted(p.name for p in runs.iterdir()) == [old["run_id"]]


def test_show_of_a_generation_id_says_which_zoo_holds_it(tmp_path, capsys):
    from engine.cli import main
    (tmp_path / "zoo-mlp-digits-0123456789" / "generations" / "gen-30c87e6f61").mkdir(parents=True)
    assert main(["show", "gen-30c87e6f61", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generation of the zoo zoo-mlp-digits-0123456789" in err
    assert "lottery show zoo-mlp-digits-0123456789" in err


def test_the_same_compare_resumes_a_sweep_stored_with_flags_now_refused(tmp_path, capsys):
    """`lottery compare` before the unread rule gave every run each typed setting (snip's run kept --rewind iter:2
    and --prune-fraction 0.5). Its own command then refused the flags (`--methods snip`: 'leave it out', and
    leaving them out named another run) or silently trained snip again under a second id (`--methods snip,imp`,
    imp reading both). A stored run of the sweep is reused, as `lottery run` reuses one; else refused as before."""
    runs = tmp_path / "runs"
    old_snip = RunConfig.from_dict({"data": {"dataset": "digits"}, "train": {"epochs": 1},
                                    "prune": {"method": "snip", "density": 0.5, "controls": [], "rewind": "iter:2",
                                              "prune_fraction": 0.5}})
    engine.run(old_snip, runs_dir=runs)
    flags = [*TINY, "--rewind", "iter:2", "--prune-fraction", "0.5", "--seeds", "1", "--json", "--runs-dir", str(runs)]
    assert main(["compare", "--methods", "snip", "--densities", "0.5", *flags]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["rows"][0]["runs"] == [old_snip.run_id]
    # said, not silent: what the runs it trains anew leave out
    note, = [line for line in out.err.splitlines() if line.startswith("note: ")]
    assert "--rewind iter:2" in note and "--prune-fraction 0.5" in note and "trains anew leave them out" in note
    assert main(["compare", "--methods", "snip,imp", "--densities", "0.5", *flags]) == 0
    rows = {r["method"]: r["runs"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["snip"] == [old_snip.run_id]
    assert sorted(p.name for p in runs.iterdir()) == sorted([old_snip.run_id, *rows["imp"]])  # snip not trained again
    assert main(["compare", "--methods", "snip", "--densities", "0.3", *flags]) == 2  # no such run stored: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snip" in err and "so it never reads --prune-fraction" in err, err
