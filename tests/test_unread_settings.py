"""Which shared run settings each method's runs read (engine.settings.unread_because, from each MethodSpec).

The table below is the audit of the code (each method module, engine.structured and the runner): a setting is
read where a run's result can depend on it. `lottery run` refuses a flag its method never reads (one line
naming flag, method and why) before anything is checked, loaded or written; the app's launch panel and the
notebook launcher hide it and do not send it; runs stored with such a field keep their id, list, show and resume.
"""
import json

import pytest

import engine
from engine.cli import build_parser, main, run_config
from engine.registry import METHODS
from engine.settings import READ_BY_MODEL, READ_UNDER, READ_UNDER_VALUES, read_by

from conftest import tiny

CORE = ("levels", "prune_fraction", "output_fraction", "scope", "pattern", "nm", "refill", "channel_score", "rewind",
        "density", "controls")
IMP_STEP = {"prune_fraction", "output_fraction", "scope", "rewind", "controls"}  # a magnitude step, then rewound
PAI = {"scope", "pattern", "nm", "channel_score", "density", "controls"}  # selected at init to --density
SEARCH = {"scope", "pattern", "rewind", "density", "controls"}  # a searched mask's top --density, rewound
STRONG = {"scope", "pattern", "density"}  # a supermask over theta_0, never trained: no controls
READS = {
    "imp": IMP_STEP | {"levels", "pattern", "nm", "refill", "channel_score"},
    # its output layer is pruned where IMP would leave it: (1 - output fraction)^(levels at --prune-fraction), under
    # --pattern nm min(--levels, M - N) levels (MethodSpec.read_under; not read under other patterns)
    "oneshot": IMP_STEP | {"levels", "pattern", "nm", "refill", "channel_score", "density"},
    "bayes-imp": IMP_STEP | {"levels", "pattern"},
    "bert-imp": IMP_STEP - {"output_fraction"} | {"levels", "pattern"},  # of the ORIGINAL weights, output too
    "transfer": {"pattern", "rewind", "controls"},  # the --mask-from mask as it is
    **dict.fromkeys(["snip", "grasp", "synflow", "magnitude", "random"], PAI),
    "cs": SEARCH, "cts": SEARCH,
    "rigl": PAI - {"nm", "channel_score"}, "set": PAI - {"nm", "channel_score"},
    "earlybird": SEARCH | {"prune_fraction", "output_fraction"},  # IMP's output density, as oneshot
    "lota": {"scope", "pattern", "density"},
    "ks-lottery": {"scope", "pattern"},  # --ks-top-k rows; scope: its one allowed value, global
    "partial-lora": {"pattern", "density"},
    "edgepopup": STRONG, "biprop": STRONG,
}


def test_the_rule_says_exactly_which_shared_settings_each_method_reads():
    assert sorted(READS) == sorted(METHODS.names())  # a new method: audit it and add its row
    wrong = {(m, name) for m in READS for name in CORE if read_by("prune." + name, m) != (name in READS[m])}
    assert not wrong, sorted(wrong)
    assert all(read_by(path, m) for m in READS for path in ("train.epochs", "model.model", "data.dataset", "seed"))
    watched = {p for _, spec in METHODS.items() for under in [*spec.read_under.values(),
                                                               *(u for u, _ in spec.unread_under.values())]
               for p in under}
    watched |= {p for under in READ_UNDER.values() for p in under} | {owner for owner, _, _ in READ_BY_MODEL.values()}
    assert watched == set(READ_UNDER_VALUES)  # the forms watch them


# (flag, value, a method that never reads it, a method that does)
REFUSED = [
    ("--density", "0.5", "ks-lottery", "oneshot"),
    ("--density", "0.5", "transfer", "lota"),
    ("--prune-fraction", "0.5", "snip", "imp"),
    ("--prune-fraction", "0.5", "cs", "earlybird"),
    ("--output-fraction", "0.0", "bert-imp", "oneshot"),
    ("--output-fraction", "0.0", "rigl", "bayes-imp"),
    ("--rewind", "iter:2", "snip", "cs"),
    ("--rewind", "lr", "edgepopup", "transfer"),
    ("--rewind", "iter:2", "lota", "bert-imp"),
    ("--rewind", "iter:2", "partial-lora", "cts"),
    ("--nm", "2:8", "cs", "snip --pattern nm"),
    ("--channel-score", "bn", "rigl", "imp --refill refill"),
    # read only under another setting's value (engine.settings.READ_UNDER)
    ("--nm", "2:8", "imp", "imp --pattern nm"),
    ("--channel-score", "bn", "oneshot", "oneshot --pattern channel"),
    ("--levels", "1", "oneshot", "oneshot --pattern nm"),
    ("--refill", "refill", "snip", "oneshot"),
    ("--scope", "global", "transfer", "cs"),
    ("--scope", "global", "partial-lora", "bert-imp"),
]


