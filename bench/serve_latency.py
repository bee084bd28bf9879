"""How responsive is `lottery serve` while it trains? (a script, not a test)

Starts `lottery serve` on a free localhost port with a temporary runs directory and drives it with
Playwright + Debian's Chromium (/usr/bin/chromium):

1. time to first plot: from starting the server process to the first rendered Bokeh canvas on the page
   (the browser is started beforehand, so its own start-up is not counted), and to the launch panel
   (the server imports torch after the first page has loaded; until then the panel says "loading engine…");
2. launches a run through the page (default: epochs 60, levels 3) and, while it trains, polls a static
   file of the server (HEAD /static/js/bokeh.min.js, served by Tornado on the event loop, no Panel
   session involved) from a thread every 20 ms: the longest response is the longest event-loop stall;
   in the page, the longest gap between requestAnimationFrame callbacks (browser-side jank);
3. then clicks Cancel and times click -> "cancelled" in the status: how long a user waits for the server
   to act on a click while it trains (websocket messages queue behind the live-plot updates).

    python bench/serve_latency.py [--epochs 60] [--levels 3] [--measure-s 30] [--threads N] [--json]

--threads N sets OMP_NUM_THREADS for the server (default: the environment's, i.e. torch's default of one
thread per core). Targets: first plot < 3 s, longest stall < 200 ms.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
STATIC = "/static/js/bokeh.min.js"
FIRST_PLOT_TARGET_S = 3.0
STALL_TARGET_MS = 200.0

RAF_JS = """() => {
  window.__gap = {max: 0, n: 0, last: performance.now(), on: true};
  const tick = (t) => {
    const g = window.__gap;
    g.max = Math.max(g.max, t - g.last); g.last = t; g.n += 1;
    if (g.on) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head(port: int, timeout: float = 5.0) -> float:
    """Seconds for one HEAD of a static file on a fresh connection (raises OSError when nobody answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t = time.perf_counter()
        conn.request("HEAD", STATIC)
        conn.getresponse().read()
        return time.perf_counter() - t
    finally:
        conn.close()


class Poller(threading.Thread):
    """HEAD the static file every `period` s until stopped; keeps every response time."""

    def __init__(self, port: int, period: float):
        super().__init__(daemon=True)
        self.port, self.period = port, period
        self.latencies: list[float] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_at = time.perf_counter()
        while not self._halt.is_set():
            t = time.perf_counter()
            try:
                conn.request("HEAD", STATIC)
                conn.getresponse().read()
                self.latencies.append(time.perf_counter() - t)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            next_at += self.period
            self._halt.wait(max(0.0, next_at - time.perf_counter()))
            next_at = max(next_at, time.perf_counter() - self.period)  # after a stall: no burst of catch-up
        conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)


def set_value(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


STATUS_JS = """e => Array.from((e.shadowRoot || e).children)
  .filter(c => c.tagName !== 'STYLE' && c.tagName !== 'LINK').map(c => c.innerText).join(' ').trim()"""


def status_text(page) -> str:
    return page.locator(".run-status").evaluate(STATUS_JS)


def ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--measure-s", type=float, default=30.0, help="seconds of training to measure (bounded)")
    ap.add_argument("--poll-ms", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        print(f"error: {CHROMIUM} not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    log = open(root / "serve.log", "wb")
    out: dict = {"epochs": args.epochs, "levels": args.levels, "server_threads": env.get("OMP_NUM_THREADS",
                                                                                          "default"),
                 "cpus": os.cpu_count()}
    proc = None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # ---------------------------------------------------------- 1. time to first plot
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "serve", "--runs-dir",
                                     str(root / "runs"), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            deadline = t0 + 90
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}; see {root / 'serve.log'}")
                try:
                    head(port, timeout=1)
                    break
                except OSError:
                    if time.perf_counter() > deadline:
                        raise RuntimeError("server did not answer within 90 s")
                    time.sleep(0.02)
            out["server_answers_s"] = round(time.perf_counter() - t0, 3)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator(".live-plot canvas").first).to_be_visible(timeout=60_000)
            out["first_plot_s"] = round(time.perf_counter() - t0, 3)
            expect(page.get_by_role("button", name="Launch")).to_be_enabled(timeout=60_000)
            out["launch_ready_s"] = round(time.perf_counter() - t0, 3)
            # a second page load on the warm server: what a user opening the app sees after start-up
            t1 = time.perf_counter()
            page.reload()
            expect(page.locator(".live-plot canvas").first).to_be_visible(timeout=60_000)
            out["warm_page_plot_s"] = round(time.perf_counter() - t1, 3)

            idle = [head(port) for _ in range(25)]
            out["idle_median_ms"] = ms(statistics.median(idle))

            # ---------------------------------------------------------- 2. stalls while training
            set_value(page, "epochs", args.epochs)
            set_value(page, "levels", args.levels)
            page.get_by_role("button", name="Launch").click()
            expect(page.locator(".run-status")).to_contain_text("iteration", timeout=120_000)
            page.evaluate(RAF_JS)
            poller = Poller(port, args.poll_ms / 1000)
            t_train = time.perf_counter()
            poller.start()
            end = t_train + args.measure_s
            finished = False
            while time.perf_counter() < end:  # bounded: at most --measure-s
                page.wait_for_timeout(250)   # lets Playwright process page events while we wait
                text = status_text(page)
                if "completed" in text or "failed" in text:
                    finished = True
                    break
            poller.stop()
            gap = page.evaluate("() => { window.__gap.on = false; return window.__gap; }")
            lat = sorted(poller.latencies)
            out.update({
                "measured_s": round(time.perf_counter() - t_train, 1), "polls": len(lat),
                "poll_errors": poller.errors, "run_finished_while_measuring": finished,
                "median_ms": ms(statistics.median(lat)) if lat else None,
                "p99_ms": ms(lat[min(len(lat) - 1, int(0.99 * len(lat)))]) if lat else None,
                "max_stall_ms": ms(lat[-1]) if lat else None,
                "polls_over_200ms": sum(x > 0.2 for x in lat),
                "raf_max_gap_ms": round(gap["max"], 1), "raf_frames": gap["n"],
                "status_at_end": status_text(page)[:120]})

            # ---------------------------------------------------------- 3. click -> server -> page
            if not finished:
                t_click = time.perf_counter()
                page.get_by_role("button", name="Cancel").click()
                expect(page.locator(".run-status")).to_contain_text("cancel", timeout=120_000)
                out["cancel_ack_s"] = round(time.perf_counter() - t_click, 2)  # "cancelling..." or "cancelled"
                expect(page.locator(".run-status")).to_contain_text("cancelled", timeout=120_000)
                out["cancel_done_s"] = round(time.perf_counter() - t_click, 2)
        finally:
            browser.close()
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    mark = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    print(f"lottery serve latency  (cpus {out['cpus']}, server OMP threads {out['server_threads']}, "
          f"run: epochs {args.epochs}, levels {args.levels})")
    print(f"  server answers HTTP          {out['server_answers_s']:7.2f} s")
    print(f"  time to first plot           {out['first_plot_s']:7.2f} s   target < {FIRST_PLOT_TARGET_S:.0f} s "
          f"{mark(out['first_plot_s'] < FIRST_PLOT_TARGET_S)}")
    print(f"  launch panel ready           {out['launch_ready_s']:7.2f} s")
    print(f"  page reload to plot (warm)   {out['warm_page_plot_s']:7.2f} s")
    print(f"  idle HEAD median             {out['idle_median_ms']:7.1f} ms")
    print(f"  while training ({out['measured_s']} s, {out['polls']} polls every {args.poll_ms:.0f} ms):")
    print(f"    median latency             {out['median_ms']:7.1f} ms")
    print(f"    p99 latency                {out['p99_ms']:7.1f} ms")
    print(f"    max stall                  {out['max_stall_ms']:7.1f} ms   target < {STALL_TARGET_MS:.0f} ms "
          f"{mark(out['max_stall_ms'] < STALL_TARGET_MS)}")
    print(f"    polls over 200 ms          {out['polls_over_200ms']:7d}")
    print(f"    browser max frame gap      {out['raf_max_gap_ms']:7.1f} ms   ({out['raf_frames']} frames)")
    if "cancel_ack_s" in out:
        print(f"  Cancel click -> acknowledged {out['cancel_ack_s']:7.2f} s")
        print(f"  Cancel click -> cancelled    {out['cancel_done_s']:7.2f} s")
    else:
        print("  (run finished while measuring: no cancel timing; raise --epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
