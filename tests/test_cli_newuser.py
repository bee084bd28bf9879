"""What a new user of the newer families (zoos and generations, foundation-model tickets, Bayesian tickets) runs
into on the command line: tables that line up, `lottery run` printing what `lottery show` prints, flags of
another method, output piped into `head`."""
from engine.compare import format_table


def _board(methods: list[str]) -> dict:
    rows = [{"method": m, "target_density": 0.2, "density": 0.2, "test_accuracy_mean": 0.9 - i / 100,
             "test_accuracy_std": 0.01, "seeds": 2, "search_steps": 1200.0, "search_seconds": 3.5,
             "control_deltas": {"reinit": -0.02}, "runs": [f"{m}-x"]} for i, m in enumerate(methods)]
    return {"status": "completed", "model": "bert-tiny", "dataset": "pydoc-topics", "seeds": 2,
            "densities": [0.2], "methods": methods, "rows": rows}


def test_compare_table_columns_line_up_with_long_method_names():
    """`lottery compare --methods imp,partial-lora,bayes-imp-...`: a name longer than 10 characters pushed its
    row's columns right of the header's."""
    lines = format_table(_board(["imp", "partial-lora", "ks-lottery", "a-very-long-method-name"])).splitlines()
    header, rows = lines[1], lines[2:]
    for column in ("target", "density", "search s"):
        end = header.rindex(column) + len(column)  # right-aligned columns: every row's value ends there
        for row in rows:
            assert row[end - 1] != " " and (end == len(row) or row[end] == " "), (column, header, row)


BAYES = ["--method", "bayes-imp", "--bayesian", "--model", "mlp", "--hidden", "16,16", "--mc-samples", "2",
         "--epochs", "1", "--levels", "1", "--controls", "reinit", "--device", "cpu", "--quiet"]


def test_run_prints_what_show_prints_bayesian_uncertainty_included(tmp_path, capsys):
    """`lottery run --method bayes-imp` printed the level table only, and its --json had no "analyses": the NLL
    and ECE the run had stored (and `lottery show` printed) were nowhere in what the run itself said."""
    import json

    from engine.cli import main

    runs = str(tmp_path / "runs")
    assert main(["run", *BAYES, "--runs-dir", runs, "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert main(["show", ran["run_id"], "--runs-dir", runs, "--json"]) == 0
    assert ran == json.loads(capsys.readouterr().out)
    assert "uncertainty" in ran["analyses"]
    assert main(["run", *BAYES, "--runs-dir", runs]) == 0  # resumes: nothing trains, the same text
    ran_text = capsys.readouterr().out
    assert main(["show", ran["run_id"], "--runs-dir", runs]) == 0
    assert ran_text == capsys.readouterr().out
    assert "NLL" in ran_text and "ECE" in ran_text


def test_list_columns_line_up_with_long_run_ids(tmp_path, capsys):
    """`lottery list` padded run ids to 44 characters; a partial-lora run on pydoc-modules has 46, so its status
    and summary sat two columns right of the others'."""
    from engine.cli import main
    from engine.store import write_json

    runs = tmp_path / "runs"
    ids = ["imp-lenet300-digits-0123456789", "partial-lora-bert-tiny-pydocmodules-0123456789"]
    for run_id in ids:
        write_json(runs / run_id / "config.json", {})
        write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp",
                                                    "dense": None, "levels": [], "controls": {}})
    assert main(["list", "--runs-dir", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index("completed") for line in lines}) == 1, lines


def test_another_methods_flag_on_run_is_one_line_naming_flag_and_method(tmp_path, capsys):
    """`lottery run --method imp --synflow-rounds 5` trained an imp run whose id differed from plain imp's (the
    option went into its config and id) though imp never reads it; now one line names the flag and its method,
    and nothing is stored."""
    from engine.cli import main

    runs = tmp_path / "runs"
    for flags, needle in [(["--method", "imp", "--synflow-rounds", "5"], "--synflow-rounds: '5'"),
                          (["--bayes-criterion", "snr"], "--bayes-criterion: 'snr'"),
                          (["--method", "rigl", "--no-ks-baselines"], "--ks-baselines: False"),
                          (["--method", "set", "--search-epochs", "1"], "--search-epochs: '1'")]:
        assert main(["run", *flags, "--epochs", "1", "--runs-dir", str(runs), "--quiet"]) == 2  # (rigl: no --levels)
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and "method" in err, err
        assert not runs.exists() or not any(runs.iterdir())
    # the flag's own method, and methods that share its options class, take it
    assert main(["run", "--method", "set", "--dst-interval", "5", "--density", "0.5", "--epochs", "1",
                 "--controls", "none", "--runs-dir", str(runs), "--quiet"]) == 0


