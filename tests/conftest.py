import pytest

import engine


def tiny(**changes) -> engine.RunConfig:
    """A config that trains in well under a second per level on digits."""
    base = {"train.epochs": 2, "prune.levels": 2, "prune.controls": ("reinit",), "device": "cpu"}
    base.update(changes)
    return engine.RunConfig().replace(**base)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"
