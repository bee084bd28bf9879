"""`lottery show`'s instability line says from which rewind point the net stays stable: it named the first stable k
even when a later one was not ('k=0: 0.0100, k=20: 0.0500; stable (<= 2%) from k=0'), which reads as stable at 20 too."""
from engine.analysis.instability import format_instability


def _line(barriers, ks=(0, 20, 100)):
    return format_instability("instability-L0", {"rewind_points": list(ks), "barriers": barriers,
                                                 "stable_threshold": 0.02})


def test_stable_from_the_first_k_after_which_every_barrier_is_within_the_threshold():
    assert _line([0.05, 0.0, 0.01]).endswith("; stable (<= 2%) from k=20")
    assert _line([0.01, 0.05, 0.0]).endswith("; stable (<= 2%) from k=100")


def test_a_net_unstable_at_its_last_point_says_where_it_was_stable():
    assert _line([0.01, 0.0, 0.05]).endswith("; stable (<= 2%) only at k=0, 20 (not at k=100)")
    assert _line([0.05, 0.06, 0.07]).endswith("; never stable (<= 2%)")
