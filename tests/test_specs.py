"""Method specs and the stability of run identity.

tests/data/run_ids.json was recorded with the code before methods became specs (every method, and
non-default pattern / nm / refill / rewind / controls / scope / method options): the same settings must
give the same run id and the same config.json, so existing run stores keep resuming.
"""
import json
from pathlib import Path

import pytest

from engine.config import RunConfig
from engine.settings import config_from_settings

RECORDED = json.loads((Path(__file__).parent / "data" / "run_ids.json").read_text())


@pytest.mark.parametrize("case", RECORDED, ids=[c["run_id"] for c in RECORDED])
def test_run_ids_and_stored_configs_unchanged(case):
    cfg = config_from_settings(case["settings"])
    assert cfg.run_id == case["run_id"]
    # config.json keeps every recorded field and value (fields added since may join, at their defaults)
    now = cfg.to_dict()
    for group, recorded in case["config"].items():
        assert ({k: now[group][k] for k in recorded} if isinstance(recorded, dict) else now[group]) == recorded
    assert RunConfig.from_dict(case["config"]).run_id == case["run_id"]
