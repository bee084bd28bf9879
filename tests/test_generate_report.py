"""`lottery generate`'s report says of every near-copy count whether it is before or after REPAIR: the novelty
line counted the nets after REPAIR and the REPAIR line before it, unlabelled, so a zoo printed "near copies 0%"
and "near copies as the flow gave them 12%" side by side."""
import copy

import pytest

from engine import generate as G
from engine import zoo as Z

FAST = dict(steps=30, samples=4, ode_steps=4, hidden=32, pca=3)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The same flow's nets with and without REPAIR, from one 5-member dense zoo (tiny, trained once)."""
    runs_dir = tmp_path_factory.mktemp("report") / "runs"
    options = Z.ZooOptions(members=5)
    config = Z.zoo_config(options, {"model.model": "mlp", "model.hidden": (12,), "train.epochs": 2,
                                    "train.batch_size": 100, "device": "cpu"}, runs_dir=runs_dir)
    zoo = Z.train_zoo(options, config, runs_dir=runs_dir)["run_id"]
    return (G.generate(runs_dir, zoo, G.GenerateOptions(repair="mix", **FAST)),
            G.generate(runs_dir, zoo, G.GenerateOptions(repair="none", **FAST)))


def novelty_lines(text: str) -> list[str]:
    """The report's novelty block: its first line and the indented lines under it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  novelty"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("                 "))
    return lines[start:end]


def test_stored_novelty_says_which_nets_it_measured_and_the_counts_before_repair_are_the_flows(reports):
    fixed, plain = reports
    assert fixed["novelty"]["after_repair"] is True and plain["novelty"]["after_repair"] is False
    before = fixed["repair"]
    typical = fixed["novelty"]["zoo_nn_median"]
    assert before["near_copy_share_before"] == pytest.approx(
        sum(d < G.NEAR_COPY * typical for d in before["generated_nn_before"]) / len(before["generated_nn_before"]))
    # the flow's nets before REPAIR are the plain generation's
    assert before["near_copy_share_before"] == plain["novelty"]["near_copy_share"]


def test_each_near_copy_count_printed_says_before_or_after_repair(reports):
    fixed, _ = reports
    r = copy.deepcopy(fixed)  # a small zoo's case: REPAIR moved the one near copy in eight off its member
    r["repair"]["generated_nn_before"] = [1.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    r["repair"]["near_copy_share_before"] = 0.125
    r["novelty"].update(generated_nn=[8.0] * 8, generated_nn_median=8.0, near_copy_share=0.0, zoo_nn_median=10.0)
    text = G.format_report(r)
    block = novelty_lines(text)
    before = next(line for line in block if "before REPAIR" in line)
    after = next(line for line in block if "after REPAIR" in line)
    assert "near copies 12%" in before and "generated median 9" in before
    assert "near copies 0%" in after and "generated median 8" in after
    assert f"< {G.NEAR_COPY} x" in block[0] and "10" in block[0]  # the threshold, stated once for both
    # no other line counts near copies: the REPAIR line no longer gives a third, unlabelled figure
    counted = [line for line in text.splitlines() if "near copies" in line]
    assert counted == [before, after]
    repair_line = next(line for line in text.splitlines() if line.startswith("  REPAIR"))
    assert "%" not in repair_line and "targets: mix" in repair_line


def test_without_repair_the_one_count_says_so(reports):
    _, plain = reports
    text = G.format_report(plain)
    counted = [line for line in text.splitlines() if "near copies" in line]
    assert len(counted) == 1 and "no REPAIR" in counted[0]
    assert f"near copies {100 * plain['novelty']['near_copy_share']:.0f}%" in counted[0]
    assert "  REPAIR         not applied" in text


def test_reports_stored_before_the_novelty_said_which_nets_read_alike(reports):
    fixed, plain = reports
    for r in (fixed, plain):
        old = copy.deepcopy(r)
        del old["novelty"]["after_repair"]
        assert G.format_report(old) == G.format_report(r)
    older = copy.deepcopy(plain)  # stored before REPAIR existed: no "repair" at all
    del older["repair"], older["novelty"]["after_repair"]
    assert G.format_report(older) == G.format_report(plain)
