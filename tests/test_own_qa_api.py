"""The Python API as 'Your own model and data' shows it, with the slips a researcher makes (found by a new-user pass):
each is one line naming the field, the value and what is allowed, never a traceback from deep inside."""
import pytest
import torch
from torch import nn

import engine
from engine.cli import main

from conftest import tiny


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """(runs dir, run id) of a 1-level IMP run of Net on digits, stored through engine.run."""
    runs = tmp_path_factory.mktemp("own") / "runs"
    torch.manual_seed(0)
    summary = engine.run(tiny(**{"prune.levels": 1, "train.epochs": 1}), model=Net(), runs_dir=runs)
    return runs, summary["run_id"]


@pytest.mark.parametrize("variant,level,field,needle", [
    ("ticket", 7, "level", "completed ticket levels of run {id}: [0, 1]"),
    ("tickets", 1, "variant", "its variants: ['reinit', 'ticket']"),
    ("ticket", "1", "level", "must be an integer"),
])
def test_loading_a_level_the_run_does_not_have_names_what_it_has(own_run, variant, level, field, needle):
    # (it said the level's mask.safetensors 'is missing' and told to delete folders that do not exist; a level
    # typed as '1' was a ValueError about a format code)
    runs, run_id = own_run
    with pytest.raises(engine.ConfigError) as info:
        engine.RunStore(runs, run_id).load_level(variant, level)
    assert info.value.field == field and needle.format(id=run_id) in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_loading_from_a_run_that_does_not_exist_says_so(own_run):
    runs, run_id = own_run
    with pytest.raises(engine.ConfigError) as info:
        engine.RunStore(runs, run_id[:-1]).load_level("ticket", 1)
    assert info.value.field == "RUN_ID" and "no such run" in str(info.value), str(info.value)
    assert not (runs / run_id[:-1]).exists()


def test_the_stored_ticket_loads_back_into_the_module(own_run, tmp_path, capsys):
    runs, run_id = own_run
    mask, weights = engine.RunStore(runs, run_id).load_level("ticket", 1)
    ticket = Net()
    ticket.load_state_dict(weights)
    assert all(not ticket.state_dict()[k][~m].any() for k, m in mask.items())  # pruned weights exactly 0
    assert main(["show", run_id, "--runs-dir", str(runs)]) == 0
    assert "custom:Net on digits" in capsys.readouterr().out


@pytest.mark.parametrize("argument,value,allowed", [
    ("on_event", "print", "a function of one event"),
    ("cancel", True, "is_set()"),
])
def test_an_on_event_or_cancel_of_the_wrong_kind_is_refused_before_anything_is_stored(tmp_path, argument, value,
                                                                                       allowed):
    # (on_event="print" was a TypeError, cancel=True an AttributeError, once the run had stored its folder: a
    # 'failed' run left in the runs dir)
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(tiny(), model=Net(), runs_dir=runs, **{argument: value})
    assert info.value.field == argument and allowed in str(info.value), str(info.value)
    assert not runs.exists() or not list(runs.iterdir())


