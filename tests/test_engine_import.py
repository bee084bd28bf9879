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


TAB_SCRIPT = r'''
import sys, threading, time, traceback
import panel as pn
from explorer import engine_import, views

failures = []
traceback.print_exc = lambda *a, **k: failures.append(traceback.format_exc().strip().splitlines()[-1])
done = threading.Event()
delay = float(sys.argv[1])

def background():
    time.sleep(delay)
    engine_import._import_plotting()
    done.set()

threading.Thread(target=background).start()
try:  # a stored-run tab's first plot (of no runs), on the event loop
    views.AccuracyView.draw(None, [])
except Exception as e:
    failures.append("event loop: " + repr(e))
done.wait()
print("failures:", failures)
'''


def test_a_stored_run_tabs_first_plot_and_the_background_holoviews_import_do_not_break_each_other():
    """The event loop importing HoloViews for a stored-run tab's first plot (Accuracy, Early stopping, Masks: no
    engine needed, so visited while the engine imports) when the background import starts tens of milliseconds
    later: both raised ImportError ("The Accuracy tab failed to open")."""
    for delay in ("0.03", "0.05", "0.07"):
        done = subprocess.run([sys.executable, "-c", TAB_SCRIPT, delay], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "failures: []" in done.stdout, (delay, done.stdout)
