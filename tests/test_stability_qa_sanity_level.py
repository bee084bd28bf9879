"""`lottery analyze RUN sanity --level 9` on a run of 2 levels named the typed value as a list ('--level: [9] is not
valid'): the flag takes one level, and the error gives it as typed."""
from engine.cli import main

from conftest import stored_by_cli


def test_a_level_the_run_lacks_is_named_as_typed(tmp_path, capsys):
    runs, run_id = stored_by_cli(tmp_path, "run", "--epochs", "1", "--levels", "1", "--controls", "reinit", "--quiet")
    capsys.readouterr()
    assert main(["analyze", run_id, "sanity", "--level", "9", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err.strip() == "error: --level: 9 is not valid; completed ticket levels of this run: [1]"
