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
