"""Ticket-finding methods and the controls every ticket is judged against.

A method is a function `method(ctx: engine.runner.RunContext) -> None` that produces tickets level
by level with `ctx.train_ticket(level, mask, start_weights, start_step)`; the runner has already
trained the dense network (`ctx.dense`, level 0). A control is a function
`control(ctx, level, mask, start, start_step) -> (mask, start, start_step)` that turns a ticket into
its comparison. Adding one = one module here + its registry line.
"""
from . import bayes_imp, controls, cs, cts, dst, earlybird, imp, pai, strong  # noqa: F401  (importing registers them)
from . import bert, lota  # noqa: F401  (pre-trained models: BERT tickets, transfer, LoTA)
