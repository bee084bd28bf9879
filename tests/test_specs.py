"""Method specs and the stability of run identity.

tests/data/run_ids.json was recorded with the code before methods became specs (every method, and
non-default pattern / nm / refill / rewind / controls / scope / method options): the same settings must
give the same run id and the same config.json, so existing run stores keep resuming.
"""
import json
from pathlib import Path

import pytest
from conftest import tiny

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


# ---------------------------------------------------------------- a method is one module
ROOT = Path(__file__).resolve().parent.parent


def test_no_method_name_compared_and_no_getattr_on_methods_outside_their_modules():
    import re

    from engine.registry import METHODS

    own = {name: spec.run.__module__.replace(".", "/") + ".py" for name, spec in METHODS.items()}
    quoted = "|".join(re.escape(n) for n in own)
    compared = re.compile(rf"method\S*\s*(==|!=|in)\s*[(\[{{]?[^#\n]*[\"']({quoted})[\"']")
    attr = re.compile(r"getattr\((METHODS|method|spec)\b")
    bad = []
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("explorer/**/*.py")]):
        rel = str(path.relative_to(ROOT))
        for i, line in enumerate(path.read_text().splitlines(), 1):
            m = compared.search(line)
            if m and own[m.group(2)] != rel:
                bad.append(f"{rel}:{i}: {line.strip()}")
            if attr.search(line):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_a_toy_method_registered_from_a_test_runs_end_to_end_and_is_listed(tmp_path, capsys):
    """What a contributor's new method needs: its options dataclass, its run function, one registration."""
    from dataclasses import dataclass

    import torch

    import engine
    from engine import masks as M
    from engine.cli import main
    from engine.config import option, validate
    from engine.registry import METHODS, MethodSpec
    from engine.seeding import generator

    @dataclass(frozen=True)
    class ToyOptions:
        toy_keep: float = option(0.5, "toy: fraction of every layer kept at random", lo=0, hi=1, lo_open=True)

        def __post_init__(self):
            validate(self, "prune.")

    def toy(ctx):
        counts = {n: round(ctx.options.toy_keep * m.numel()) for n, m in ctx.dense.mask.items()}
        g = generator(ctx.config.seed, "toy")
        scores = {n: torch.rand(m.shape, generator=g) for n, m in ctx.dense.mask.items()}
        ctx.train_ticket(1, M.keep_per_layer(scores, ctx.dense.mask, counts), ctx.init_weights, 0)

    METHODS.register("toy", "a random mask at --toy-keep per layer (test)")(MethodSpec(toy, options=ToyOptions))
    try:
        cfg = tiny(**{"prune.method": "toy", "prune.toy_keep": 0.25})
        summary = engine.run(cfg, runs_dir=tmp_path)
        assert summary["status"] == "completed" and [lv["level"] for lv in summary["levels"]] == [1]
        assert all(abs(d - 0.25) < 0.01 for d in summary["levels"][0]["layers"].values())
        assert set(summary["controls"]) == {"reinit"}
        assert engine.RunConfig.from_dict(cfg.to_dict()).run_id == cfg.run_id  # stored flat, read back
        with pytest.raises(engine.ConfigError, match="prune.toy_keep"):
            cfg.replace(**{"prune.toy_keep": 2.0})
        with pytest.raises(SystemExit):
            main(["run", "--help"])
        help_text = capsys.readouterr().out
        assert "toy" in help_text and "--toy-keep" in help_text and "random mask at --toy-keep" in help_text
    finally:
        METHODS.unregister("toy")


def test_readme_layout_lists_every_module_and_contributing_names_the_files():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Contributing")]
    modules = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("engine/**/*.py"), *ROOT.glob("explorer/*.py")])
    missing = [m for m in modules if m not in layout]
    assert not missing, f"add these to the README's Layout section, one line each: {missing}"
    contributing = readme[readme.index("## Contributing"):]
    for change in ("New method", "New analysis", "New explorer tab", "New model", "New command"):
        assert f"**{change}**" in contributing
