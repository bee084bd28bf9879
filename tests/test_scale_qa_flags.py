"""`lottery compare`'s executor flags as a new user types them: a --scheduler that is not a Dask address, or one
given without --executor dask, and --workers where no worker pool reads it, are one-line errors naming the flag
(exit 2, nothing stored), found before any work: they were a 'unexpected ValueError' (exit 1), or silently
ignored, so a sweep meant for a cluster trained on this machine one run after another."""
import pytest

from engine.cli import main

SWEEP = ["compare", "--methods", "snip", "--densities", "0.5", "--seeds", "1", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("flags, says", [
    (["--executor", "dask", "--scheduler", "foo"], "--scheduler: 'foo' is not valid; must be a Dask scheduler's"),
    (["--executor", "dask", "--scheduler", "http://head:8786"], "--scheduler: 'http://head:8786' is not valid"),
    (["--executor", "dask", "--scheduler", "tcp://head:99999"], "--scheduler: 'tcp://head:99999' is not valid"),
    (["--executor", "dask", "--scheduler", "tcp://:8786"], "--scheduler: 'tcp://:8786' is not valid"),
    (["--scheduler", "tcp://head:8786"], "only --executor dask reads it"),
    (["--executor", "processes", "--scheduler", "tcp://head:8786"], "only --executor dask reads it"),
    (["--workers", "4"], "--workers: 4 is not valid; --executor local trains in this process"),
    (["--executor", "dask", "--scheduler", "tcp://head:8786", "--workers", "4"],
     "--workers: 4 is not valid; the cluster at --scheduler has its own workers"),
])
def test_executor_flags_that_cannot_apply_are_one_line_errors(tmp_path, capsys, flags, says):
    runs = tmp_path / "runs"
    assert main([*SWEEP, *flags, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()


@pytest.mark.parametrize("address", ["tcp://head:8786", "head:8786", "tls://10.0.0.1:8786", "tcp://[::1]:8786"])
def test_dask_scheduler_addresses_are_taken(address):
    from engine.compare import CompareOptions

    assert CompareOptions(executor="dask", scheduler=address).scheduler == address


def test_a_density_typed_twice_is_refused_as_a_method_typed_twice_is(tmp_path, capsys):
    """--methods imp,imp was refused, --densities 0.2,0.2 trained and printed one row for the two."""
    runs = tmp_path / "runs"
    assert main([*SWEEP[:3], "--densities", "0.2,0.2", *SWEEP[5:], "--runs-dir", str(runs)]) == 2
    assert "--densities: (0.2, 0.2) is not valid; each item may appear once" in capsys.readouterr().err
    assert not runs.exists()
