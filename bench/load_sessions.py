"""Load: several app sessions launching different runs at once. (a script, not a test)

Starts `lottery serve` on a free localhost port with a temporary runs dir, opens N pages (default 4, each its
own browser context, i.e. its own Panel session) in Debian's Chromium (/usr/bin/chromium), types a different
seed into each page's launch panel and clicks Launch on all of them within a second. Then:

1. every page must reach "completed" with its own run id (the typed seed reached the server, and pages did
   not take over each other's runs);
2. every run must be correct and separate: its summary and every stored mask and weight file are identical
   to those of the same config run alone in this process afterwards (one torch thread, as the server's
   single training thread here: same arithmetic, so any mixing of state between concurrent runs shows);
3. the server's event loop must never stall: a monitor inside the server process (a Tornado periodic
   callback every 20 ms) records how late each tick fires, from the first launch to the last completion.
   Target: longest stall < 500 ms.

    python bench/load_sessions.py [--pages 4] [--epochs 3] [--levels 2] [--json]

Figures measured on a shared machine are noisy; the report says how many cores it saw.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TICK_MS = 20
STALL_TARGET_MS = 500
STATUS_JS = """e => Array.from((e.shadowRoot || e).children)
  .filter(c => c.tagName !== 'STYLE' && c.tagName !== 'LINK').map(c => c.innerText).join(' ').trim()"""


# ---------------------------------------------------------------- the server side (a child process)
def serve_with_monitor(port: int, runs_dir: str, stats_path: str) -> int:
    """`lottery serve` with a lateness monitor on its event loop; the ticks' lateness goes to `stats_path`
    (rewritten every second, so the parent reads it while the server runs)."""
    import collections
    import threading
    import traceback

    from tornado.ioloop import IOLoop, PeriodicCallback

    from explorer.cli import main

    late: list[float] = []   # ms each tick came later than due
    busy: list[float] = []   # ms of CPU the event-loop thread itself used between two ticks
    blockers: collections.Counter = collections.Counter()  # what the loop thread ran during long gaps
    loop_thread = threading.get_ident()
    state = {"last": None, "cpu": None, "written": time.monotonic()}

    def tick():
        now, cpu = time.monotonic(), time.thread_time()
        if state["last"] is not None:
            late.append(max(0.0, (now - state["last"]) * 1000 - TICK_MS))
            busy.append((cpu - state["cpu"]) * 1000)
        state["last"], state["cpu"] = now, cpu
        if now - state["written"] > 1.0:
            state["written"] = now
            Path(stats_path + ".tmp").write_text(json.dumps({"late_ms": late, "busy_ms": busy,
                                                             "blockers": blockers.most_common(8)}))
            os.replace(stats_path + ".tmp", stats_path)

    def watchdog():
        """Samples the loop thread's stack while a tick is overdue by 200 ms: the code (ours, Panel's, Bokeh's)
        that holds the loop, or the wait it sits in when it is starved of CPU or the GIL."""
        while True:
            time.sleep(0.05)
            last = state["last"]
            frame = sys._current_frames().get(loop_thread)
            if last is None or frame is None or time.monotonic() - last < 0.2:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "/site-packages/" not in f.filename or "/panel/" in f.filename
                    or "/bokeh/" in f.filename or "/param/" in f.filename]
            top = ours[-6:] if ours else stack[-6:]
            app = [f for f in stack if "/explorer/" in f.filename or "/engine/" in f.filename][-1:]  # our caller
            blockers[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(top + app))] += 1

    threading.Thread(target=watchdog, daemon=True).start()
    IOLoop.current().add_callback(lambda: PeriodicCallback(tick, TICK_MS).start())  # runs once pn.serve starts it
    return main(["serve", "--port", str(port), "--runs-dir", runs_dir, "--torch-threads", "1"])


# ---------------------------------------------------------------- the browser side
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(port: int, proc, deadline_s: float = 120) -> None:
    import urllib.request

    end = time.time() + deadline_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/bokeh.min.js", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)


def set_value(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def digest_files(run_dir: Path) -> dict[str, str]:
    """sha256 of every mask and weight file of a run, by path inside it."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*.safetensors"))}


