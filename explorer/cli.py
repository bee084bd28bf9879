"""The `lottery` command: the engine's commands plus the explorer's `serve` and `report`.

The engine's CLI knows nothing of the UI; this module adds the UI commands and imports Panel only when
one of them runs, so `lottery run` starts as fast as the engine alone. The other way round, `lottery serve`
must not wait for torch: building the engine's parser imports it (the run flags list the registered models
and methods), so a plain `lottery serve ...` is parsed here and the app imports torch in the background.
"""
from __future__ import annotations

import argparse
import os
import sys

from engine.errors import ConfigError, LotteryError


def cmd_serve(args) -> int:
    import panel as pn

    from . import engine_import
    from .app import session_app

    if args.address not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote:
        raise ConfigError("--address", args.address, "binding beyond localhost needs --allow-remote")
    # Leave a core to the event loop: runs train on worker threads of this process, and torch's default
    # of one thread per core starves the server (and stalls badly when anything else runs).
    engine_import.start_later(torch_threads=args.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    pn.extension("tabulator", notifications=False)
    print(f"Lottery Ticket Explorer on http://{args.address}:{args.port} (runs in {args.runs_dir}); Ctrl-C stops",
          file=sys.stderr)
    try:
        pn.serve({"/": lambda: session_app(args.runs_dir)}, address=args.address, port=args.port, show=args.show,
                 websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}",
                                   f"127.0.0.1:{args.port}"] if not args.allow_remote else ["*"],
                 title="Lottery Ticket Explorer", threaded=False)
    except OSError as e:  # typically: the port is taken
        raise ConfigError("--port", args.port, f"cannot serve on {args.address}:{args.port} ({e.strerror}); "
                          "pick another port") from None
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.runs_dir, args.run_id, args.html)
    print(f"wrote {path}")
    return 0


def add_serve_flags(sv) -> None:
    sv.add_argument("--address", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sv.add_argument("--port", type=int, default=5006, help="port (default: %(default)s)")
    sv.add_argument("--allow-remote", action="store_true", help="allow binding beyond localhost")
    sv.add_argument("--show", action="store_true", help="open a browser tab")
    sv.add_argument("--torch-threads", type=int, default=0,
                    help="torch threads for training (default: one less than the cores, at least 1)")


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
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument("--runs-dir", default="runs")  # engine.runner.DEFAULT_RUNS_DIR (importing it imports torch)
    add_serve_flags(p)
    try:
        args, rest = p.parse_known_args(argv[1:])
    except argparse.ArgumentError:
        return None
    return None if rest else args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = plain_serve_args(argv)
    if args is None:
        from engine import cli as engine_cli
        return engine_cli.main(argv, extend=add_commands)
    try:
        return cmd_serve(args)
    except LotteryError as e:  # as the engine's CLI reports it
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
