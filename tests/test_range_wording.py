"""Range errors read as a person would say them: `--ks-top-k 0` said "each item must be an integer in [1, inf]
(in (0,))", an interval to infinity and the parsed tuple's repr; a bound on one side only is now ">= 1"."""
import dataclasses

import pytest

from engine.config import GROUPS, ConfigError, RunConfig, field_types, method_option_fields


def _error(**changes) -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig().replace(**changes)
    return str(info.value)


@pytest.mark.parametrize("changes, expected", [
    ({"prune.ks_top_k": (0,)}, "prune.ks_top_k: 0 is not valid; each item must be an integer >= 1"),
    ({"prune.ks_top_k": (4, 0, 64)}, "prune.ks_top_k: 0 is not valid; each item must be an integer >= 1 "
                                     "(in (4, 0, 64))"),
    ({"train.warmup": -1}, "train.warmup: -1 is not valid; must be an integer >= 0"),
    ({"train.lr": 0.0}, "train.lr: 0.0 is not valid; must be a number in (0, 10]"),  # both bounds: an interval
])
def test_a_bound_on_one_side_reads_as_a_comparison(changes, expected):
    assert _error(**changes) == expected


def _number_fields():
    """(path, int or tuple, field) of every run setting: the config groups' fields and every method's options."""
    out = [(f"{group}.{f.name}", cls, f) for group, cls in GROUPS.items() for f in dataclasses.fields(cls)]
    out += [(f"prune.{name}", cls, f) for name, (cls, f) in method_option_fields().items()]
    return [(path, field_types(cls)[f.name][0], f) for path, cls, f in out if "help" in f.metadata]


def test_every_integer_setting_with_only_a_lower_bound_says_so_plainly():
    """Every run setting whose integers have a lower bound and no upper one: a value below it is named with
    '>= lo' (or '> lo'), never an interval to 'inf'."""
    checked = []
    for path, kind, f in _number_fields():
        meta = f.metadata
        if meta["lo"] is None or meta["hi"] is not None:
            continue
        if kind is int or (kind is tuple and meta["item_type"] is int):
            below = meta["lo"] if meta["lo_open"] else meta["lo"] - 1
            message = _error(**{path: (below,) if kind is tuple else below})
            sign = ">" if meta["lo_open"] else ">="
            assert f"must be an integer {sign} {meta['lo']}" in message and "inf" not in message, message
            assert "\n" not in message and message.startswith(f"{path}: {below} is not valid; "), message
            checked.append(path)
    assert {"prune.ks_top_k", "train.warmup"} <= set(checked), checked


def test_the_cli_says_it_in_one_line(capsys):
    from engine.cli import main
    code = main(["run", "--method", "ks-lottery", "--model", "minilm", "--dataset", "pydoc-topics",
                 "--ks-top-k", "0", "--runs-dir", "/nonexistent-never-written"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.endswith("prune.ks_top_k: 0 is not valid; each item must be an integer >= 1"), err
    assert len(err.splitlines()) == 1, err


def test_an_empty_box_with_a_lower_bound_only():
    """The app's cleared number box names what it may hold in the same words."""
    assert _error(**{"train.warmup": None}) == "train.warmup: empty; must be an integer >= 0"