def test_compare_refuses_a_flag_of_no_compared_method(tmp_path, capsys):
    """compare passes its flags to every run; one that no compared method reads would only change run ids."""
    from engine.cli import main

    assert main(["compare", "--methods", "imp,snip", "--lora-rank", "4", "--runs-dir", str(tmp_path / "runs"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--lora-rank: '4' is not valid; an option of partial-lora only" in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(tmp_path):
    """`lottery list --json | head -3` printed "error: unexpected BrokenPipeError ... rerun with --debug" once
    head had its lines (as did `lottery zoo ... --json | head`)."""
    import subprocess
    import sys

    from engine.store import write_json

    runs = tmp_path / "runs"
    write_json(runs / "imp-lenet300-digits-0123456789" / "config.json", {})
    child = subprocess.Popen([sys.executable, "-m", "engine.cli", "list", "--json", "--runs-dir", str(runs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # the reader is gone before the command writes (it takes seconds to import)
    err = child.stderr.read()
    assert child.wait(timeout=120) in (0, 141) and err == "", err


def test_a_broken_pipe_that_is_not_the_output_is_still_a_one_line_error(tmp_path, capsys, monkeypatch):
    """Only the reader of the output going away ends a command quietly: a worker's pipe breaking is an error."""
    import engine.cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(engine.cli, "cmd_list", broken)
    assert engine.cli.main(["list", "--runs-dir", str(tmp_path)]) == 1
    assert "error: unexpected BrokenPipeError" in capsys.readouterr().err


def test_analysis_errors_name_the_flag_typed(tmp_path, capsys):
    """`lottery analyze RUN instability --rewind-points 0,0` said "rewind_points: (0, 0) is not valid": the
    analysis's own check names its field, while the same command's other errors name the flag (--points)."""
    from engine.cli import main

    runs = str(tmp_path / "runs")
    assert main(["run", "--epochs", "1", "--levels", "1", "--controls", "none", "--device", "cpu",
                 "--runs-dir", runs, "--json", "--quiet"]) == 0
    run_id = __import__("json").loads(capsys.readouterr().out)["run_id"]
    for args, needle in [(["--rewind-points", "0,0"], "--rewind-points: (0, 0) is not valid"),
                         (["--rewind-points", "0,99999"], "--rewind-points: (0, 99999) is not valid"),
                         (["--points", "1"], "--points: 1 is not valid")]:
        assert main(["analyze", run_id, "instability", *args, "--runs-dir", runs]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: " + needle) and err.count("\n") == 1, err


def test_summary_table_lines_up_with_long_control_names():
    """bert-imp's README command (--controls random,start-magnitude) printed the start-magnitude columns
    narrower than their headers: values sat under the wrong words."""
    from engine.formatting import format_summary

    row = {"density": 0.9, "test_accuracy": 0.5, "val_accuracy": 0.5, "early_stop_iteration": 10,
           "train_seconds": 1.0}
    s = {"run_id": "bert-imp-x", "status": "completed", "method": "bert-imp", "model": "bert-tiny",
         "dataset": "pydoc-topics", "seed": 0, "dense": {"level": 0, **row}, "levels": [{"level": 1, **row}],
         "controls": {"random": [{"level": 1, **row}], "start-magnitude": [{"level": 1, **row}]}}
    header, *rows = format_summary(s).splitlines()[1:]
    for column in ("random acc", "random stop", "start-magnitude acc", "start-magnitude stop"):
        end = header.index(column) + len(column)
        for r in rows:
            assert r[end - 1] != " " and (end == len(r) or r[end] == " "), (column, header, r)


def test_run_of_a_global_only_method_needs_no_scope_flag():
    """`lottery run --method ks-lottery --model bert-tiny --dataset pydoc-topics` failed with "prune.scope:
    'layerwise' is not valid; method ks-lottery allows: global", a value the user never typed (compare already
    uses such a method's own scope). Without --scope (flag, preset or --config) the method's first scope applies;
    the run id is the one `--scope global` gives, and a scope typed is still checked."""
    import pytest

    from engine.cli import build_parser, run_config
    from engine.errors import ConfigError

    def config(*flags):
        return run_config(build_parser().parse_args(["run", *flags]))

    for method in ("ks-lottery", "lota"):
        text = ["--method", method, "--model", "bert-tiny", "--dataset", "pydoc-topics"]
        assert config(*text).prune.scope == "global"
        assert config(*text).run_id == config(*text, "--scope", "global").run_id
        with pytest.raises(ConfigError, match="prune.scope: 'layerwise'"):
            config(*text, "--scope", "layerwise")
    assert config().prune.scope == "layerwise" and config().run_id == config("--scope", "layerwise").run_id


def test_json_output_of_a_diverged_run_is_valid_json(tmp_path, capsys):
    """`lottery run --lr 10 --optimizer sgd --json` (a diverged run: NaN losses, a Bayesian run's NaN NLL/ECE)
    printed NaN, which is not JSON (jq, JSON.parse and json.loads(parse_constant=...) refuse it); --json prints
    null for a number that is not finite."""
    import json
    import math

    from engine.cli import main
    from engine.store import write_json

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    runs = tmp_path / "runs"
    run_id = "imp-lenet300-digits-0123456789"
    level = {"level": 1, "density": 0.8, "test_accuracy": 0.1, "val_accuracy": 0.1, "early_stop_iteration": 1,
             "train_seconds": 0.1, "test_loss": math.nan, "val_loss": math.inf}
    write_json(runs / run_id / "config.json", {})
    write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp",
                                                "model": "lenet300", "dataset": "digits", "seed": 0,
                                                "dense": {**level, "level": 0}, "levels": [level], "controls": {}})
    write_json(runs / run_id / "analyses" / "uncertainty.json", {"analysis": "uncertainty", "nll": [-math.inf]})
    assert main(["show", run_id, "--runs-dir", str(runs), "--json"]) == 0
    shown = strict(capsys.readouterr().out)
    assert shown["levels"][0]["test_loss"] is None and shown["levels"][0]["val_loss"] is None
    assert shown["analyses"]["uncertainty"]["nll"] == [None] and shown["levels"][0]["density"] == 0.8


def test_run_with_a_zoos_config_says_it_is_a_zoo(tmp_path, capsys):
    """`lottery run --config runs/ZOO_ID/config.json` said "kind: 'zoo' is not valid; unknown field": the user
    gave a file, not a field called kind."""
    from engine.cli import main
    from engine.store import write_json

    path = tmp_path / "config.json"
    write_json(path, {"kind": "zoo", "zoo": {"members": 4}, "config": {}})
    assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config: '{path}' is not valid;") and "lottery zoo" in err, err


def test_a_mistyped_run_id_suggests_the_nearest_stored_one(tmp_path, capsys):
    """`lottery show bayes-imp-mlp-digits-0ee1d1bfe` (a character lost in copying) said only "no such run"."""
    from engine.cli import main
    from engine.store import write_json

    runs = tmp_path / "runs"
    for run_id in ("bayes-imp-mlp-digits-0ee1d1bfe1", "imp-mlp-digits-bd7d3f5ccf"):
        write_json(runs / run_id / "config.json", {})
    assert main(["show", "bayes-imp-mlp-digits-0ee1d1bfe", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "no such run" in err and "did you mean bayes-imp-mlp-digits-0ee1d1bfe1?" in err and err.count("\n") == 1
    assert main(["show", "zzz", "--runs-dir", str(runs)]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_barrier_of_a_run_without_controls_says_what_is_missing(tmp_path, capsys):
    """`lottery analyze RUN barrier` on a `--controls none` run said "--against: None is not valid; trained
    variants at level 1: none", about a flag the user never typed."""
    import json

    from engine.cli import main

    runs = str(tmp_path / "runs")
    assert main(["run", "--epochs", "1", "--levels", "1", "--controls", "none", "--device", "cpu",
                 "--runs-dir", runs, "--json", "--quiet"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["analyze", run_id, "barrier", "--runs-dir", runs]) == 2  # (bad input: the run cannot be analysed so)
    err = capsys.readouterr().err
    assert "None" not in err and "--level" not in err and "no controls" in err and f"lottery analyze {run_id} sanity" in err, err
