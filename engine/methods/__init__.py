"""Ticket-finding methods and the controls every ticket is judged against.

A method is one module here that registers one `engine.registry.MethodSpec`: its run function
`run(ctx: engine.runner.RunContext)` produces tickets level by level with
`ctx.train_ticket(level, mask, start_weights, start_step)` (the runner has already trained the dense network,
`ctx.dense`, level 0), and its options dataclass arrives as `ctx.options`. A control is a function
`control(ctx, level, mask, start, start_step) -> (mask, start, start_step)` that turns a ticket into its
comparison, registered in `controls`. Every module of this package is imported (and so registered) on the
registry's first lookup: adding a method needs nothing outside its module.
"""
import importlib
import pkgutil

from . import controls, imp  # noqa: F401  (first: the classic method and the controls lead every listing)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
