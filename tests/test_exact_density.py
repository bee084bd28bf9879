"""Every registered method's ticket keeps exactly the number of weights its rule says, layer by layer.

The expected counts are computed here from each method's documented rule, independently of the engine's
selection code; a method registered without an entry below fails the test, so new ones get checked too.
"""
import math
from pathlib import Path

import pytest

import engine
from engine.registry import METHODS

from conftest import tiny

SHAPES = {"hidden.0.weight": (300, 64), "hidden.1.weight": (100, 300), "out.weight": (10, 100)}  # lenet300 on 8x8
SIZES = {n: rows * cols for n, (rows, cols) in SHAPES.items()}
DENSITY = 0.05


def per_layer(density):
    return {n: round(density * size) for n, size in SIZES.items()}


def erk(density):
    """Erdos-Renyi-Kernel (RigL): layer density eps (rows + cols) / (rows x cols), eps such that the network
    keeps `density` of all weights. At 5% no lenet300 layer would exceed 1, so no layer is made dense."""
    eps = density * sum(SIZES.values()) / sum(sum(SHAPES[n]) for n in SHAPES)
    assert all(eps * sum(SHAPES[n]) / SIZES[n] <= 1 for n in SHAPES)
    return {n: round(eps * sum(SHAPES[n])) for n in SHAPES}


def magnitude_oneshot(cfg):
    """Hidden layers at --density; the output layer where IMP would leave it on reaching that density:
    (1 - output_fraction) ^ (levels IMP needs, log(density) / log(1 - prune_fraction))."""
    levels = math.log(DENSITY) / math.log(1 - cfg.prune.prune_fraction)
    out = round((1 - cfg.prune.output_fraction) ** levels * SIZES["out.weight"])
    return {**per_layer(DENSITY), "out.weight": out}


def imp_levels(cfg):
    alive = dict(SIZES)
    for _ in range(cfg.prune.levels):
        for n in alive:
            fraction = cfg.prune.output_fraction if n == "out.weight" else cfg.prune.prune_fraction
            alive[n] -= math.ceil(fraction * alive[n])
    return alive


EXPECTED = {  # method: (settings, expected {layer: kept} or, for global selection, one total)
    "imp": ({"prune.levels": 3}, imp_levels),
    "oneshot": ({}, magnitude_oneshot),
    "earlybird": ({"train.epochs": 2}, magnitude_oneshot),
    "cs": ({"prune.scope": "erk", "train.epochs": 2}, lambda cfg: erk(DENSITY)),
    **{m: ({"prune.scope": "erk"}, lambda cfg: erk(DENSITY))
       for m in ("snip", "grasp", "synflow", "magnitude", "random", "rigl", "set", "cts", "edgepopup")},
    "biprop": ({}, lambda cfg: per_layer(DENSITY)),
    "bayes-imp": ({"prune.levels": 2, "model.bayesian": True, "model.mc_samples": 2, "prune.bayes_deterministic": False,
                   "prune.bayes_criterion": "mu-then-sigma"}, imp_levels),
}


# Methods of text models refuse digits; the test named here asserts their tickets' exact counts instead.
COUNTED_ELSEWHERE = {
    "bert-imp": "tests/test_transformer.py::test_bert_tickets_through_run_and_show",
    "transfer": "tests/test_transformer.py::test_transfer_fine_tunes_another_runs_ticket",
    "lota": "tests/test_lota.py::test_mask_is_the_exact_top_of_the_task_vector",
    "ks-lottery": "tests/test_ks_lottery.py::test_run_retunes_only_the_selected_rows",
    "partial-lora": "tests/test_partial_lora.py::test_method_stores_an_exact_masked_adapter_merged_into_the_base",
}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_keeps_exactly_what_its_rule_says(tmp_path, method):
    if method in COUNTED_ELSEWHERE:
        pytest.skip(f"a text model's method: its counts are checked in {COUNTED_ELSEWHERE[method]}")
    assert method in EXPECTED, f"add {method}'s counting rule to this test (or, for a text model, the test " \
                               "that checks its counts to COUNTED_ELSEWHERE)"
    settings, expected = EXPECTED[method]
    cfg = tiny(**{"prune.method": method, "prune.density": DENSITY, "train.epochs": 1, "prune.controls": (),
                  "prune.synflow_rounds": 5, "prune.search_epochs": 1, "prune.cs_rounds": 1} | settings)
    summary = engine.run(cfg, runs_dir=tmp_path)
    mask, _ = engine.RunStore(tmp_path, summary["run_id"]).load_level("ticket", summary["levels"][-1]["level"])
    assert {n: int(m.sum()) for n, m in mask.items()} == expected(cfg)


def test_the_tests_counting_elsewhere_exist():
    for target in COUNTED_ELSEWHERE.values():
        path, _, name = target.partition("::")
        assert f"def {name}(" in (Path(__file__).parent.parent / path).read_text(), target
