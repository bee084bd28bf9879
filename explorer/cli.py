"""The `lottery` command: the engine's commands plus the explorer's `serve` and `report`.

The engine's CLI knows nothing of the UI; this module adds the UI commands and imports Panel only when
one of them runs, so `lottery run` starts as fast as the engine alone. The other way round, `lottery serve`
must not wait for torch: building the engine's parser imports it (the run flags list the registered models
and methods), so a plain `lottery serve ...` is parsed here and the app imports torch in the background.

Every serve flag is checked before the banner is printed and before anything is bound. `--allow-remote`
keeps Bokeh's websocket origin allow-list: the bound address (for 0.0.0.0, this host's names and
addresses) and localhost, plus each `--allow-origin HOST[:PORT]`; a page served from anywhere else cannot
open a session (its websocket handshake gets 403).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from urllib.parse import urlsplit

from engine.errors import ConfigError, LotteryError

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def check_serve_args(args) -> None:
    """ConfigError for the first bad serve flag (before the banner, before Panel is imported)."""
    from engine.store import runs_root  # no torch: the store imports it only to read tensors

    if not 1 <= args.port <= 65535:
        raise ConfigError("--port", args.port, "must be a TCP port in 1..65535")
    cores = os.cpu_count() or 1
    if not 0 <= args.torch_threads <= cores:
        raise ConfigError("--torch-threads", args.torch_threads, f"must be 0 (the default: one less than the "
                          f"cores, at least 1) up to {cores}, the cores of this machine")
    if args.address not in LOCAL_ADDRESSES and not args.allow_remote:
        raise ConfigError("--address", args.address, "binding beyond localhost needs --allow-remote")
    if args.allow_origin and not args.allow_remote:
        raise ConfigError("--allow-origin", args.allow_origin[0], "needs --allow-remote (without it only pages "
                          "of this server on localhost can connect)")
    websocket_origins(args)  # each --allow-origin is well-formed
    try:
        socket.getaddrinfo(args.address, args.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError("--address", args.address, f"is not an address to bind ({e})") from None
    runs_root(args.runs_dir)  # a file where the runs dir should be


def websocket_origins(args) -> list[str]:
    """HOST:PORT origins whose pages may open a session: localhost, the bound address (a wildcard address
    stands for this host's names and addresses), and each --allow-origin."""
    hosts = ["127.0.0.1", "localhost"]
    address = args.address.lower()
    if address in WILDCARD_ADDRESSES:
        hosts += _this_host()
    elif address not in hosts:
        hosts.append(address)
    origins = [f"[{h}]:{args.port}" if ":" in h else f"{h}:{args.port}" for h in hosts]
    origins += [_origin(text) for text in args.allow_origin or ()]
    return list(dict.fromkeys(origins))


def _this_host() -> list[str]:
    names = [socket.gethostname(), socket.getfqdn()]
    try:
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:  # a host whose name does not resolve: its names still count
        pass
    return [n.lower() for n in names if n]


def _origin(text: str) -> str:
    """"lab.example.org:8443" or "https://lab.example.org" -> "host:port" as Bokeh compares origins (a
    missing port is the scheme's: 80, or 443 for https)."""
    raw = text.strip().lower()
    parsed = urlsplit(raw if "://" in raw else "http://" + raw)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if (not parsed.hostname or "*" in raw or parsed.path not in ("", "/") or parsed.query or parsed.fragment
            or parsed.username or parsed.scheme not in ("http", "https") or port == -1):
        raise ConfigError("--allow-origin", text, "must be HOST or HOST:PORT as the browser's address bar shows "
                          "it, e.g. lab.example.org:8443 (no wildcards, no path)")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port or (443 if parsed.scheme == 'https' else 80)}"


