"""`lottery list` tells a dense zoo from a ticket zoo, and names the ticket run and level a ticket zoo retrains
(both kinds were listed alike as "zoo of N/N mlp")."""
import json

import pytest

import engine
from engine import zoo as Z
from engine.cli import main

from conftest import tiny


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    """A runs dir with a ticket run, a dense zoo and a ticket zoo of the run's level 1 (tiny, trained once)."""
    runs_dir = tmp_path_factory.mktemp("kinds") / "runs"
    cfg = tiny(**{"model.model": "mlp", "model.hidden": (12,), "prune.levels": 1, "prune.controls": (),
                  "train.epochs": 1, "train.batch_size": 100})
    ticket_run = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    dense_opts = Z.ZooOptions(members=2)
    dense = Z.train_zoo(dense_opts, Z.zoo_config(dense_opts, {"model.model": "mlp", "model.hidden": (12,),
                                                              "train.epochs": 1, "device": "cpu"},
                                                 runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    ticket_opts = Z.ZooOptions(members=2, ticket=ticket_run, level=1)
    ticket = Z.train_zoo(ticket_opts, Z.zoo_config(ticket_opts, {}, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    return runs_dir, ticket_run, dense, ticket


def test_list_says_which_zoo_is_dense_and_which_retrains_a_ticket(zoos, capsys):
    runs_dir, ticket_run, dense, ticket = zoos
    assert main(["list", "--runs-dir", str(runs_dir)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "dense  zoo of 2/2 mlp" in lines[dense] and ticket_run not in lines[dense]
    assert "ticket zoo of 2/2 mlp" in lines[ticket]
    assert f"retrains {ticket_run} level 1" in lines[ticket]
    # the median test accuracy stays in one column for both kinds
    assert lines[dense].index("median test") == lines[ticket].index("median test")
    assert "zoo" not in lines[ticket_run]  # a ticket run is no zoo


def test_list_json_gives_a_zoos_kind_ticket_run_and_level(zoos, capsys):
    runs_dir, ticket_run, dense, ticket = zoos
    assert main(["list", "--runs-dir", str(runs_dir), "--json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[dense]["zoo_kind"] == "dense" and rows[dense]["ticket"] is None and rows[dense]["level"] is None
    assert rows[dense]["families"] is None  # a family zoo's row gives its families and spawn step (test_zoo.py)
    assert (rows[ticket]["zoo_kind"], rows[ticket]["ticket"], rows[ticket]["level"]) == ("ticket", ticket_run, 1)
    assert "zoo_kind" not in rows[ticket_run]  # a ticket run's row is as it was


def test_show_says_the_kind_as_list_does(zoos, capsys):
    runs_dir, ticket_run, dense, ticket = zoos
    assert main(["show", ticket, "--runs-dir", str(runs_dir)]) == 0
    assert f"ticket zoo of {ticket_run} level 1" in capsys.readouterr().out
    assert main(["show", dense, "--runs-dir", str(runs_dir)]) == 0
    assert "dense zoo" in capsys.readouterr().out
    assert main(["show", ticket, "--runs-dir", str(runs_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["zoo_kind"], shown["ticket"], shown["level"]) == ("ticket", ticket_run, 1)
