"""How far a run has got, in training iterations, from the events it emits (`engine.events`).

One tracker, read by the CLI's tqdm bar (`lottery run`, `lottery compare`) and by the explorer's
`RunSession`, so both show the same numbers:

    progress = Progress()
    for event in events:
        bar.update(progress.update(event))   # update() returns the iterations this event advanced

The total is every iteration the run will train: the dense network, each level's ticket and controls, the
method's own further trainings (`MethodSpec.own_trainings`: bayes-imp's deterministic run, ks-lottery's
baselines), plus a mask search's steps (cs, cts), as `RunStarted` announces them. Stored levels that a resumed run
reuses count as done when their `LevelDone(reused=True)` arrives; a late-rewound ticket starts at its
rewind step, so its first `start_step` iterations count as done when it starts.
"""
from __future__ import annotations

from . import events as ev


class Progress:
    """Iterations done out of the run's total, with where the run is now (fed one event at a time).

    A `RunStarted` starts over, so one tracker follows the runs of a comparison one after the other."""

    def __init__(self) -> None:
        self.run_id = ""
        self.total = 0            # iterations to train, search steps included
        self.done = 0             # iterations trained (or found in the store) so far
        self.iterations = 0       # iterations of one full training
        self.level, self.variant = 0, ""
        self.last: ev.Evaluated | None = None  # the latest evaluation of the training in progress
        self._base = 0            # iterations done before the training in progress

    @property
    def fraction(self) -> float:
        """Done / total in [0, 1] (0 before the run has started)."""
        return min(1.0, self.done / self.total) if self.total else 0.0

    def update(self, e: ev.Event) -> int:
        """Apply one event; returns how many iterations it moved `done` on (what a progress bar adds)."""
        before = self.done
        if isinstance(e, ev.RunStarted):
            self.__init__()
            self.run_id, self.iterations = e.run_id, e.iterations
            self.total = e.trainings * e.iterations + e.search_steps
            return 0
        if isinstance(e, ev.TrainingStarted):
            self.level, self.variant, self.last = e.level, e.variant, None
            self._base = self.done
            self.done += e.start_step  # a late-rewound ticket skips its first steps
        elif isinstance(e, ev.Evaluated):
            self.last = e
            self.done = self._base + e.iteration
        elif isinstance(e, ev.LevelDone):
            # a reused level was never started; a trained one ends at its full length whatever it evaluated last
            self.done = self.done + self.iterations if e.reused else self._base + self.iterations
            self._base = self.done
        elif isinstance(e, ev.RunFinished):
            self.done = self.total
        return self.done - before


class SweepProgress:
    """Iterations done out of the total of every run started so far, for runs that train at the same time
    (a sweep on several workers): one `Progress` per run id, fed the runs' interleaved events."""

    def __init__(self) -> None:
        self.runs: dict[str, Progress] = {}

    @property
    def total(self) -> int:
        return sum(p.total for p in self.runs.values())

    @property
    def done(self) -> int:
        return sum(p.done for p in self.runs.values())

    def update(self, e: ev.Event) -> int:
        """Apply one event to its run's tracker; returns the iterations it moved the sweep on."""
        return self.runs.setdefault(e.run_id, Progress()).update(e)
