"""`lottery analyze RUN instability` on a short run, as a new user first types it: the default rewind points
(0,25,100,500) do not fit a run of a few dozen iterations, and the errors said so in a way that misled."""
import pytest

from engine.cli import main

from conftest import stored_by_cli


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A 1-epoch IMP run with late rewinding (21 iterations), 1 level."""
    return stored_by_cli(tmp_path_factory.mktemp("instability_flags"), "run", "--rewind", "iter:5", "--epochs", "1",
                         "--levels", "1", "--controls", "reinit", "--quiet")


def _error(stored, capsys, *flags):
    runs, run_id = stored
    capsys.readouterr()
    assert main(["analyze", run_id, "instability", *flags, "--runs-dir", str(runs)]) == 2
    return capsys.readouterr().err.strip()


def test_a_level_the_run_lacks_is_named_before_the_rewind_points(stored, capsys):
    """--level 5 on a run of 1 level said '--rewind-points: (0, 25, 100, 500) is not valid', flags not typed."""
    assert _error(stored, capsys, "--level", "5").startswith("error: --level: 5 is not valid; run ")



def test_the_default_rewind_points_on_a_short_run_say_they_are_the_default_and_what_fits(stored, capsys):
    """Typed nothing but the analysis, a newcomer read '--rewind-points: (0, 25, 100, 500) is not valid' as a fault
    of theirs; it says these are the defaults and names points that fit (0 and the run's own rewind point)."""
    err = _error(stored, capsys)
    assert err.startswith("error: --rewind-points: (0, 25, 100, 500) is not valid; each must be in [0, 21) "), err
    assert "the default points are for longer runs: e.g. --rewind-points 0,5" in err, err
    assert "the default" not in _error(stored, capsys, "--rewind-points", "0,30")  # typed: no such note
