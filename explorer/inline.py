"""A tab's panel shown on its own (inline in a notebook, `pn.serve(panel)`): nobody else polls its job.

In the app, ExplorerApp.tick calls every tab's poll() four times a second; a panel built by its `for_app`
leaves that to the app. Built directly (`WeightSpacePanel("runs")` in notebook 05, `StabilityPanel(...)` in
notebook 09) it follows the job a button started itself:

    follow(self)     # in the panel's start, after self.job is set: polls until self.job is None
"""
from __future__ import annotations

import panel as pn

POLL_MS = 250  # as often as the app's tick


def follow(panel) -> pn.io.PeriodicCallback:
    """Call `panel.poll()` every POLL_MS on the running event loop (a notebook kernel's, a served page's)
    until `panel.job` is None (finished, failed or cancelled)."""
    def tick():
        panel.poll()
        if panel.job is None:
            callback.stop()

    callback = pn.io.PeriodicCallback(callback=tick, period=POLL_MS)
    callback.start()
    return callback
