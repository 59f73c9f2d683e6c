"""`wsgictl`: talk to the daemon. Standard library only, so it starts fast.

Exit statuses follow systemctl: 0 when every named service is running (or
the action succeeded), 3 when one is not running, 4 for an unknown name,
1 when the daemon cannot be reached or an action failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.cli.client import Client, Unreachable
from supervisor.cli.offline import cmd_check, cmd_import, cmd_proxy_config, cmd_serve, cmd_units
from supervisor.cli.supervise import cmd_supervise
from supervisor.cli.talk import cmd_action, cmd_logs, cmd_reexec, cmd_reload_config, cmd_stack, cmd_status
from supervisor.control.protocol import EXIT_FAILED, EXIT_UNKNOWN
from supervisor.layout import DEFAULT_CONF_DIR, DEFAULT_RUNTIME_DIR


def _path_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--runtime-dir and --conf-dir: on the main parser with their defaults, and on every
    subcommand with none (SUPPRESS), so that a value given after the subcommand wins and
    one left out keeps the main parser's."""
    for flag, variable, default, what in (
        ("--runtime-dir", "WSGI_RUNTIME_DIR", DEFAULT_RUNTIME_DIR, "the daemon's runtime dir"),
        ("--conf-dir", "WSGI_CONF_DIR", DEFAULT_CONF_DIR, "the manifest dir"),
    ):
        value = os.environ.get(variable)
        now = f"; now {value}" if value else ""
        parser.add_argument(
            flag,
            type=Path,
            metavar="DIR",
            default=Path(value or default) if defaults else argparse.SUPPRESS,
            help=f"{what} (default: ${variable}, else {default}{now})",
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsgictl",
        description="Control wsgi-supervisor and its services.",
        epilog="--runtime-dir and --conf-dir go before or after the command.",
    )
    _path_options(p, defaults=True)
    paths = argparse.ArgumentParser(add_help=False)
    _path_options(paths, defaults=False)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text, parents=[paths])

    _daemon_commands(command)
    _offline_commands(command)
    # the shells' completion scripts ask this one (no help text: not listed among the commands)
    co = sub.add_parser(
        "complete", description="shell completion: what may come at word INDEX of WORDS", parents=[paths]
    )
    co.add_argument("index", type=int, metavar="INDEX")
    co.add_argument("words", nargs="*", metavar="WORDS", help="the command line's words, after --")
    return p


Command = Callable[..., argparse.ArgumentParser]


def _daemon_commands(command: Command) -> None:
    """The commands that talk to the daemon."""
    s = command("status", "state of services (exit 0 when every named one is running, 3 when one is not)")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    tp = command("top", "a live view of every service, refreshed every second, the worst first (q quits)")
    tp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default %(default)s)")

    st = command(
        "stack", "the Python stack of every worker process of a service (py-spy, run by the daemon) and what it serves"
    )
    st.add_argument("name", metavar="NAME")

    for verb, text in (
        ("start", "start services; wait until they are ready (or failed)"),
        ("stop", "stop services gracefully (in-flight requests finish; killed past their stop_timeout)"),
        (
            "restart",
            "stop, then start: an API gets a new vassal on the socket the daemon holds "
            "(requests wait in its queue); a worker a new process",
        ),
        (
            "reload",
            "graceful reload: an API starts a second vassal on the socket the daemon holds and retires "
            "the old one once the new one serves (new code that fails leaves the old serving); "
            "a worker is sent its reload_signal",
        ),
    ):
        a = command(verb, text)
        a.add_argument("names", nargs="*", metavar="NAME")
        a.add_argument("--all", action="store_true", help="every service of the manifest")
        a.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default %(default)s)")
        a.add_argument("--no-block", action="store_true", help="return once the daemon has the request")
        a.add_argument("-q", "--quiet", action="store_true", help="print only failures")
        if verb != "start":
            a.add_argument(
                "--drain",
                type=float,
                default=0.0,
                metavar="SECONDS",
                help="take the services out of the load balancer's rotation first and wait SECONDS before acting "
                "(back in rotation once done)",
            )

    for verb, text in (
        ("drain", "take services out of the load balancer's rotation (/health/NAME answers 503); they keep serving"),
        ("undrain", "put drained services back into the load balancer's rotation"),
    ):
        d = command(verb, text)
        d.add_argument("names", nargs="*", metavar="NAME")
        d.add_argument("--all", action="store_true", help="every service of the manifest")
        d.add_argument("-q", "--quiet", action="store_true", help="print only failures")

    lg = command("logs", "recent lines of services, in time order (and follow with -f)")
    lg.add_argument("names", nargs="*", metavar="NAME", help="services (default: all, and the daemon)")
    lg.add_argument("-n", "--lines", type=int, default=20, help="how many recent lines (default %(default)s)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    every = "every line, the servers' routine banner and notices too (journald keeps them at debug priority)"
    lg.add_argument("-v", "--verbose", "--all", action="store_true", help=every)

    sv = command("supervise", "the main process of wsgi@NAME.service (used by the unit)")
    sv.add_argument("name", metavar="NAME")
    sv.add_argument(
        "--reconnect", type=float, default=120.0, help="seconds to wait for a restarting daemon (default %(default)s)"
    )

    rc = command(
        "reload-config",
        "read the manifest again and apply the difference; wait until every change is done (or failed)",
    )
    rc.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the changes (default %(default)s); past them wsgictl exits 1 and the daemon "
        "carries on",
    )
    rc.add_argument(
        "--no-block",
        action="store_true",
        help="return once the daemon has read and taken the manifest (one that does not validate still fails)",
    )
    rx = command("daemon-reexec", "the daemon execs itself again (after an upgrade); services keep running")
    rx.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for it to answer again (default %(default)s)"
    )


