import pytest
import torch

import engine

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two OpenMP threads per
# process stall badly whenever another process (the app server, a notebook kernel) holds a core.
torch.set_num_threads(1)


def tiny(**changes) -> engine.RunConfig:
    """A config that trains in well under a second per level on digits."""
    base = {"train.epochs": 2, "prune.levels": 2, "prune.controls": ("reinit",), "device": "cpu"}
    base.update(changes)
    return engine.RunConfig().replace(**base)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"
