"""Model zoos: trained as one batched computation, stored as one run, resumable, refused cleanly."""
import hashlib
import json
import re
import threading

import pytest
import torch

import engine
from engine import events as ev
from engine import masks as M
from engine import models, trainer
from engine import zoo as Z
from engine.cli import main
from engine.data import load
from engine.errors import ConfigError
from engine.seeding import derive_seed

from conftest import tiny

DENSE = {"model.model": "mlp", "model.hidden": (24,), "train.epochs": 1, "train.batch_size": 100, "device": "cpu"}


def _dense(runs_dir, members=3, chunk=2, **kw):
    options = Z.ZooOptions(members=members, chunk=chunk)
    return options, Z.zoo_config(options, {**DENSE, **kw}, runs_dir=runs_dir)


def test_a_dense_zoo_is_stored_stacked_and_each_member_is_its_own_training(runs_dir):
    options, config = _dense(runs_dir)
    summary = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert summary["status"] == "completed" and summary["trained"] == 3 and summary["kind"] == "zoo"
    zoo = Z.load_zoo(runs_dir, summary["run_id"])
    assert len(zoo) == 3 and zoo.mask is None and zoo.kind == "dense"
    assert all(w.shape[0] == 3 for w in zoo.weights.values())
    assert not (zoo.dir / "chunks").exists()
    # member 2 (trained in the second chunk) is exactly what trainer.train makes of its own init and order
    data = load(config.data)
    net = models.build(config.model, data.input_shape, data.num_classes, derive_seed(config.seed, "zoo", "init", 2))
    result = trainer.train(net, data, config.train, None, seed=derive_seed(config.seed, "zoo", "order", 2))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(zoo.member(2)[k], v, atol=2e-6, rtol=1e-5)
    assert zoo.members[2]["test_accuracy"] == result.final["test_accuracy"]
    assert len({round(m["test_loss"], 6) for m in zoo.members}) == 3  # three different networks
    # listed by the store, shown as a zoo, found again rather than retrained
    assert [r["run_id"] for r in engine.list_runs(runs_dir)] == [summary["run_id"]]
    assert "dense zoo: 3/3 x mlp" in Z.format_zoo(summary)
    again = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert again["updated"] == summary["updated"]


def test_a_cancelled_zoo_resumes_from_its_last_finished_chunk(runs_dir, tmp_path):
    options, config = _dense(runs_dir)
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ev.LevelDone):  # the first chunk is stored: stop during the second
            cancel.set()

    first = Z.train_zoo(options, config, runs_dir=runs_dir, on_event=on_event, cancel=cancel)
    assert first["status"] == "cancelled" and first["trained"] == 2
    # generating from it is bad input like any other: one line naming ZOO_ID, how far it got and what to do
    with pytest.raises(ConfigError, match=r"ZOO_ID: .* is not complete \(2 of 3 members trained\); run the same"):
        Z.load_zoo(runs_dir, first["run_id"])
    # `lottery show` of the unfinished zoo says how to finish it, not to generate from it (which is refused)
    shown = Z.format_zoo({**first, "generations": []})
    assert "lottery generate" not in shown and "run the same `lottery zoo` command again" in shown
    events = []
    done = Z.train_zoo(options, config, runs_dir=runs_dir, on_event=events.append)
    assert done["status"] == "completed" and done["trained"] == 3
    assert [e.reused for e in events if isinstance(e, ev.LevelDone)] == [True, False]
    whole = Z.train_zoo(options, config, runs_dir=tmp_path / "other")
    resumed, fresh = Z.load_zoo(runs_dir, done["run_id"]), Z.load_zoo(tmp_path / "other", whole["run_id"])
    for k in fresh.weights:
        torch.testing.assert_close(resumed.weights[k], fresh.weights[k])