def _offline_commands(command: Command) -> None:
    """The commands that need no daemon."""
    un = command("units", "systemd units")
    un_sub = un.add_subparsers(dest="units_cmd", required=True, metavar="COMMAND")
    ui = command("install", "write the units, pointing at this installation", un_sub)
    ui.add_argument("--dest", type=Path, default=Path("/etc/systemd/system"), help="(default %(default)s)")
    ui.add_argument("--socket-group", help="group of the API sockets (default: www-data if it exists)")

    px = command("proxy-config", "Apache or nginx config for every API with a mount")
    px.add_argument("server", choices=("apache", "nginx"))
    px.add_argument("--vhost", action="store_true", help="a whole VirtualHost / server block, not a snippet")
    px.add_argument("--listen", default="127.0.0.1:80", help="ADDR:PORT of the vhost (default %(default)s)")
    px.add_argument("--server-name", help="ServerName / server_name of the vhost")
    px.add_argument("--cert", help="TLS certificate file (turns TLS on)")
    px.add_argument("--key", help="TLS key file")
    px.add_argument("--timeout", type=int, default=300, help="proxy timeout in seconds (default %(default)s)")

    im = command(
        "import",
        "uWSGI ini files, Apache vhosts, systemd units, gunicorn command lines and config files -> a manifest (TOML)",
    )
    im.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="*.ini: uWSGI; *.service: systemd (a gunicorn ExecStart makes an API); *.py: a gunicorn config "
        "file, which is run here as gunicorn runs it (it is Python: import only your own); else an Apache vhost",
    )
    im.add_argument(
        "--gunicorn",
        action="append",
        default=[],
        metavar="CMDLINE",
        help="a gunicorn command line, quoted as one argument, e.g. 'gunicorn -w 4 -b unix:/run/x.sock "
        "placement.wsgi.api:application' (a -c config file in it is run here too); may be repeated",
    )

    se = command("serve", "one API in the foreground on wsgiref (a breakpoint works)")
    se.add_argument("name", metavar="NAME")
    se.add_argument("--port", type=int, default=8000, help="TCP port on --host (default %(default)s)")
    se.add_argument("--host", default="127.0.0.1", help="(default %(default)s)")
    se.add_argument("--force", action="store_true", help="even while the daemon serves it")

    ck = command(
        "check", "validate the manifest and what it names on this host (users, files, programs); starts nothing"
    )
    ck.add_argument(
        "--offline",
        action="store_true",
        help="the manifest alone, not what it names on this host (venvs, users, groups, files, programs): "
        "for manifests written for other hosts",
    )


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:
        # the reader went away (`wsgictl status --json | head`): nothing more to say, as systemctl
        # says nothing; stdout points at /dev/null so that the interpreter's last flush is quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _main(argv: list[str] | None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "complete":
        from supervisor.cli.completion import cmd_complete

        sys.exit(cmd_complete(parser, args))
    if args.cmd == "check":
        sys.exit(cmd_check(args))
    if args.cmd == "units":
        sys.exit(cmd_units(args))
    if args.cmd == "proxy-config":
        sys.exit(cmd_proxy_config(args))
    if args.cmd == "import":
        sys.exit(cmd_import(args))
    if args.cmd == "serve":
        sys.exit(cmd_serve(args))
    if args.cmd == "supervise":
        sys.exit(cmd_supervise(args))
    try:
        if args.cmd == "top":
            from supervisor.cli.top import cmd_top  # curses: only for top, so that status starts as fast

            sys.exit(cmd_top(args))  # with a connection of its own, made again when the daemon comes back
        client = Client(args.runtime_dir)
        commands = {
            "status": cmd_status,
            "logs": cmd_logs,
            "stack": cmd_stack,
            "reload-config": cmd_reload_config,
            "daemon-reexec": cmd_reexec,
        }
        code = commands.get(args.cmd, cmd_action)(client, args)
    except Unreachable as exc:
        print(f"wsgictl: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()

__all__ = ["EXIT_UNKNOWN", "Client", "main"]
