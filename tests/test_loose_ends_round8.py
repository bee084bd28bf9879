"""Loose ends of the unread-settings rule and of the CLI (round 8): each test failed before its fix."""
import json

from engine.cli import build_parser, main, run_config

from conftest import stored_by_cli, tiny


def _cfg(*argv):
    return run_config(build_parser().parse_args(["run", *argv]))


# ---------------------------------------------------------------- 1. presets and --config files
def test_a_preset_setting_the_method_never_reads_goes_back_to_its_default_with_one_note(tmp_path, capsys):
    """`lottery run --preset stability-story --method snip` stored snip's run with the preset's `rewind iter:20`,
    which snip never reads: the same computation as plain snip at those settings under a second id."""
    flags = ["--method", "snip", "--model", "mlp", "--epochs", "1", "--controls", "none", "--quiet", "--json"]
    assert main(["run", "--preset", "stability-story", *flags, "--runs-dir", str(tmp_path / "runs")]) == 0
    summary = json.loads(capsys.readouterr().out)
    stored = json.loads((tmp_path / "runs" / summary["run_id"] / "config.json").read_text())
    assert stored["prune"]["rewind"] == "init" and stored["train"]["lr"] == 0.1  # what snip reads stays
    plain = _cfg("--dataset", "digits", "--model", "mlp", "--width", "0.5", "--optimizer", "sgd", "--lr", "0.1",
                 "--momentum", "0.9", "--batch-size", "32", *flags[:-2])
    assert summary["run_id"] == plain.run_id
    assert _cfg("--preset", "stability-story").prune.rewind == "iter:20"  # imp reads it


def test_the_preset_note_is_one_line_naming_preset_setting_and_why(capsys):
    _cfg("--preset", "stability-story", "--method", "snip")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "stability-story" in err and "--rewind iter:20" in err and "so it never reads --rewind" in err, err
    _cfg("--preset", "stability-story")
    assert capsys.readouterr().err == ""  # imp reads every setting of the preset