def test_a_zoo_trained_again_for_its_members_file_keeps_its_weights_until_replaced(runs_dir):
    """A completed zoo whose members.json was damaged trains again; its intact weights.safetensors used to be
    deleted first, so a cancel (or a failure) right after the start lost them for nothing."""
    options, config = _dense(runs_dir)
    summary = Z.train_zoo(options, config, runs_dir=runs_dir)
    store = engine.RunStore(runs_dir, summary["run_id"])
    weights = store.weights_path("weights").read_bytes()
    store.path("members.json").write_text("{")
    cancel = threading.Event()
    cancel.set()
    stopped = Z.train_zoo(options, config, runs_dir=runs_dir, cancel=cancel)
    assert stopped["status"] == "cancelled" and stopped["trained"] == 0  # the damaged members.json counts nothing
    assert store.weights_path("weights").read_bytes() == weights
    with pytest.raises(engine.LotteryError, match="not complete"):  # not half a zoo: no member table yet
        Z.load_zoo(runs_dir, summary["run_id"])
    done = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert done["status"] == "completed" and done["trained"] == 3 and len(Z.load_zoo(runs_dir, done["run_id"])) == 3


@pytest.mark.parametrize("chunk", [3, 1])
def test_a_zoo_resumed_with_another_chunk_size_has_each_member_once(runs_dir, tmp_path, chunk):
    """--chunk is not part of the zoo's identity: a zoo cancelled in chunks of 2 and resumed in chunks of 3 (or 1)
    held 4 members (or 8, two of them twice) and called itself complete."""
    options, config = _dense(runs_dir, members=5, chunk=2)
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ev.LevelDone):  # members 0-1 stored: stop
            cancel.set()

    assert Z.train_zoo(options, config, runs_dir=runs_dir, on_event=on_event, cancel=cancel)["trained"] == 2
    other = Z.ZooOptions(members=5, chunk=chunk)
    events = []
    done = Z.train_zoo(other, config, runs_dir=runs_dir, on_event=events.append)
    assert done["status"] == "completed" and done["trained"] == 5
    assert [e.reused for e in events if isinstance(e, ev.LevelDone)][0] is True  # members 0-1 not retrained
    zoo = Z.load_zoo(runs_dir, done["run_id"])
    assert [m["member"] for m in zoo.members] == [0, 1, 2, 3, 4] and all(w.shape[0] == 5 for w in zoo.weights.values())
    whole = Z.load_zoo(tmp_path / "other", Z.train_zoo(options, config, runs_dir=tmp_path / "other")["run_id"])
    for k in whole.weights:
        torch.testing.assert_close(zoo.weights[k], whole.weights[k])


@pytest.mark.parametrize("damaged", ["weights.safetensors", "record.json"])
def test_a_damaged_chunk_says_how_to_recover(runs_dir, damaged):
    """A chunk file damaged on disk: the resume names it and says to delete its folder (and the zoo is marked
    failed); after that the same call retrains just its members."""
    options, config = _dense(runs_dir, members=3, chunk=2)
    cancel = threading.Event()
    first = Z.train_zoo(options, config, runs_dir=runs_dir, cancel=cancel,
                        on_event=lambda e: isinstance(e, ev.LevelDone) and cancel.set())
    chunk = runs_dir / first["run_id"] / "chunks" / "000"
    (chunk / damaged).write_bytes(b"garbage")
    with pytest.raises(engine.LotteryError, match=re.escape(f"delete {chunk}")):
        Z.train_zoo(options, config, runs_dir=runs_dir)
    assert engine.RunStore(runs_dir, first["run_id"]).summary()["status"] == "failed"
    import shutil
    shutil.rmtree(chunk)
    done = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert done["status"] == "completed" and len(Z.load_zoo(runs_dir, done["run_id"])) == 3


@pytest.fixture
def ticket_run(runs_dir):
    cfg = tiny(**{"model.model": "mlp", "model.hidden": (24,), "prune.levels": 1, "prune.controls": (),
                  "prune.rewind": "iter:5", "train.epochs": 1, "train.batch_size": 100})
    return engine.run(cfg, runs_dir=runs_dir)["run_id"]


