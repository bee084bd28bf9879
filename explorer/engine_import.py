"""`lottery serve` imports the engine's torch side on a worker thread, after its first page has loaded.

The stored-run views need only JSON, but the launch panel lists the registered models and methods and
the analyses tab runs the engine's analyses: both import torch, which takes a second or two of CPU,
nearly all of it holding the interpreter lock. Imported beside the first page being built and served, it
slows that page down about as much as if the page had waited for it. So a served page shows "loading
engine…" where those two go, the import starts once the first page has loaded in the browser (or IDLE_S
after start-up if nobody has asked for a page by then), and pages put the two in when it is done.
Starting it earlier, as soon as the page's HTML was sent, was tried: the server then sends the page's
scripts (4 MB, from the event loop) beside the import, and their transfer went from about 0.5 s to 3.5 s
on the busy 2-core machine (bench/serve_latency.py), a later first plot for an earlier launch panel.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import traceback

# With no page asked for by then, import anyway: the engine is ready when someone comes. Counted from before
# the server is set up (about a second on a busy machine): shorter, and a page asked for at once could be
# built beside the import.
IDLE_S = 2.0


class EngineImport:
    def __init__(self, torch_threads: int = 0):
        self.future: cf.Future = cf.Future()  # resolved when the import is done (or has failed)
        self.torch_threads = torch_threads
        self.pages = 0  # pages asked for so far (session_app counts them as it starts, and starts the import)
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Start the import on a worker thread (the first call does; later calls do nothing)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._work, name="import-engine", daemon=True).start()

    def ready(self) -> bool:
        return self.future.done() and self.future.exception() is None

    def _start_if_no_page(self) -> None:
        if not self.pages:
            self.start()

    def _work(self) -> None:
        try:
            import torch
            if self.torch_threads:
                torch.set_num_threads(self.torch_threads)
            import engine.analysis  # noqa: F401  (the Analyses tab's engine side; tab modules load on first visit)
            from engine.settings import run_settings
            run_settings()  # imports the models, data sets and methods the launch panel lists
            import markdown  # noqa: F401  (the launch panel's Markdown panes: Panel's parsers, ~0.1 s to import,
            import markdown_it  # noqa: F401  imported here rather than on the event loop as it builds the panel)
        except Exception as e:
            traceback.print_exc()  # the page says that it failed; the server's log says why
            self.future.set_exception(e)
        else:
            self.future.set_result(None)
            _import_plotting()


# held by a thread importing HoloViews: the background import below, and the explorer's own imports of its
# plotting modules on the event loop (`holoviews_import`), so that the two never run at once
_holoviews = threading.RLock()


@contextlib.contextmanager
def holoviews_import():
    """Around an import on the event loop that may import HoloViews (explorer.plots, a tab's module): it waits
    for the background import to end rather than importing the same package beside it. Two threads importing
    one package with circular imports take its module locks in opposite orders; Python breaks the deadlock by
    handing one a half-initialised module, an ImportError on either side ("The Accuracy tab failed to open")."""
    with _holoviews:
        yield


def _import_plotting() -> None:
    """HoloViews' Bokeh backend and pandas, which every tab but Live and Runs draws with: about a second of
    imports (several on a busy machine) that the first such tab's visit spent on the event loop. Imported here,
    once the launch panel can go in, so that the page is not kept waiting for them; a failure here is left to
    the tab's own import to report.

    Panel's pane lookup on the event loop imports `holoviews.core.dimension` and then `holoviews.plotting.plot`
    as soon as `holoviews` is in `sys.modules` (HoloViews.applies), outside `holoviews_import`. So those two
    first: each import takes its module's lock before its parents', so this thread holds their locks before
    `holoviews` appears, and the lookup waits for whole modules (tests/test_engine_import.py; imported the other
    way round, the two threads deadlocked on module locks and this one got an ImportError most times)."""
    try:
        with _holoviews:
            import holoviews.core.dimension  # noqa: F401
            import holoviews.plotting.plot  # noqa: F401
            import holoviews.plotting.bokeh  # noqa: F401
            import pandas  # noqa: F401
    except Exception:
        traceback.print_exc()


current: EngineImport | None = None  # the server's (start_later); None: ExplorerApp imports the engine itself


def start_later(torch_threads: int = 0) -> EngineImport:
    """For a server about to start: import the engine after its first page has loaded, or after IDLE_S."""
    global current
    current = EngineImport(torch_threads)
    timer = threading.Timer(IDLE_S, current._start_if_no_page)
    timer.daemon = True
    timer.start()
    return current
