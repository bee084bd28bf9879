"""Presets: named run settings that override the defaults (`lottery run --preset NAME`).

A preset is {setting path: value} over the run config (the paths `lottery run`'s flags set, e.g.
"train.lr"); flags given beside `--preset` override it in turn, so `--preset stability-story --seed 2` is
the preset at seed 2. Every preset is validated as a whole RunConfig (tests/test_stability_story.py).

stability-story (issue 17): the settings of the issue's probe, in which the dense network was unstable at
initialisation (error barrier 3.0% at k = 0) and stable from k = 20 (0.23%) on a 5,000-image 28x28 digit
set: resnet20, SGD lr 0.1 momentum 0.9, batch 128, 8 epochs, here on `digits28` (the shipped digits
upsampled and augmented offline). NOT YET CONFIRMED on digits28: on the 2-core machine it was written on,
one training step of a full-width resnet20 took 5-15 s under contention, so the instability of these
settings has not been measured here. Measure it with
    lottery run --preset stability-story
    lottery analyze RUN_ID instability --rewind-points 0,20,100
"""
from __future__ import annotations

from .config import RunConfig
from .errors import ConfigError
from .registry import PRESETS


def preset(name: str, help: str, settings: dict) -> dict:
    return PRESETS.register(name, help)(dict(settings))


preset("stability-story", "issue 17's unstable-at-init candidate (UNCONFIRMED on digits28): resnet20, SGD lr 0.1 "
       "momentum 0.9, batch 128, 8 epochs on digits28, IMP with late rewinding to iteration 20",
       {"data.dataset": "digits28", "model.model": "resnet20", "train.optimizer": "sgd", "train.lr": 0.1,
        "train.momentum": 0.9, "train.batch_size": 128, "train.epochs": 8, "prune.rewind": "iter:20"})


def preset_settings(name: str | None) -> dict:
    """{setting path: value} of preset `name` (None: no preset), or ConfigError naming --preset."""
    if name is None:
        return {}
    return dict(PRESETS.get(name, "--preset"))


def preset_config(name: str, **overrides) -> RunConfig:
    """The preset as a validated RunConfig, with setting-path overrides (e.g. **{"seed": 2})."""
    from .settings import config_from_settings

    try:
        return config_from_settings({**preset_settings(name), **overrides})
    except ConfigError as e:
        raise ConfigError(e.field, e.value, f"{e.allowed} (in preset {name})") from None