class Names(nn.Module):
    """A module naming its prunable weights itself (the README's prunable_names()), with `names` as given."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.hidden = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)
        self.scale = nn.Parameter(torch.ones(16))  # a free parameter of the module itself

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))) * self.scale)

    def prunable_names(self):
        return self.names


@pytest.mark.parametrize("names,needle", [
    (["hidden.wieght", "out.weight"], "prunable_names() gives 'hidden.wieght', which is not a parameter of it"),
    ("out.weight", "prunable_names() returns a str"),
    (None, "prunable_names() returns a NoneType"),
    ([], "prunable_names() returns no names"),
    (["hidden.weight", "hidden.weight", "out.weight"], "prunable_names() gives 'hidden.weight' twice"),
])
def test_prunable_names_slips_are_named_as_such(tmp_path, names, needle):
    # (a typo read 'is not a plain parameter (held by torch.nn.utils.prune ...)', a string was read letter by
    # letter, None and [] read 'has no Linear or Conv1d/2d/3d layer', a name twice was trained as once)
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(tiny(), model=Names(names), runs_dir=runs)
    assert info.value.field == "model" and needle in str(info.value), str(info.value)
    assert not runs.exists() or not list(runs.iterdir())


def test_a_free_parameter_named_in_prunable_names_is_pruned(tmp_path):
    # (the order check hooked the module itself for 'scale': its hook runs after every layer, and the run was
    # refused as 'its forward ends in 'scale'')
    torch.manual_seed(0)
    s = engine.run(tiny(**{"prune.controls": ()}), model=Names(["scale", "hidden.weight", "out.weight"]),
                   runs_dir=tmp_path / "runs")
    assert s["status"] == "completed" and s["levels"][-1]["layers"]["scale"] < 1


def test_prunable_names_with_the_output_layer_not_last_says_where_to_move_it(tmp_path):
    with pytest.raises(engine.ConfigError) as info:  # (it said 'create the output layer last in __init__')
        engine.run(tiny(), model=Names(["out.weight", "hidden.weight"]), runs_dir=tmp_path / "runs")
    assert "list 'out.weight' last in prunable_names()" in str(info.value), str(info.value)


def test_bayesian_with_an_own_module_says_it_converts_registry_models_only(tmp_path):
    # (it read 'reads no model.* setting: its architecture and initial weights are its own', as for --width)
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(tiny(**{"model.bayesian": True}), model=Net(), runs_dir=runs)
    assert info.value.field == "model.bayesian" and "registry models only" in str(info.value), str(info.value)
    assert not runs.exists() or not list(runs.iterdir())


def test_probe_of_an_own_module_run_is_bad_input_in_one_line(own_run, capsys):
    # (exit 1, the code of a failed run, and a line without the flag it is about)
    runs, run_id = own_run
    assert main(["probe", "--run", run_id, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --run: '{run_id}' is not valid;"), err
    assert "custom:Net" in err and "engine.probe.probe_model" in err


class BatchNormed(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.hidden(x.flatten(1)))))


def test_a_module_that_cannot_train_on_a_batch_of_the_batch_size_is_refused_up_front(tmp_path):
    # (BatchNorm1d in train mode refuses a batch of 1: the check's batch of 64 passed, and the run failed at its
    # first step with a ValueError, leaving a 'failed' run)
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(tiny(**{"train.batch_size": 1}), model=BatchNormed(), runs_dir=runs)
    message = str(info.value)
    assert info.value.field == "model" and "a batch of 1 (train.batch_size)" in message and "\n" not in message, message
    assert not runs.exists() or not list(runs.iterdir())


def test_a_damaged_level_of_an_own_module_run_says_how_to_train_it_again(own_run, tmp_path):
    # (it said only 'run the same `lottery run` command again', which cannot build an own module)
    import shutil

    runs, run_id = own_run
    shutil.copytree(runs, tmp_path / "runs")
    (tmp_path / "runs" / run_id / "levels" / "ticket" / "001" / "weights.safetensors").unlink()
    with pytest.raises(engine.LotteryError) as info:
        engine.RunStore(tmp_path / "runs", run_id).load_level("ticket", 1)
    assert "engine.run" in str(info.value), str(info.value)


def test_list_aligns_runs_of_one_level_with_runs_of_several(tmp_path, capsys):
    # (a snip run, '1 level,', beside an imp run, '2 levels,', put their densities a column apart)
    runs = tmp_path / "runs"
    for levels in (1, 2):
        torch.manual_seed(0)
        engine.run(tiny(**{"prune.levels": levels, "train.epochs": 1, "prune.controls": ()}), model=Net(),
                   runs_dir=runs)
    capsys.readouterr()
    assert main(["list", "--runs-dir", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and len({line.index("last density") for line in lines}) == 1, lines


@pytest.mark.parametrize("runs_dir", ["", 5, None])
def test_a_runs_dir_that_is_no_path_is_refused(tmp_path, monkeypatch, runs_dir):
    # ('' stored the run in the working directory, among the user's files; 5 and None were TypeErrors)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(engine.ConfigError) as info:
        engine.run(tiny(), model=Net(), runs_dir=runs_dir)
    assert info.value.field == "runs_dir", str(info.value)
    with pytest.raises(engine.ConfigError):
        engine.RunStore(runs_dir, "some-run")
    assert not list(tmp_path.iterdir())


def test_a_compiled_module_is_run_as_the_module_it_wraps(tmp_path):
    # (torch.compile's wrapper was taken as the module: the run id read 'optimizedmodule', every weight was stored
    # as '_orig_mod.hidden.weight' and the README's Net().load_state_dict(weights) failed on the stored ticket)
    config = tiny(**{"prune.levels": 1, "train.epochs": 1, "prune.controls": ()})
    torch.manual_seed(0)
    plain = engine.run(config, model=Net(), runs_dir=tmp_path / "plain")
    torch.manual_seed(0)
    compiled = engine.run(config, model=torch.compile(Net()), runs_dir=tmp_path / "compiled")
    assert compiled["run_id"] == plain["run_id"] and set(compiled["levels"][0]["layers"]) == {"hidden.weight",
                                                                                               "out.weight"}
    Net().load_state_dict(engine.RunStore(tmp_path / "compiled", compiled["run_id"]).load_level("ticket", 1)[1])