@pytest.mark.parametrize("flag,value,method,reader", REFUSED)
def test_a_flag_the_method_never_reads_is_refused_in_one_line_and_a_reader_takes_it(tmp_path, capsys, flag, value,
                                                                                    method, reader):
    """Each entered the config and changed the run id of a run it did nothing to (ks-lottery and transfer
    were said to read --density), or was refused by the config with 'allows: none' (--refill)."""
    runs = tmp_path / "runs"
    assert main(["run", "--method", method, flag, value, "--epochs", "1", "--runs-dir", str(runs), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {flag}: '{value}'"), err
    assert f" {method} " in err and f"so it never reads {flag}" in err, err
    assert not runs.exists() or not any(runs.iterdir())
    reader = ["--method", *reader.split()]
    cfg = run_config(build_parser().parse_args(["run", *reader, flag, value]))
    assert str(getattr(cfg.prune, flag[2:].replace("-", "_"))) == value
    assert cfg.run_id != run_config(build_parser().parse_args(["run", *reader])).run_id


def test_compare_refuses_a_flag_none_of_its_methods_reads(tmp_path, capsys):
    assert main(["compare", "--methods", "snip,rigl", "--densities", "0.5", "--rewind", "iter:2", "--epochs", "1",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rewind" in err and "no method of --methods snip,rigl reads it" in err
    assert "snip starts its tickets from theta_0" in err


@pytest.fixture(scope="module")
def stored_before(tmp_path_factory):
    """Runs stored (through the Python API, as before this rule) with settings their method never reads."""
    runs = tmp_path_factory.mktemp("stored") / "runs"
    snip = tiny(**{"prune.method": "snip", "prune.density": 0.5, "prune.rewind": "iter:2", "prune.prune_fraction": 0.5,
                   "prune.output_fraction": 0.0, "train.epochs": 1})
    engine.run(snip, runs_dir=runs)
    transfer = tiny(**{"prune.method": "transfer", "prune.mask_from": str(runs / snip.run_id), "prune.density": 0.3,
                       "prune.scope": "global", "prune.nm": "2:8", "train.epochs": 1})
    edgepopup = tiny(**{"prune.method": "edgepopup", "prune.density": 0.5, "prune.rewind": "iter:2",
                        "prune.channel_score": "bn", "prune.refill": "none", "train.epochs": 1})
    imp = tiny(**{"prune.levels": 1, "prune.nm": "2:8", "prune.channel_score": "bn", "train.epochs": 1})  # unstructured
    for cfg in (transfer, edgepopup, imp):
        engine.run(cfg, runs_dir=runs)
    return runs, [snip, transfer, edgepopup, imp]


def test_runs_stored_with_settings_their_method_never_reads_keep_their_id_list_show_and_resume(stored_before, capsys):
    runs, configs = stored_before
    assert main(["list", "--runs-dir", str(runs)]) == 0
    listed = capsys.readouterr().out
    for cfg in configs:
        assert cfg.run_id in listed
        assert main(["show", cfg.run_id, "--runs-dir", str(runs)]) == 0 and cfg.run_id in capsys.readouterr().out
        assert main(["run", "--config", str(runs / cfg.run_id / "config.json"), "--runs-dir", str(runs), "--json",
                     "--quiet"]) == 0
        resumed = json.loads(capsys.readouterr().out)
        assert resumed["run_id"] == cfg.run_id and resumed["status"] == "completed"
    snip = configs[0]
    assert snip.run_id != snip.replace(**{"prune.rewind": "init"}).run_id  # stored configs are not rewritten


def test_launch_forms_hide_and_do_not_send_what_the_chosen_method_never_reads(tmp_path):
    """--rewind with snip (a PRIMARY widget), --density with transfer and ks-lottery's unread settings."""
    from explorer.launch import LaunchPanel
    from explorer.widgets import Launcher

    panel, notebook = LaunchPanel(str(tmp_path / "runs")), Launcher(str(tmp_path / "runs"))

    def ids(method, path, value):
        panel.set_values(**{"prune.method": method, path: value})
        notebook.fields["prune.method"].value, notebook.fields[path].value = method, value
        assert panel.config().run_id == notebook.config().run_id
        return panel.config().run_id

    assert ids("snip", "prune.rewind", "iter:2") == ids("snip", "prune.rewind", "init")
    assert ids("cs", "prune.rewind", "iter:2") != ids("cs", "prune.rewind", "init")
    assert ids("transfer", "prune.density", 0.3) == ids("transfer", "prune.density", 0.1)
    assert ids("snip", "prune.prune_fraction", 0.5) == ids("snip", "prune.prune_fraction", 0.2)
    panel.set_values(**{"prune.method": "snip"})
    notebook.fields["prune.method"].value = "snip"
    for path in ("prune.rewind", "prune.prune_fraction"):
        assert not panel.widgets[path].visible and notebook.fields[path].layout.display == "none"
    assert panel.widgets["prune.scope"].visible and notebook.fields["prune.scope"].layout.display is None
    panel.set_values(**{"prune.method": "imp"})
    assert panel.widgets["prune.rewind"].visible and panel.widgets["prune.prune_fraction"].visible


# ---------------------------------------------------------------- compare: each method's run gets what it reads
@pytest.mark.parametrize("as_config", [False, True])  # the CLI's typed flags; the app's launch panel's config
def test_compare_gives_each_method_only_the_settings_it_reads(as_config):
    """`compare --methods imp,snip --rewind iter:2` (and the app's leaderboard, from a launch panel with imp and
    --rewind iter:2) gave snip's run the rewind it never reads: a second id for plain snip's computation."""
    from engine.compare import _config

    typed = {"prune.rewind": "iter:2", "prune.synflow_rounds": 5, "prune.scope": "global", "train.epochs": 1}
    base = engine.settings.config_from_settings(typed) if as_config else typed
    plain_snip = _config({"train.epochs": 1, "prune.scope": "global"}, "snip", 0, 0.5, None)
    assert _config(base, "snip", 0, 0.5, None).run_id == plain_snip.run_id
    plain_transfer = _config({"train.epochs": 1, "prune.rewind": "iter:2"}, "transfer", 0, None, None)
    assert _config(base, "transfer", 0, 0.2, None).run_id == plain_transfer.run_id  # no scope, no density
    synflow = _config(base, "synflow", 0, 0.5, None)
    assert synflow.prune.synflow_rounds == 5 and synflow.prune.rewind == "init" and synflow.prune.scope == "global"
    cs = _config(base, "cs", 0, 0.5, None)
    assert cs.prune.rewind == "iter:2" and cs.prune.synflow_rounds == 100 and cs.prune.scope == "global"


def test_compare_trains_one_run_of_a_method_that_never_reads_the_density(stored_before, tmp_path):
    """transfer fine-tunes the --mask-from mask whatever --densities says: one run serves every target (it
    trained one per density, the same computation under as many ids)."""
    runs, configs = stored_before
    mask_from = str(runs / configs[0].run_id)
    out = engine.compare.compare({"prune.mask_from": mask_from, "train.epochs": 1, "prune.controls": ("reinit",),
                                  "device": "cpu"}, ["transfer"], [0.5, 0.2], 1, runs_dir=tmp_path / "runs")
    assert out["status"] == "completed" and [r["target_density"] for r in out["rows"]] == [0.5, 0.2]
    assert len({run for r in out["rows"] for run in r["runs"]}) == 1
    assert len([d for d in (tmp_path / "runs").iterdir() if d.is_dir()]) == 1


def test_nm_and_channel_score_are_read_only_under_the_pattern_or_refill_that_uses_them(tmp_path, capsys):
    """`--method imp --nm 2:8` without --pattern nm (or --channel-score bn without --pattern channel or --refill
    refill) pruned exactly as plain imp, under another id. The forms show --nm once --pattern nm is chosen."""
    from explorer.launch import LaunchPanel
    from explorer.widgets import Launcher

    assert main(["compare", "--methods", "imp,oneshot", "--densities", "0.5", "--nm", "2:8", "--epochs", "1",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this imp run has --pattern unstructured" in err, err
    panel, notebook = LaunchPanel(str(tmp_path / "runs")), Launcher(str(tmp_path / "runs"))
    panel.more.collapsed = False  # the card's widgets are made when it is first opened
    assert not panel.widgets["prune.nm"].visible and notebook.fields["prune.nm"].layout.display == "none"
    plain = panel.config().run_id
    panel.set_values(**{"prune.nm": "2:8"})
    assert panel.config().run_id == plain  # not sent under --pattern unstructured
    panel.set_values(**{"prune.pattern": "nm"})
    notebook.fields["prune.pattern"].value = "nm"
    assert panel.widgets["prune.nm"].visible and notebook.fields["prune.nm"].layout.display is None
    assert panel.config().prune.nm == "2:8"
    panel.set_values(**{"prune.pattern": "unstructured", "prune.refill": "refill"})
    assert panel.widgets["prune.channel_score"].visible and not panel.widgets["prune.nm"].visible
    panel.set_values(**{"prune.method": "oneshot", "prune.refill": "none"})  # oneshot: --levels under nm only
    assert not panel.widgets["prune.levels"].visible
    panel.set_values(**{"prune.pattern": "nm"})
    assert panel.widgets["prune.levels"].visible