def comparable(summary: dict) -> dict:
    """A summary without what differs between two correct runs of one config (time, device name)."""
    def rows(rs):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rs]
    return {"run_id": summary["run_id"], "status": summary["status"], "dense": rows([summary["dense"]]),
            "levels": rows(summary["levels"]), "controls": {c: rows(r) for c, r in summary["controls"].items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=900, help="bound on waiting for the runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-child", nargs=3, metavar=("PORT", "RUNS", "STATS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_child:
        port, runs, stats = args.serve_child
        return serve_with_monitor(int(port), runs, stats)

    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        print(f"error: {CHROMIUM} not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="load-sessions-"))
    runs, stats = root / "runs", root / "stall.json"
    port = free_port()
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, __file__, "--serve-child", str(port), str(runs), str(stats)],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = {"pages": args.pages, "epochs": args.epochs, "levels": args.levels, "cpus": os.cpu_count(),
           "load_avg_1min": round(os.getloadavg()[0], 1)}  # above the cores: other work shares them
    ids: list[str] = []
    try:
        wait_for_server(port, proc)
        import engine  # after the server is up: the bench's own torch import does not slow its start

        configs = [engine.RunConfig().replace(**{"train.epochs": args.epochs, "prune.levels": args.levels,
                                                 "seed": seed, "device": "cpu"}) for seed in range(args.pages)]
        ids = [c.run_id for c in configs]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
            pages = []
            for seed in range(args.pages):
                page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
                page.set_default_timeout(120_000)
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.get_by_role("button", name="Launch")).to_be_enabled(timeout=180_000)
                set_value(page, "epochs", args.epochs)
                set_value(page, "levels", args.levels)
                set_value(page, "seed", seed)
                pages.append(page)
            before = len(json.loads(stats.read_text())["late_ms"]) if stats.exists() else 0
            t0 = time.perf_counter()
            for page in pages:  # all within a second: the runs train at the same time
                page.get_by_role("button", name="Launch").click()
            out["launch_spread_s"] = round(time.perf_counter() - t0, 2)
            done: dict[int, float] = {}
            end = t0 + args.timeout_s
            while len(done) < len(pages) and time.perf_counter() < end:
                for i, page in enumerate(pages):
                    if i not in done:
                        text = page.locator(".run-status").evaluate(STATUS_JS)
                        if "completed" in text or "failed" in text:
                            done[i] = time.perf_counter() - t0
                            out.setdefault("status", {})[ids[i]] = text[:160]
                pages[0].wait_for_timeout(250)
            out["finished"] = len(done)
            out["all_finished_s"] = round(max(done.values()), 1) if done else None
            time.sleep(1.5)  # the monitor writes its figures every second
            figures = json.loads(stats.read_text())
            late, busy = figures["late_ms"][before:], figures["busy_ms"][before:]
            browser.close()
        worst = max(range(len(late)), key=late.__getitem__)
        out.update({"ticks": len(late), "median_late_ms": round(statistics.median(late), 1),
                    "p99_late_ms": round(sorted(late)[int(0.99 * (len(late) - 1))], 1),
                    "max_stall_ms": round(late[worst], 1), "ticks_over_500ms": sum(x > 500 for x in late),
                    "loop_cpu_in_longest_stall_ms": round(busy[worst], 1), "max_loop_cpu_between_ticks_ms":
                    round(max(busy), 1), "blockers": figures["blockers"]})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    # ---------------------------------------------------------------- correct and separate
    import torch

    torch.set_num_threads(1)
    ok = []
    for cfg, run_id in zip(configs, ids):
        page_text = out.get("status", {}).get(run_id, "")
        served = json.loads((runs / run_id / "summary.json").read_text()) if (runs / run_id).exists() else None
        alone = engine.run(cfg, runs_dir=root / "alone")
        same = (served is not None and "completed" in page_text and run_id in page_text
                and comparable(served) == comparable(alone)
                and digest_files(runs / run_id) == digest_files(root / "alone" / run_id))
        ok.append(same)
    out["runs_correct_and_separate"] = f"{sum(ok)}/{len(ok)}"
    out["distinct_runs_in_store"] = len([d for d in runs.iterdir() if (d / "config.json").exists()])

    if args.json:
        print(json.dumps(out, indent=1))
    else:
        mark = "ok" if out["max_stall_ms"] < STALL_TARGET_MS else "MISSED"
        print(f"{args.pages} sessions launching different runs at once (cpus {out['cpus']}, load average "
              f"{out['load_avg_1min']} at start; epochs {args.epochs}, "
              f"levels {args.levels}; figures from a shared machine are noisy)")
        print(f"  launches clicked within      {out['launch_spread_s']:7.2f} s")
        print(f"  runs finished                {out['finished']}/{args.pages} after {out['all_finished_s']} s")
        print(f"  correct and separate         {out['runs_correct_and_separate']} (summary and every "
              "mask/weight file equal to the run alone)")
        print(f"  event loop, {out['ticks']} ticks of {TICK_MS} ms while they trained:")
        print(f"    median lateness            {out['median_late_ms']:7.1f} ms")
        print(f"    p99 lateness               {out['p99_late_ms']:7.1f} ms")
        print(f"    longest stall              {out['max_stall_ms']:7.1f} ms   target < {STALL_TARGET_MS} ms {mark}")
        print(f"    ticks over 500 ms          {out['ticks_over_500ms']:7d}")
        print(f"    loop's own CPU in that stall {out['loop_cpu_in_longest_stall_ms']:5.1f} ms   (the rest: waiting "
              "for a core or the GIL)")
        print(f"    most loop CPU between ticks {out['max_loop_cpu_between_ticks_ms']:6.1f} ms")
        print("  where the loop thread was during stalls (samples every 50 ms):")
        for where, n in out["blockers"]:
            print(f"    {n:4d}  {where}")
    passed = all(ok) and out["max_stall_ms"] < STALL_TARGET_MS
    if all(ok):
        shutil.rmtree(root)  # runs and log; kept when a run was wrong, to look at
    else:
        print(f"runs and the server's log kept in {root}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