def test_a_config_file_naming_a_setting_the_method_never_reads_is_refused_in_one_line(tmp_path, capsys):
    """`lottery run --config imp_run/config.json --method snip` (or a hand-written file) carried the file's
    `rewind iter:2` into a new snip run id, where the typed `--rewind iter:2` is refused."""
    path = tmp_path / "mine.json"
    for config in ({"prune": {"rewind": "iter:2"}}, {"prune": {"method": "snip", "rewind": "iter:2"}}):
        path.write_text(json.dumps(config))
        runs = tmp_path / "runs"
        argv = ["run", "--config", str(path), "--epochs", "1", "--runs-dir", str(runs), "--quiet"]
        assert main([*argv, *([] if "method" in config["prune"] else ["--method", "snip"])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --rewind: 'iter:2'"), err
        assert "--config" in err and "snip starts its tickets from theta_0" in err, err
        assert not runs.exists()
    path.write_text(json.dumps({"prune": {"synflow_rounds": 5}}))  # another method's option
    assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--synflow-rounds" in err and "synflow" in err, err
    path.write_text(json.dumps({"prune": {"rewind": "iter:2"}}))
    assert _cfg("--config", str(path)).prune.rewind == "iter:2"  # imp reads it


# ---------------------------------------------------------------- 2. oneshot under --pattern nm never reads --density
def test_oneshot_under_nm_never_reads_the_density_and_compare_trains_it_once(tmp_path, capsys):
    """Its hidden layers keep N of every M (--nm), its output layer IMP's min(--levels, M - N) levels: the rule
    said it read --density, so `compare --methods oneshot --pattern nm --densities 0.1,0.3` trained the same
    computation twice."""
    from engine.settings import read_by

    assert not read_by("prune.density", "oneshot", {"prune.pattern": "nm"})
    assert read_by("prune.density", "oneshot", {"prune.pattern": "channel"}) and read_by("prune.density", "oneshot")
    runs = tmp_path / "runs"
    assert main(["run", "--method", "oneshot", "--pattern", "nm", "--density", "0.3", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "oneshot" in err and "so it never reads --density" in err, err
    assert main(["compare", "--methods", "oneshot", "--pattern", "nm", "--densities", "0.1,0.3", "--seeds", "1",
                 "--epochs", "1", "--controls", "none", "--runs-dir", str(runs), "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["target_density"] for r in rows] == [0.1, 0.3] and len({r["runs"][0] for r in rows}) == 1
    assert len([d for d in runs.iterdir() if d.is_dir()]) == 1


# ---------------------------------------------------------------- 3. READ_UNDER_VALUES derived from the declarations
def test_the_settings_the_forms_watch_follow_every_methods_declarations():
    """READ_UNDER_VALUES was written out by hand beside READ_UNDER and the methods' read_under: a method declaring
    a setting read under another's value (here --levels under --scope global) went unwatched by the forms."""
    import engine.settings as S
    from engine.registry import METHODS, MethodSpec

    METHODS.register("toy-under", "a test's toy method")(MethodSpec(
        lambda ctx: None, read_under={"prune.levels": {"prune.scope": ("global",)}},
        unread_under={"prune.density": ({"prune.controls": ((),)}, "trains nothing")}))
    try:
        assert {"prune.scope", "prune.controls", "prune.pattern", "prune.refill"} <= set(S.READ_UNDER_VALUES)
    finally:
        METHODS.unregister("toy-under")
    assert "prune.scope" not in S.READ_UNDER_VALUES


# ---------------------------------------------------------------- 4. compare's pre-check skips stored runs
def test_compare_checks_only_the_runs_it_will_train_before_training(tmp_path, monkeypatch):
    """Its requirement pre-check loaded the data set and built a model even when every planned run was stored
    (the leaderboard asked again, the app's Leaderboard tab reopened): only the stored runs' own reads remain."""
    import engine
    import engine.data

    loads = []
    real = engine.data.load
    monkeypatch.setattr(engine.data, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    base = {"train.epochs": 1, "prune.controls": (), "device": "cpu"}
    first = engine.compare.compare(base, ["snip", "magnitude"], [0.5], 1, runs_dir=tmp_path / "runs")
    assert first["status"] == "completed" and len(loads) == 3  # the pre-check's, then each run's
    loads.clear()
    again = engine.compare.compare(base, ["snip", "magnitude"], [0.5], 1, runs_dir=tmp_path / "runs")
    assert again["rows"] == first["rows"] and len(loads) == 2  # each stored run's resume reads it; no pre-check
    loads.clear()
    third = engine.compare.compare(base, ["snip", "magnitude", "random"], [0.5], 1, runs_dir=tmp_path / "runs")
    assert third["status"] == "completed" and len(loads) == 4  # random is new: it is checked before training


# ---------------------------------------------------------------- 5. zoos and replays of runs that never read a setting
def test_a_ticket_zoo_of_a_pruning_at_init_run_starts_where_its_ticket_started(tmp_path, capsys):
    """A snip run stored with `rewind iter:5` (through the Python API, before the unread rule) trained its ticket
    from theta_0 at step 0; its zoo's members started from the dense net's step-5 weights at step 5."""
    import engine
    from engine.zoo import load_zoo

    runs = tmp_path / "runs"
    snip = tiny(**{"prune.method": "snip", "prune.density": 0.3, "prune.rewind": "iter:5", "model.model": "mlp",
                   "model.hidden": (24,), "prune.controls": (), "train.epochs": 1, "train.batch_size": 100})
    engine.run(snip, runs_dir=runs)
    assert main(["zoo", "--ticket", snip.run_id, "--members", "2", "--runs-dir", str(runs), "--json"]) == 0
    zoo = load_zoo(runs, json.loads(capsys.readouterr().out)["run_id"])
    assert {m["start_step"] for m in zoo.members} == {0}


def test_earlybird_replay_reads_the_output_policy_only_from_a_run_whose_method_read_it(tmp_path, capsys):
    """`lottery analyze SNIP_RUN earlybird-replay --density 0.2` took the output layer's density from the run's
    stored --prune-fraction and --output-fraction, which snip never reads (a run stored before the unread rule may
    hold any value): two snip runs of one computation replayed differently. Such a run's values are the defaults'
    as every snip run stores them now; a run whose method read them (imp) keeps its own."""
    import engine

    runs = tmp_path / "runs"
    plain = tiny(**{"prune.method": "snip", "model.model": "mlp", "model.hidden": (24,), "prune.controls": ()})
    odd = plain.replace(**{"prune.output_fraction": 0.0, "prune.prune_fraction": 0.5})
    imp = plain.replace(**{"prune.method": "imp", "prune.output_fraction": 0.0, "prune.levels": 1})
    replays = []
    for cfg in (plain, odd, imp):
        engine.run(cfg, runs_dir=runs)
        assert main(["analyze", cfg.run_id, "earlybird-replay", "--density", "0.2", "--runs-dir", str(runs),
                     "--json"]) == 0
        replays.append(json.loads(capsys.readouterr().out)["distance_matrix"])
    assert replays[0] == replays[1] and replays[2] != replays[0]


# ---------------------------------------------------------------- 6. list shows seed and lr; analyze RUN --json NAME
def _stored(runs, run_id, **summary):
    from engine.store import write_json

    write_json(runs / run_id / "config.json", {})
    write_json(runs / run_id / "summary.json", {"run_id": run_id, "status": "completed", "method": "imp", "seed": 0,
                                                "config": {}, "dense": None, "levels": [], "controls": {}, **summary})


def test_list_shows_seed_and_lr_where_the_listed_runs_differ_in_them(tmp_path, capsys):
    """Runs differing only in seed or learning rate listed alike: id hash, status and last level only."""
    runs = tmp_path / "runs"
    _stored(runs, "imp-lenet300-digits-000000000a")
    _stored(runs, "imp-lenet300-digits-000000000b", seed=1)
    _stored(runs, "imp-lenet300-digits-000000000c", seed=1, config={"train": {"lr": 0.01}})
    assert main(["list", "--runs-dir", str(runs)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert " seed 0 " in lines["imp-lenet300-digits-000000000a"] and " lr 0.0012 " in lines["imp-lenet300-digits-000000000a"]
    assert " seed 1 " in lines["imp-lenet300-digits-000000000b"] and " lr 0.01 " in lines["imp-lenet300-digits-000000000c"]
    assert len({line.index("no level yet") for line in lines.values()}) == 1, lines  # the columns line up
    alike = tmp_path / "alike"
    _stored(alike, "imp-lenet300-digits-000000000a")
    _stored(alike, "imp-lenet300-digits-000000000b")
    assert main(["list", "--runs-dir", str(alike)]) == 0
    out = capsys.readouterr().out
    assert " seed " not in out and " lr " not in out, out  # nothing to tell apart: the table stays narrow


def test_analyze_takes_json_before_the_analysis_name_too(tmp_path, capsys):
    """`lottery analyze RUN --json sanity` was refused ("unrecognized arguments: --json"), where
    `lottery analyze RUN sanity --json` and `lottery show RUN --json` take it."""
    runs, run_id = stored_run(tmp_path)
    capsys.readouterr()
    for argv in (["analyze", run_id, "--json", "persistence"], ["analyze", run_id, "persistence", "--json"]):
        assert main([*argv, "--runs-dir", str(runs)]) == 0
        assert json.loads(capsys.readouterr().out)["analysis"] == "persistence"
    assert main(["analyze", run_id, "persistence", "--runs-dir", str(runs)]) == 0
    assert not capsys.readouterr().out.startswith("{")  # without --json: the lines a person reads


def stored_run(folder):
    return stored_by_cli(folder, "run", "--model", "mlp", "--epochs", "1", "--levels", "1", "--controls", "none",
                         "--quiet")


# ---------------------------------------------------------------- 7. settings the model or data set never reads
# (flags, the model or data set that never reads it, one that does)
MODEL_UNREAD = [
    (["--width", "2"], ["--model", "bert-tiny", "--dataset", "pydoc-topics"], ["--model", "conv2"],
     "model bert-tiny is a transformer"),
    (["--init", "xavier_normal"], ["--model", "hf:./my-bert", "--dataset", "pydoc-topics", "--tokenizer",
                                   "hf:./my-bert"], ["--model", "mlp"], "model hf:./my-bert is a transformer"),
    (["--hidden", "64"], [], ["--model", "mlp"], "model lenet300 has its own layer sizes"),
    (["--max-length", "64"], ["--dataset", "digits"], ["--model", "minilm", "--dataset", "pydoc-topics"],
     "dataset digits holds no text"),
    (["--tokenizer", "hf:./my-bert"], ["--dataset", "mnist"], ["--model", "hf:./my-bert", "--dataset", "pydoc-mlm"],
     "dataset mnist holds no text"),
]


def test_a_setting_the_model_or_data_never_reads_is_refused_in_one_line_and_a_reader_takes_it(tmp_path, capsys):
    """`lottery run --model bert-tiny --dataset pydoc-topics --width 2` (a transformer keeps its encoder's sizes),
    `--hidden 64` with lenet300, `--max-length 64` on digits: each entered the config and changed the run id of a
    run it did nothing to."""
    runs = tmp_path / "runs"
    for flag, unread_by, reader, why in MODEL_UNREAD:
        assert main(["run", *unread_by, *flag, "--epochs", "1", "--runs-dir", str(runs), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {flag[0]}: '{flag[1]}'"), err
        assert why in err and f"so it never reads {flag[0]}" in err, err
        assert not runs.exists()
        if flag[0] == "--tokenizer":  # (hf:NAME reads its own tokenizer's ids only: no run without the flag)
            assert _cfg(*reader, *flag).data.tokenizer == flag[1]
        else:
            assert _cfg(*reader, *flag).run_id != _cfg(*reader).run_id
    assert main(["compare", "--methods", "imp,snip", "--densities", "0.5", "--hidden", "64", "--runs-dir",
                 str(runs)]) == 2  # one reason, not one per method
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("lenet300 has its own layer sizes") == 1, err
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": {"hidden": [64]}}))
    assert main(["run", "--config", str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hidden" in err and "--config" in err, err
    assert _cfg("--config", str(path), "--model", "mlp").model.hidden == (64,)


def test_the_launch_forms_send_no_setting_the_chosen_model_never_reads(tmp_path):
    from explorer.launch import LaunchPanel

    panel = LaunchPanel(str(tmp_path / "runs"))
    panel.set_values(**{"model.model": "mlp", "model.hidden": "64"})
    assert panel.config().model.hidden == (64,)
    panel.set_values(**{"model.model": "conv2"})
    assert panel.config().model.hidden == (256, 128)


def test_a_zoo_refuses_a_model_setting_its_architecture_never_reads(tmp_path, capsys):
    """`lottery zoo --model conv2 --hidden 64` named a second zoo of the same conv2 networks."""
    runs = tmp_path / "runs"
    assert main(["zoo", "--model", "conv2", "--hidden", "64", "--members", "2", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --hidden: '64'") and "model conv2 has its own" in err, err
    assert not runs.exists()


# ---------------------------------------------------------------- found on the way: --config files of the wrong shape
def test_a_config_file_of_the_wrong_shape_is_one_line_naming_what_is_wrong(tmp_path, capsys):
    """`lottery run --config` of a JSON list, or with "prune": 3, ended in 'unexpected AttributeError/TypeError'."""
    path = tmp_path / "bad.json"
    for blob, needle in (([1], "--config"), ({"prune": 3}, "prune: 3 is not valid; must be a mapping")):
        path.write_text(json.dumps(blob))
        assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unexpected" not in err and needle in err, err