def test_a_ticket_zoo_retrains_the_ticket_from_its_rewind_point_with_other_data_orders(runs_dir, ticket_run):
    options = Z.ZooOptions(members=2, ticket=ticket_run)
    config = Z.zoo_config(options, {"seed": 4}, runs_dir=runs_dir)
    summary = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert summary["zoo_kind"] == "ticket" and summary["level"] == 1
    zoo = Z.load_zoo(runs_dir, summary["run_id"])
    stored_mask = engine.RunStore(runs_dir, ticket_run).load_mask("ticket", 1)
    assert all(torch.equal(zoo.mask[n], stored_mask[n]) for n in stored_mask)
    assert summary["density"] == pytest.approx(M.density(stored_mask))
    for n, keep in zoo.mask.items():
        assert (zoo.weights[n][:, ~keep] == 0).all()
    assert {m["start_step"] for m in zoo.members} == {5}
    assert not torch.equal(zoo.weights["out.weight"][0], zoo.weights["out.weight"][1])
    # the mask every member shares is part of a completed ticket zoo: without it the zoo is not listed as complete
    # (a dense zoo has none to miss), and the same command makes it again
    (zoo.dir / "mask.safetensors").unlink()
    [listed] = [r for r in engine.list_runs(runs_dir) if r["run_id"] == summary["run_id"]]
    assert listed["status"] == "unreadable" and "mask.safetensors is missing" in listed["error"], listed
    assert Z.train_zoo(options, config, runs_dir=runs_dir)["status"] == "completed"
    assert all(torch.equal(Z.load_zoo(runs_dir, summary["run_id"]).mask[n], stored_mask[n]) for n in stored_mask)


