"""Where a user reaches for their own module or data from the CLI, the one-line error says how it is done
(engine.run(cfg, model=...)), and a .jsonl written as one JSON array says what a .jsonl is."""
import json

from engine import RunConfig
from engine.cli import main


def test_a_model_path_on_the_cli_points_to_engine_run(tmp_path, capsys):
    assert main(["run", "--runs-dir", str(tmp_path), "--model", "./net.py:Net"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "engine.run(cfg, model=YourModule())" in err and "lenet300" in err
    assert not list(tmp_path.iterdir())


def test_the_config_of_an_own_module_run_given_to_the_cli_says_how_to_run_it(tmp_path, capsys):
    config = tmp_path / "config.json"  # as the store writes it for engine.run(cfg, model=Net())
    config.write_text(json.dumps(RunConfig().to_dict() | {"custom_model": "Net-custom1234"}))
    runs = tmp_path / "runs"
    assert main(["run", "--runs-dir", str(runs), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Net-custom1234" in err and "engine.run(cfg, model=" in err
    assert not runs.exists() or not list(runs.iterdir())


def test_a_jsonl_holding_one_json_array_is_told_what_a_jsonl_is(tmp_path, capsys):
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps([{"text": "a cat", "label": 0}, {"text": "a dog", "label": 1}]) + "\n")
    assert main(["run", "--runs-dir", str(tmp_path / "runs"), "--model", "bert-tiny", "--dataset",
                 f"text:{data}", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "JSON array" in err and "one JSON object per line" in err


# ---------------------------------------------------------------- own modules: ids and checks (review of the round)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import engine  # noqa: E402
from engine import runner  # noqa: E402

from conftest import tiny  # noqa: E402


def _quick():
    return tiny(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": ()})


class Flatten(nn.Module):
    """A layer holding a function, printed with its address (fastai's Lambda)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return repr(self.fn)


def _flat_net():
    torch.manual_seed(0)
    fn = (lambda: lambda x: x.flatten(1))()  # (a new function object, at another address, on every call)
    return nn.Sequential(Flatten(fn), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_an_own_modules_id_does_not_depend_on_addresses_in_its_printed_structure():
    data = engine.data.load(_quick().data)
    one, other = _flat_net(), _flat_net()  # (both alive: their functions at two addresses)
    assert "at 0x" in repr(one) and repr(one) != repr(other)
    assert runner._model_plan(_quick(), data, one)[2] == runner._model_plan(_quick(), data, other)[2]


def test_a_run_stored_under_the_id_the_code_before_gave_is_resumed_not_trained_again(tmp_path, monkeypatch):
    plan = runner._model_plan
    legacy = []

    def as_before(config, dataset, model):  # the previous code's id: CONFIG_ID-customHASH
        out = plan(config, dataset, model)
        legacy.append(out[4])
        return (*out[:2], out[4], *out[3:])
    monkeypatch.setattr(runner, "_model_plan", as_before)
    first = engine.run(_quick(), model=_flat_net(), runs_dir=tmp_path)
    assert first["run_id"] == legacy[0] and first["status"] == "completed"
    monkeypatch.setattr(runner, "_model_plan", plan)
    events = []
    again = engine.run(_quick(), model=_flat_net(), runs_dir=tmp_path, on_event=events.append)
    assert again["run_id"] == legacy[0] and [p.name for p in tmp_path.iterdir()] == [legacy[0]]
    assert not [e for e in events if type(e).__name__ == "TrainingStarted"]


class CosineHead(nn.Module):
    """An output layer used through F.linear (a cosine classifier): its module is never called."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 32)
        self.fc = nn.Linear(32, 10, bias=False)

    def forward(self, x):
        h = F.normalize(torch.relu(self.body(x.flatten(1))), dim=1)
        return 10 * F.linear(h, F.normalize(self.fc.weight, dim=1))


class SkipsALayerEveryOtherStep(nn.Module):
    """A layer some training steps leave out (LayerDrop, a mixture's idle expert): no gradient on those steps."""

    def __init__(self):
        super().__init__()
        self.a, self.extra, self.out = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.calls = 0

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        self.calls += 1
        if not self.training or self.calls % 2:
            h = h + torch.relu(self.extra(h))
        return self.out(h)


def test_a_cosine_head_and_a_layer_some_steps_skip_train(tmp_path):
    for make in (CosineHead, SkipsALayerEveryOtherStep):
        torch.manual_seed(0)
        summary = engine.run(_quick(), model=make(), runs_dir=tmp_path)
        assert summary["status"] == "completed" and summary["levels"][0]["test_accuracy"] > 0.3, make.__name__


def test_a_text_npz_with_other_counts_of_texts_and_labels_is_refused(tmp_path, capsys):
    import numpy as np
    data = tmp_path / "texts.npz"
    np.savez(data, text_train=np.array(["a cat", "a dog", "a cow"]), y_train=np.array([0, 1]),
             text_test=np.array(["a cat"]), y_test=np.array([0]))
    assert main(["run", "--runs-dir", str(tmp_path / "runs"), "--model", "bert-tiny", "--dataset",
                 f"text:{data}", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3 texts" in err and "one label per text" in err


def test_a_jsonl_array_after_a_blank_line_is_told_what_a_jsonl_is(tmp_path, capsys):
    data = tmp_path / "texts.jsonl"
    data.write_text("\n" + json.dumps([{"text": "a cat", "label": 0}]) + "\n")
    assert main(["run", "--runs-dir", str(tmp_path / "runs"), "--model", "bert-tiny", "--dataset",
                 f"text:{data}", "--epochs", "1"]) == 2
    assert "JSON array" in capsys.readouterr().err


def test_a_channels_last_npz_run_stored_when_it_was_read_otherwise_is_refused_not_resumed(tmp_path, capsys):
    """(N, H, W, C) arrays were read as (N, C, H, W) before 2026-12-02: such a run's data check must fail in one
    line (it failed on a state_dict size mismatch, exit 1, or resumed on permuted inputs)."""
    import numpy as np

    from engine.data import NPZ_KEYS, fingerprint
    from engine.store import RunStore, read_object, write_json
    g = np.random.default_rng(0)
    arrays = {"x_train": g.random((40, 8, 8, 3), dtype=np.float32), "y_train": np.arange(40) % 4,
              "x_test": g.random((20, 8, 8, 3), dtype=np.float32), "y_test": np.arange(20) % 4}
    np.savez(tmp_path / "hwc.npz", **arrays)
    runs = tmp_path / "runs"
    argv = ["run", "--runs-dir", str(runs), "--dataset", f"npz:{tmp_path / 'hwc.npz'}", "--model", "conv2",
            "--epochs", "1", "--levels", "1", "--controls", "none", "--batch-size", "16", "--json"]
    assert main(argv) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    store = RunStore(runs, run_id)
    old = {**read_object(store.path("data.json")), "sha256": fingerprint(*(arrays[k] for k in NPZ_KEYS))}
    write_json(store.path("data.json"), old)  # as the code before recorded it
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "contents changed" in err
