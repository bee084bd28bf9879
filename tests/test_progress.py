"""engine.progress: one count of iterations for the CLI's bar and the explorer's RunSession."""
import engine
from engine import events as ev
from engine.cli import _Progress
from engine.progress import Progress

from conftest import tiny


def _events(cfg, runs_dir, **kw):
    out = []
    engine.run(cfg, on_event=out.append, runs_dir=runs_dir, **kw)
    return out


def _trace(events):
    p = Progress()
    return p, [(p.update(e), p.done) for e in events]


def test_a_run_counts_every_iteration_once_and_ends_at_its_total(runs_dir):
    events = _events(tiny(), runs_dir)
    p, trace = _trace(events)
    started = events[0]
    assert isinstance(started, ev.RunStarted) and p.total == started.trainings * started.iterations
    assert all(step >= 0 for step, _ in trace)  # never goes back
    # after each level: exactly the finished trainings' iterations (counted independently of the tracker)
    finished = 0
    for e, (_, done) in zip(events, trace):
        if isinstance(e, ev.LevelDone):
            finished += 1
            assert done == finished * started.iterations, (e.level, e.variant)
    assert finished == started.trainings and p.done == p.total and p.fraction == 1.0


def test_a_resumed_run_counts_its_stored_levels_as_done(runs_dir):
    _events(tiny(), runs_dir)
    p, trace = _trace(_events(tiny(), runs_dir))  # everything is in the store: reused
    assert p.done == p.total > 0


def test_a_search_is_part_of_the_total(runs_dir):
    cfg = tiny(**{"prune.method": "cts", "prune.density": 0.5, "prune.search_epochs": 1, "train.epochs": 1})
    events = _events(cfg, runs_dir)
    p, trace = _trace(events)
    assert events[0].search_steps > 0 and p.total == events[0].trainings * events[0].iterations + events[0].search_steps
    search = [i for i, e in enumerate(events) if getattr(e, "variant", "") == "search"]
    advanced = trace[search[-1]][1] - trace[search[0]][1]
    assert 0 < advanced <= events[0].search_steps  # the search's own steps, before the ticket trains
    assert p.done == p.total


def test_the_cli_bar_shows_what_the_tracker_counts(runs_dir, capsys):
    events = _events(tiny(**{"prune.levels": 1}), runs_dir)
    bar = _Progress(quiet=False)
    reference = Progress()
    for e in events[:-1]:  # up to the end: the bar is still open
        bar(e)
        reference.update(e)
        assert bar.bar.n == reference.done
    bar(events[-1])
    assert bar.bar.n == bar.bar.total == reference.total
    assert "100%" in capsys.readouterr().err
