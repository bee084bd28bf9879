"""The `lottery` command: the engine's commands plus the explorer's `serve` and `report`.

The engine's CLI knows nothing of the UI; this module adds the UI commands and imports Panel only when
one of them runs, so `lottery run` starts as fast as the engine alone.
"""
from __future__ import annotations

import os
import sys

from engine import cli as engine_cli


def cmd_serve(args) -> int:
    import panel as pn

    from .app import session_app

    if args.address not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote:
        raise engine_cli.ConfigError("--address", args.address, "binding beyond localhost needs --allow-remote")
    # Leave a core to the event loop: runs train on worker threads of this process, and torch's default
    # of one thread per core starves the server (and stalls badly when anything else runs).
    import torch
    torch.set_num_threads(args.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    pn.extension("tabulator", notifications=False)
    print(f"Lottery Ticket Explorer on http://{args.address}:{args.port} (runs in {args.runs_dir}); Ctrl-C stops",
          file=sys.stderr)
    try:
        pn.serve({"/": lambda: session_app(args.runs_dir)}, address=args.address, port=args.port, show=args.show,
                 websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}",
                                   f"127.0.0.1:{args.port}"] if not args.allow_remote else ["*"],
                 title="Lottery Ticket Explorer", threaded=False)
    except OSError as e:  # typically: the port is taken
        raise engine_cli.ConfigError("--port", args.port, f"cannot serve on {args.address}:{args.port} ({e.strerror}); "
                                     "pick another port") from None
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.runs_dir, args.run_id, args.html)
    print(f"wrote {path}")
    return 0


def add_commands(sub, common) -> None:
    sv = sub.add_parser("serve", help="start the explorer app (Panel) on 127.0.0.1:5006")
    common(sv)
    sv.add_argument("--address", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sv.add_argument("--port", type=int, default=5006, help="port (default: %(default)s)")
    sv.add_argument("--allow-remote", action="store_true", help="allow binding beyond localhost")
    sv.add_argument("--show", action="store_true", help="open a browser tab")
    sv.add_argument("--torch-threads", type=int, default=0,
                    help="torch threads for training (default: one less than the cores, at least 1)")
    sv.set_defaults(func=cmd_serve)

    rp = sub.add_parser("report", help="write a standalone HTML page of a run's views")
    common(rp)
    rp.add_argument("run_id", metavar="RUN_ID")
    rp.add_argument("--html", required=True, help="output .html file")
    rp.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    return engine_cli.main(argv, extend=add_commands)


if __name__ == "__main__":
    sys.exit(main())