def cmd_serve(args) -> int:
    check_serve_args(args)
    origins = websocket_origins(args)

    import panel as pn

    from . import engine_import, offline
    from .app import session_app

    # Leave a core to the event loop: runs train on worker threads of this process, and torch's default
    # of one thread per core starves the server (and stalls badly when anything else runs).
    engine_import.start_later(torch_threads=args.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    pn.extension("tabulator", notifications=False)
    # Components are styled by the page's design (its template's) from their first render, not by Panel's
    # default design first; and offline.Fast computes each component type's styling once.
    pn.config.design = offline.Fast
    offline.without_mathjax()  # 1.8 MB less script on every page
    scripts_before_session()  # the page's scripts run in the browser while its session is built
    print(f"Lottery Ticket Explorer on http://{args.address}:{args.port} (runs in {args.runs_dir}); Ctrl-C stops",
          file=sys.stderr)
    if args.allow_remote:
        print(f"remote mode: pages from {', '.join(origins)} may connect; anyone who can reach them can launch, "
              "cancel and delete runs (no authentication)", file=sys.stderr)
    try:
        pn.serve({"/": lambda: session_app(args.runs_dir)}, address=args.address, port=args.port, show=args.show,
                 websocket_origin=origins, title="Lottery Ticket Explorer", threaded=False,
                 extra_patterns=static_routes(),
                 # gzip across a network (the page's 4.3 MB of scripts shrink to about a quarter); on this
                 # machine's loopback it would only cost the event loop ~0.1-0.2 s of CPU per fresh page
                 compress_response=args.allow_remote)
    except OSError as e:  # typically: the port is taken
        raise ConfigError("--port", args.port, f"cannot serve on {args.address}:{args.port} ({e.strerror}); "
                          "pick another port") from None
    return 0


def scripts_before_session() -> None:
    """Pages start with their scripts, sent before the page's session is built (this process's pages).

    Panel's page handler builds the page's session (the app's document: a third of a second of CPU, far more
    on a busy machine) and only then sends the HTML, whose head lists the page's scripts (BokehJS, Panel,
    Tabulator: 4 MB the browser fetches, compiles and runs in about a second). The handler installed here
    first sends the head's opening with those script tags, serves the scripts the browser then asks for
    (the event loop is free until the session is built), then builds the session and sends the rest of the
    page without them: the browser compiles and runs BokehJS while the server builds the page
    (bench/serve_latency.py: HTML -> DOMContentLoaded 1.44 -> 0.68 s, first plot 0.4 s sooner, on the busy
    2-core machine). The tags come from the same function and server resources as the page's own
    (panel.io.resources.bundle_resources), and a page that lacks one of them (it would run twice) is logged.
    Served with no prefix and no authentication, as `lottery serve` is; otherwise Panel's handler runs as is.
    """
    import logging
    import re

    from bokeh.server import urls
    from panel.config import config
    from panel.io.resources import Resources, bundle_resources
    from panel.io.server import DocHandler

    shims = '<script type="esms-options">{"shimMode": true}</script>'  # before es-module-shims, as Panel puts it

    class ScriptsFirst(DocHandler):
        _sent: list[str] | None = None  # the script URLs sent ahead of the page

        async def get(self, *args, **kwargs):
            if self.application.prefix or config.oauth_provider or config.basic_auth or config.authorize_callback:
                return await super().get(*args, **kwargs)
            bundle = bundle_resources(None, Resources.from_bokeh(self.application.resources()))
            sent = [str(url) for url in bundle.js_files]
            self.set_header("Content-Type", "text/html")
            self.set_header("Cache-Control", "no-store")  # as Panel's handler: the page holds a session token
            self.write('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n' + shims + "\n"
                       + "".join(f'<script type="text/javascript" src="{url}"></script>\n' for url in sent))
            since = StaticTraffic.started
            await self.flush()
            self._sent = sent
            await StaticTraffic.settled(since)  # the browser has its scripts and runs them while the page is built
            await super().get(*args, **kwargs)

        def write(self, chunk):
            if self._sent is not None and isinstance(chunk, str):  # the page, after its scripts went ahead
                chunk = re.sub(r"^\s*<!DOCTYPE html>\s*<html[^>]*>\s*<head>", "", chunk, count=1)
                chunk = chunk.replace(shims, "", 1)
                for url in self._sent:
                    tag = f'<script type="text/javascript" src="{url}"></script>'
                    if tag not in chunk:
                        logging.getLogger(__name__).warning("page without the script sent ahead: %s", url)
                    chunk = chunk.replace(tag, "", 1)
                self._sent = None
            return super().write(chunk)

    pattern = next(i for i, p in enumerate(urls.per_app_patterns) if issubclass(p[1], DocHandler))  # or ours
    urls.per_app_patterns[pattern] = (urls.per_app_patterns[pattern][0], ScriptsFirst)


EXTENSION_CACHE_S = 24 * 3600  # Panel's unversioned bundles: cached a day, then revalidated (ETag)


class StaticTraffic:
    """The static files (scripts, stylesheets) being served, so that a page's session is built once its
    scripts are out (scripts_before_session)."""
    started = 0        # requests started so far
    in_flight = 0
    last_done = 0.0    # time.monotonic() when the last one finished

    @classmethod
    async def settled(cls, since: int, idle_s: float = 0.03, none_s: float = 0.05, limit_s: float = 1.0) -> None:
        """Return once the requests started after `since` (a value of `started`) are all served and none has
        come for idle_s; when none came within none_s (the browser had the scripts cached, or is far away:
        they then wait for the session, as before); after limit_s at most (other pages' files being served)."""
        import asyncio
        import time

        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            if cls.in_flight == 0 and (now - cls.last_done >= idle_s if cls.started > since else now - t0 >= none_s):
                return


def static_routes() -> list[tuple]:
    """Bokeh's two static routes (/static/extensions/..., /static/...) with every request counted in
    StaticTraffic, and a Cache-Control on every extension file.

    Panel links some of the page's bundles without a version argument (fast-components.js, 0.85 MB;
    tabulator.min.js, 0.4 MB; luxon, es-module-shims...), and Tornado marks only `?v=` URLs cacheable: each
    page load fetched them again. They change only with Panel, whose version the project pins. Routes given
    to the server come before Bokeh's own, so these serve the same files from the same folders."""
    import time

    from bokeh.server.urls import toplevel_patterns

    def counted(handler):
        class Counted(handler):
            def prepare(self):
                StaticTraffic.started += 1
                StaticTraffic.in_flight += 1
                self._counted = True
                return super().prepare()

            def on_finish(self):
                if getattr(self, "_counted", False):
                    StaticTraffic.in_flight -= 1
                    StaticTraffic.last_done = time.monotonic()
                super().on_finish()
        return Counted

    patterns = {p[0]: p for p in toplevel_patterns}
    route, handler, kwargs = patterns[r"/static/extensions/(.*)"]

    class CacheableExtensions(counted(handler)):
        def get_cache_time(self, path, modified, mime_type) -> int:
            return super().get_cache_time(path, modified, mime_type) or EXTENSION_CACHE_S

    route_js, handler_js = patterns[r"/static/(.*)"][:2]
    return [(route, CacheableExtensions, kwargs), (route_js, counted(handler_js))]


def cmd_report(args) -> int:
    from engine.store import check_output_file

    check_output_file(args.html, "--html", (".html", ".htm"))  # before any work (and Panel's import)

    from .report import write_report

    path = write_report(args.runs_dir, args.run_id, args.html)
    print(f"wrote {path}")
    return 0


def add_serve_flags(sv) -> None:
    sv.add_argument("--address", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sv.add_argument("--port", type=int, default=5006, help="port, 1-65535 (default: %(default)s)")
    sv.add_argument("--allow-remote", action="store_true", help="allow binding beyond localhost and pages "
                    "from the origins below; see the README's remote mode for what remote users can do")
    sv.add_argument("--allow-origin", action="append", default=[], metavar="HOST[:PORT]",
                    help="with --allow-remote: also accept sessions from pages of this origin (repeatable; "
                    "default: only the bound address or host, and localhost)")
    sv.add_argument("--show", action="store_true", help="open a browser tab")
    sv.add_argument("--torch-threads", type=int, default=0,
                    help="torch threads for training (default: 0, meaning one less than the cores, at least 1)")


def add_commands(sub, common) -> None:
    sv = sub.add_parser("serve", help="start the explorer app (Panel) on 127.0.0.1:5006")
    common(sv)
    add_serve_flags(sv)
    sv.set_defaults(func=cmd_serve)

    rp = sub.add_parser("report", help="write a standalone HTML page of a run's views")
    common(rp)
    rp.add_argument("run_id", metavar="RUN_ID")
    rp.add_argument("--html", required=True, help="output .html file")
    rp.set_defaults(func=cmd_report)


def plain_serve_args(argv: list[str]) -> argparse.Namespace | None:
    """The arguments of `lottery serve [serve flags] [--runs-dir DIR]`, or None for anything else (other
    commands, --help, --debug, a mistake), which the full parser handles and explains."""
    if argv[:1] != ["serve"]:
        return None
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    p.add_argument("--runs-dir", default="runs")  # engine.runner.DEFAULT_RUNS_DIR (importing it imports torch)
    add_serve_flags(p)
    try:
        args, rest = p.parse_known_args(argv[1:])
    except argparse.ArgumentError:
        return None
    return None if rest else args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = plain_serve_args(argv)
        if args is None:
            from engine import cli as engine_cli
            return engine_cli.main(argv, extend=add_commands)
        return cmd_serve(args)
    except LotteryError as e:  # as the engine's CLI reports it
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:  # Ctrl-C while starting up (importing torch or Panel) or serving
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
