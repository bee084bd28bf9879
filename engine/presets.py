"""Presets: named run settings that override the defaults (`lottery run --preset NAME`).

A preset is {setting path: value} over the run config (the paths `lottery run`'s flags set, e.g.
"train.lr"); flags given beside `--preset` override it in turn, so `--preset stability-story --seed 2` is
the preset at seed 2. Every preset is validated as a whole RunConfig (tests/test_stability_story.py).

stability-story (issue 17): a dense network that is unstable at initialisation and stable after a few
iterations, on data shipped with the project: resnet20 at half width on `digits`, SGD lr 0.1 momentum 0.9,
batch 32, 10 epochs (400 iterations), no warm-up; IMP with late rewinding to iteration 20. Measured on the
2-core CPU (instability, 11 interpolation points, BN statistics on 1,024 training examples):
    error barrier at k = 0 / 20 / 100: seed 0 10.42% / 0.00% / 0.50%, seed 1 13.19% / 0.44% / 0.00%,
    seed 2 21.94% / 0.33% / 0.00%; median 13.19% / 0.33% / 0.00%: unstable at init, stable by k = 20
(README "The stability story"; bench/science_stability_story.py for the tickets).
The issue's probe (resnet20 full width on 28x28 digits, batch 128, 8 epochs) is the `digits28` data set
here; at full width one step took 5-15 s on the contended 2-core CPU (1 s at width 0.25), so that setting
was not measured. Run the story with
    lottery run --preset stability-story
    lottery analyze RUN_ID instability --rewind-points 0,20,100
"""
from __future__ import annotations

from .config import RunConfig
from .errors import ConfigError
from .registry import PRESETS


def preset(name: str, help: str, settings: dict) -> dict:
    return PRESETS.register(name, help)(dict(settings))


preset("stability-story", "a net unstable at init and stable by k = 20 (README: The stability story): resnet20 x0.5 on digits, SGD "
       "lr 0.1 momentum 0.9, batch 32, 10 epochs, IMP with late rewinding to iteration 20",
       {"data.dataset": "digits", "model.model": "resnet20", "model.width": 0.5, "train.optimizer": "sgd",
        "train.lr": 0.1, "train.momentum": 0.9, "train.batch_size": 32, "train.epochs": 10,
        "prune.rewind": "iter:20"})


def preset_settings(name: str | None) -> dict:
    """{setting path: value} of preset `name` (None: no preset), or ConfigError naming --preset."""
    if name is None:
        return {}
    return dict(PRESETS.get(name, "--preset"))


def preset_for(name: str | None, method: str, given: dict | None = None) -> tuple[dict, dict]:
    """({setting path: value} of preset `name` that runs of `method` read, {setting path: why not} of the
    others). A preset is a bundle aimed at one method (stability-story: IMP's late rewinding); a setting the
    chosen method never reads (`--preset stability-story --method snip`: --rewind) would only give the same
    computation a second run id, so it keeps its default. `given`: the run's other settings, for those read
    only under others' values (engine.settings.unread_because)."""
    from .settings import unread_because

    kept, unused = {}, {}
    for path, value in preset_settings(name).items():
        why = unread_because(path, method, given)
        (kept if why is None else unused)[path] = value if why is None else why
    return kept, unused


def preset_config(name: str, **overrides) -> RunConfig:
    """The preset as a validated RunConfig, with setting-path overrides (e.g. **{"seed": 2}); the preset's
    settings the run's method never reads keep their defaults (`preset_for`)."""
    from .config import PruneConfig
    from .settings import config_from_settings

    settings = {**preset_settings(name), **overrides}
    kept, _ = preset_for(name, settings.get("prune.method", PruneConfig.method), settings)
    try:
        return config_from_settings({**kept, **overrides})
    except ConfigError as e:
        raise ConfigError(e.field, e.value, f"{e.allowed} (in preset {name})") from None