def test_a_family_zoos_members_continue_their_familys_parent_each_with_its_own_data_order(runs_dir, capsys):
    # 2 families, 3 members (member 2 in family 0), parting at step 4: a member is its family's init trained to
    # step 4 with the family's first member's order, then on from there with its own order and a fresh optimizer,
    # which trainer.train, one network at a time, reproduces
    options = Z.ZooOptions(members=3, chunk=2, families=2, spawn_step=4)
    config = Z.zoo_config(options, DENSE, runs_dir=runs_dir)
    summary = Z.train_zoo(options, config, runs_dir=runs_dir)
    assert summary["status"] == "completed" and (summary["families"], summary["spawn_step"]) == (2, 4)
    zoo = Z.load_zoo(runs_dir, summary["run_id"])
    assert [m["family"] for m in zoo.members] == [0, 1, 0] and {m["start_step"] for m in zoo.members} == {4}
    data = load(config.data)
    parent = models.build(config.model, data.input_shape, data.num_classes, derive_seed(config.seed, "zoo", "init", 0))
    at_spawn = {}

    def capture(step, model):
        if step == 4:
            at_spawn.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer.train(parent, data, config.train, None, seed=derive_seed(config.seed, "zoo", "order", 0), on_step=capture)
    child = models.build(config.model, data.input_shape, data.num_classes, 0)
    child.load_state_dict(at_spawn)
    trainer.train(child, data, config.train, None, seed=derive_seed(config.seed, "zoo", "order", 2), start_step=4)
    for k, v in child.state_dict().items():
        torch.testing.assert_close(zoo.member(2)[k], v, atol=2e-6, rtol=1e-5)
    assert not torch.equal(zoo.weights["out.weight"][0], zoo.weights["out.weight"][2])  # siblings, not copies
    # shown and listed as a family zoo; the options are part of its id (a dense zoo of the same seeds is another)
    assert "dense zoo of 2 families, parting at step 4: 3/3" in Z.format_zoo(summary)
    assert "2 families, parting at step 4" in Z.list_tail(summary)
    assert main(["list", "--runs-dir", str(runs_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["zoo_kind"], row["families"], row["spawn_step"]) == ("dense", 2, 4)
    assert Z.zoo_id(Z.ZooOptions(members=3, chunk=2), config) != summary["run_id"]


def test_a_family_zoo_parting_at_step_0_shares_inits_and_with_one_member_each_is_the_dense_zoo(runs_dir):
    options, config = _dense(runs_dir)
    dense = Z.load_zoo(runs_dir, Z.train_zoo(options, config, runs_dir=runs_dir)["run_id"])
    same = Z.ZooOptions(members=3, chunk=2, families=3)
    one_each = Z.load_zoo(runs_dir, Z.train_zoo(same, config, runs_dir=runs_dir)["run_id"])
    assert one_each.dir != dense.dir
    for k, v in dense.weights.items():
        torch.testing.assert_close(one_each.weights[k], v, atol=2e-6, rtol=1e-5)
    # one family: every member starts from member 0's init, so they end nearer each other than dense members do
    one = Z.load_zoo(runs_dir, Z.train_zoo(Z.ZooOptions(members=3, chunk=2, families=1), config,
                                           runs_dir=runs_dir)["run_id"])
    assert {m["init_seed"] for m in one.members} == {dense.members[0]["init_seed"]}

    def spread(z):
        from engine.generate import flatten, nearest_other
        return float(nearest_other(flatten(z.weights)).median())

    assert spread(one) < 0.5 * spread(dense)


def test_an_earlier_zoos_id_is_unchanged_by_the_family_options():
    # ids are hashes of the options: a zoo stored before --families existed is found again by its command
    config = Z.zoo_config(Z.ZooOptions(members=3), DENSE)
    blob = json.dumps({"zoo": {"members": 3, "ticket": None, "level": None}, "config": config.non_default()},
                      sort_keys=True, default=list).encode()
    assert Z.zoo_id(Z.ZooOptions(members=3), config) == f"zoo-mlp-digits-{hashlib.sha256(blob).hexdigest()[:10]}"


def test_bad_zoos_are_one_line_errors_and_store_nothing(runs_dir, ticket_run, capsys, text_cache):
    before = sorted(p.name for p in runs_dir.iterdir())
    cases = [(["--model", "bert-tiny", "--dataset", "pydoc-topics"], "has not been tested on: Dropout"),(["--members", "1"], "--members: 1"),
             (["--ticket", "nope"], "--ticket: 'nope'"),
             (["--ticket", ticket_run, "--level", "3"], "--level: 3 is not valid; completed ticket levels"),
             (["--level", "1"], "applies to ticket zoos"),
             (["--families", "4", "--members", "3"], "--families: 4 is not valid; at most --members (3)"),
             (["--families", "2", "--ticket", ticket_run], "--families: 2 is not valid; applies to dense zoos"),
             (["--families", "0"], "--families: 0"),
             (["--spawn-step", "5"], "--spawn-step: 5 is not valid; applies to family zoos"),
             (["--families", "2", "--spawn-step", "100000"], "--spawn-step: 100000 is not valid; must be below the"),
             (["--ticket", ticket_run, "--model", "conv2"], "--model: 'conv2'"),
             # zoos never train Bayesian layers or text: those flags are not offered (--help listed them)
             (["--model", "mlp", "--bayesian"], "unrecognized arguments: --bayesian"),
             (["--mc-samples", "4"], "unrecognized arguments: --mc-samples"),
             (["--tokenizer", "minilm"], "unrecognized arguments: --tokenizer"),
             (["--max-length", "8"], "unrecognized arguments: --max-length")]
    for flags, message in cases:
        try:
            code = main(["zoo", "--runs-dir", str(runs_dir), "--quiet", "--epochs", "1", *flags])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
        assert code in (1, 2) and message in err and len(err.strip().splitlines()) == 1, (flags, err)
    assert sorted(p.name for p in runs_dir.iterdir()) == before


def test_zoo_help_offers_no_flag_a_zoo_always_refuses(capsys):
    with pytest.raises(SystemExit):
        main(["zoo", "--help"])
    out = capsys.readouterr().out
    assert "--epochs" in out and "--hidden" in out
    for flag in ("--bayesian", "--prior-sigma", "--mc-samples", "--kl-warmup", "--tokenizer", "--max-length"):
        assert flag not in out, flag


def test_zoo_command_trains_lists_and_shows(runs_dir, capsys):
    flags = ["--model", "mlp", "--hidden", "16", "--members", "2", "--epochs", "1", "--batch-size", "200"]
    assert main(["zoo", "--runs-dir", str(runs_dir), "--quiet", "--json", *flags]) == 0
    import json
    zoo_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["list", "--runs-dir", str(runs_dir)]) == 0
    assert zoo_id in capsys.readouterr().out
    assert main(["show", zoo_id, "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "dense zoo: 2/2" in out and "test accuracy: median" in out
    # the progress bar names the chunk it trains (a zoo has no pruning levels)
    assert main(["zoo", "--runs-dir", str(runs_dir), "--seed", "1", "--chunk", "1", *flags]) == 0
    err = capsys.readouterr().err
    assert "zoo chunk 1" in err and "level" not in err


def test_zoo_barriers_naive_and_matched_are_stored_and_shown(runs_dir, capsys):
    options, config = _dense(runs_dir, members=2)
    zoo_id = Z.train_zoo(options, config, runs_dir=runs_dir)["run_id"]
    result = Z.zoo_barriers(runs_dir, zoo_id, pairs=1, points=3)
    pair = result["pairs"][0]
    assert (pair["a"], pair["b"]) == (0, 1) and len(pair["matched_curve"]) == 3
    assert pair["naive_curve"][0] == pair["matched_curve"][0]  # both start at member 0 itself
    with pytest.raises(ConfigError, match="pairs"):
        Z.zoo_barriers(runs_dir, zoo_id, pairs=2)
    with pytest.raises(ConfigError, match="points: 1 is not valid"):  # was a ValueError after the matching
        Z.zoo_barriers(runs_dir, zoo_id, pairs=1, points=1)
    assert main(["show", zoo_id, "--runs-dir", str(runs_dir)]) == 0
    assert "zoo-barrier: mean over 1 member pairs" in capsys.readouterr().out


def test_ticket_analyses_refuse_a_zoo_in_one_line(runs_dir, capsys):  # bad input: exit 2, as the README says
    options, config = _dense(runs_dir, members=2)
    zoo_id = Z.train_zoo(options, config, runs_dir=runs_dir)["run_id"]
    assert main(["analyze", zoo_id, "barrier", "--runs-dir", str(runs_dir)]) == 2
    assert "is a model zoo, not a ticket run" in capsys.readouterr().err
    # export (of a ticket) said "--level: None is not valid; completed levels of this run: []"
    out = runs_dir.parent / "member.safetensors"
    assert main(["export", zoo_id, "--out", str(out), "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert "is a model zoo, not a ticket run" in err and "--level" not in err and not out.exists()
    # report drew a ticket run's empty views under the title "Lottery ticket run"
    from explorer.cli import main as ui_main
    page = runs_dir.parent / "zoo.html"
    assert ui_main(["report", zoo_id, "--html", str(page), "--runs-dir", str(runs_dir)]) == 2
    assert "is a model zoo, not a ticket run" in capsys.readouterr().err and not page.exists()


def test_zoo_barriers_stop_between_pairs_on_cancel_and_store_nothing(runs_dir):
    """zoo_barriers took no cancel=: the app's Cancel could only stop it by raising from its event sink."""
    from engine.errors import RunCancelled

    options, config = _dense(runs_dir, members=4)
    zoo_id = Z.train_zoo(options, config, runs_dir=runs_dir)["run_id"]
    cancel, done = threading.Event(), []

    def on_event(e):  # Cancel pressed while the first pair is reported
        if isinstance(e, ev.AnalysisProgress):
            done.append(e.done)
            cancel.set()

    with pytest.raises(RunCancelled):
        Z.zoo_barriers(runs_dir, zoo_id, pairs=2, points=3, on_event=on_event, cancel=cancel)
    assert done == [1]  # the second pair never ran
    assert "zoo-barrier" not in engine.RunStore(runs_dir, zoo_id).analyses()
