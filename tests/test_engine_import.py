"""`lottery serve`'s background import of HoloViews (explorer.engine_import._import_plotting) beside the event
loop's Panel pane lookups, which import `holoviews.core.dimension` as soon as `holoviews` is in sys.modules: the
two imports met in a deadlock of module locks that Python resolved with an ImportError in the background thread
(most times they met) and HoloViews' package imported twice over. Each attempt is a fresh interpreter (the race
needs HoloViews not yet imported); three attempts, as the two threads meet only most of the time."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import threading, traceback
import panel as pn
from explorer import engine_import

failures = []
traceback.print_exc = lambda *a, **k: failures.append(traceback.format_exc().strip().splitlines()[-1])
done = threading.Event()
threading.Thread(target=lambda: (engine_import._import_plotting(), done.set())).start()
lookups = 0
while not done.is_set():
    pn.panel(object())  # Panel asks each pane type whether it applies: HoloViews' imports holoviews.core.dimension
    lookups += 1
import holoviews as hv
assert type(pn.panel(hv.Curve([1, 2]))).__name__ == "HoloViews"
print("failures:", failures, "lookups during the import:", lookups)
'''


def test_the_background_holoviews_import_and_the_event_loops_pane_lookups_do_not_break_each_other():
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "failures: []" in done.stdout, done.stdout
