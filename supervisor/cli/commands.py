"""`wsgictl`: talk to the daemon. Standard library only, so it starts fast.

Exit statuses follow systemctl: 0 when every named service is running (or
the action succeeded), 3 when one is not running, 4 for an unknown name,
1 when the daemon cannot be reached or an action failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import supervisor.control.protocol as protocol
from supervisor.control.protocol import EXIT_FAILED, EXIT_UNKNOWN, encode
from supervisor.layout import DEFAULT_CONF_DIR, DEFAULT_RUNTIME_DIR


class Unreachable(Exception):
    pass


class Client:
    def __init__(self, runtime_dir: Path, timeout: float | None = 10.0):
        self.path = runtime_dir / "control.sock"
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            raise Unreachable(f"no control socket at {self.path}: is wsgi-supervisor running?") from None
        except PermissionError:
            raise Unreachable(f"permission denied on {self.path}: run as root or join the control group") from None
        except OSError as exc:
            raise Unreachable(f"cannot reach wsgi-supervisor at {self.path}: {exc.strerror or exc}") from None
        self.sock = sock

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request (a command of protocol.COMMANDS, with its fields) and read the first reply."""
        data = encode(protocol.request(**message))
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            # the daemon may have answered (a refusal) and hung up before we were
            # done sending: read what it said
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.sock.sendall(data)
            return self.receive()
        except TimeoutError:
            raise Unreachable(f"wsgi-supervisor at {self.path} did not answer in time") from None
        except OSError as exc:
            raise Unreachable(f"lost the connection to wsgi-supervisor: {exc.strerror or exc}") from None

    def receive(self) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Unreachable("wsgi-supervisor closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def status_table(services: list[dict[str, Any]]) -> str:
    headers = ["NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "SOCKET", "REASON"]
    rows = []
    now = time.time()
    for s in services:
        reason = s.get("reason") or ""
        if s["state"] == "backoff" and s.get("next_retry"):
            reason = f"next try in {max(0, int(s['next_retry'] - now))}s: {reason}"
        if s.get("status_text") and s["state"] in ("running", "starting"):
            reason = s["status_text"]
        rows.append(
            [
                s["name"],
                s["kind"],
                s["state"],
                str(s["pid"] or "-"),
                _age(s.get("uptime")),
                str(s["restarts"]),
                s.get("socket") or "-",
                reason,
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def detail(s: dict[str, Any]) -> str:
    out = [status_table([s])]
    if s.get("last_exit"):
        out.append(f"last exit: {s['last_exit']}")
    if s.get("last_lines"):
        out.append("last lines:")
        out.extend("  " + line.replace("\n", "\n  ") for line in s["last_lines"])
    return "\n".join(out)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    lines = 20 if len(args.names) == 1 and not args.json else 0
    reply = client.request({"cmd": "status", "services": args.names, "lines": lines})
    if not reply.get("ok"):
        print(f"wsgictl: {reply['error']}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    services = reply["services"]
    if args.json:
        print(json.dumps(services, indent=2))
    elif lines:
        print(detail(services[0]))
    else:
        print(status_table(services))
    return reply.get("code", 0)


def cmd_action(client: Client, args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        print(f"wsgictl {args.cmd}: name a service, or use --all", file=sys.stderr)
        return EXIT_FAILED
    message = {
        "cmd": args.cmd,
        "services": args.names,
        "all": args.all,
        "wait": not args.no_block,
        "timeout": args.timeout,
    }
    reply = client.request(message, timeout=args.timeout + 10)
    if "results" not in reply:
        print(f"wsgictl: {reply.get('error', 'failed')}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    for name, result in reply["results"].items():
        if not result["ok"]:
            print(f"{name}: {args.cmd} failed: {result['message']}", file=sys.stderr)
        elif not args.quiet:
            print(f"{name}: {result.get('state', result['message'])}")
    return 0 if reply.get("ok") else reply.get("code", EXIT_FAILED)


def _print_line(message: dict[str, Any], width: int) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(message["ts"])) + f".{int(message['ts'] % 1 * 1000):03d}"
    prefix = f"{stamp} {message['service']:<{width}} | "
    print(prefix + message["text"].replace("\n", "\n" + " " * len(prefix)), flush=True)


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    width = max((len(n) for n in args.names), default=15)
    request = {"cmd": "logs", "services": args.names, "n": args.lines, "follow": args.follow}
    reply = client.request(request, timeout=None if args.follow else 30)
    while True:
        if "text" in reply:
            _print_line(reply, width)
        elif "dropped" in reply:
            print(f"... {reply['dropped']} lines skipped: this reader was too slow", file=sys.stderr, flush=True)
        elif reply.get("end"):
            return 0
        elif not reply.get("ok", True):
            print(f"wsgictl: {reply['error']}", file=sys.stderr)
            return reply.get("code", EXIT_FAILED)
        reply = client.receive()


# --- systemd ------------------------------------------------------------------------


def sd_notify(message: str) -> None:
    """sd_notify(3) with the standard library: a datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.sendto(message.encode(), address)


class _Terminated(Exception):
    pass


def _describe_state(s: dict[str, Any]) -> str:
    text = f"{s['state']}"
    if s.get("pid"):
        text += f", pid {s['pid']}"
    if s.get("restarts"):
        text += f", {s['restarts']} restarts"
    if s.get("status_text"):
        text += f": {s['status_text']}"
    elif s.get("reason") and s["state"] != "running":
        text += f": {s['reason']}"
    return text


def cmd_supervise(args: argparse.Namespace) -> int:
    """The main process of wsgi@NAME.service: start NAME, say READY=1 when it is, mirror its state.

    The unit stays `activating` for as long as the daemon keeps trying to
    start the service (a backoff after a reboot can outlast any timeout: the
    database may come up later), with each attempt in STATUS=. Exits 0 when
    the service is stopped (by wsgictl or SIGTERM, which asks the daemon for
    a graceful stop) and 1 when the daemon gives up on it, so that systemd
    reports the same as `wsgictl status`.
    """
    name = args.name

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        reply = Client(args.runtime_dir).request({"cmd": "start", "services": [name], "wait": False})
        if not reply.get("ok"):
            why = reply.get("error", "failed")
            print(f"{name}: cannot start: {why}", file=sys.stderr)
            sd_notify(f"STATUS=failed to start: {why}")
            return EXIT_FAILED
        return _mirror(args, name)
    except _Terminated:
        sd_notify("STOPPING=1\nSTATUS=stopping")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            Client(args.runtime_dir, timeout=None).request({"cmd": "stop", "services": [name], "wait": True})
        except Unreachable as exc:
            print(f"{name}: stop: {exc}", file=sys.stderr)
        return 0
    except Unreachable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _mirror(args: argparse.Namespace, name: str) -> int:
    reconnect_until = None
    ready = False
    while True:
        try:
            client = Client(args.runtime_dir, timeout=None)
            state = client.request({"cmd": "watch", "services": [name]})
            reconnect_until = None
            while True:
                if "state" not in state:
                    print(f"{name}: {state.get('error', state)}", file=sys.stderr)
                    return EXIT_FAILED
                if state["state"] == "running" and not ready:
                    ready = True
                    sd_notify("READY=1")
                sd_notify(f"STATUS={_describe_state(state)}")
                if state["state"] == "failed":
                    print(f"{name}: failed: {state.get('reason')}", file=sys.stderr)
                    return EXIT_FAILED
                if state["state"] == "stopped":
                    if ready:
                        return 0
                    # stopped before it was ever ready (what it comes after failed): not started
                    print(f"{name}: cannot start: {state.get('reason') or 'stopped'}", file=sys.stderr)
                    return EXIT_FAILED
                state = client.receive()
        except Unreachable:
            # the daemon restarts: its vassals keep serving; wait for it a while
            now = time.monotonic()
            if reconnect_until is None:
                reconnect_until = now + args.reconnect
                sd_notify("STATUS=waiting for wsgi-supervisor")
            if now > reconnect_until:
                print(f"{name}: wsgi-supervisor is gone", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(0.5)


UNIT_FILES = ("wsgi-supervisor.service", "wsgi@.service")


def _unit_templates() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "units", Path(sys.prefix) / "share" / "wsgi-supervisor" / "units"):
        if (candidate / UNIT_FILES[0]).exists():
            return candidate
    raise FileNotFoundError("the unit templates (units/) are not installed with wsgi-supervisor")


def cmd_units(args: argparse.Namespace) -> int:
    import grp

    templates = _unit_templates()
    bindir = Path(sys.prefix) / "bin"
    if not (bindir / "wsgi-supervisor").exists():
        bindir = Path(sys.argv[0]).resolve().parent
    group = args.socket_group
    if group is None:
        try:
            group = grp.getgrnam("www-data").gr_name
        except KeyError:
            group = "root"
    values = {
        "@BINDIR@": str(bindir),
        "@CONFDIR@": str(args.conf_dir),
        "@SOCKETGROUP@": group,
        "@DOCDIR@": str(templates.parent),
    }
    args.dest.mkdir(parents=True, exist_ok=True)
    for unit in UNIT_FILES:
        text = (templates / unit).read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        target = args.dest / unit
        target.write_text(text)
        print(f"wrote {target}")
    print(
        "\nnext:\n"
        "  systemctl daemon-reload\n"
        "  systemctl enable --now wsgi-supervisor      # starts the services the manifest enables\n"
        "  systemctl enable wsgi@NAME                   # also start NAME at boot\n"
        "  systemctl status 'wsgi@*'; journalctl -u wsgi@NAME -f\n"
        f"the manifest is read from {args.conf_dir}; sockets are in /run/wsgi-supervisor, group {group}"
    )
    return 0


def cmd_reexec(client: Client, args: argparse.Namespace) -> int:
    """Ask the daemon to exec itself again (after an upgrade), then wait until it answers."""
    before = client.request({"cmd": "reexec"})
    if not before.get("ok"):
        print(f"wsgictl: {before.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            reply = Client(args.runtime_dir, timeout=5).request({"cmd": "ping"})
        except Unreachable:
            continue
        if reply.get("ok"):
            print(f"wsgi-supervisor re-executed (pid {reply['pid']}, {reply['services']} services adopted)")
            return 0
    print(f"wsgictl: wsgi-supervisor did not come back within {args.timeout:g}s", file=sys.stderr)
    return EXIT_FAILED


def cmd_reload_config(client: Client, args: argparse.Namespace) -> int:
    reply = client.request({"cmd": "reload-config"}, timeout=None)
    if not reply.get("ok"):
        print(f"wsgictl: {reply.get('error')}", file=sys.stderr)
        for problem in reply.get("problems", []):
            print(f"  {problem}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    print(
        f"applied: {len(reply['changed'])} changed, {len(reply['added'])} added, "
        f"{len(reply['removed'])} removed, {reply['unchanged']} untouched"
    )
    for key in ("changed", "added", "removed"):
        if reply[key]:
            print(f"  {key}: {', '.join(reply[key])}")
    return 0


def cmd_proxy_config(args: argparse.Namespace) -> int:
    from supervisor.layout import Layout
    from supervisor.manifest.models import ManifestError, load
    from supervisor.render.proxy import Vhost, apache, nginx

    try:
        manifest = load(args.conf_dir, check_host=False)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    vhost = None
    if args.vhost:
        vhost = Vhost(args.listen, args.server_name, args.cert, args.key)
    render = apache if args.server == "apache" else nginx
    print(render(manifest, Layout(args.runtime_dir), vhost, args.timeout), end="")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from supervisor.manifest.importer import import_files, to_toml

    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"wsgictl import: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILED
    print(to_toml(import_files(args.files)), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """One API of the manifest in the foreground, on wsgiref, for debugging."""
    import json as _json

    from supervisor.manifest.models import ApiService, ManifestError, app_is_file, load, paste_uri

    try:
        manifest = load(args.conf_dir)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    spec = manifest.services.get(args.name)
    if spec is None:
        print(f"wsgictl serve: unknown service: {args.name}", file=sys.stderr)
        return EXIT_UNKNOWN
    if not isinstance(spec, ApiService):
        print(
            f"wsgictl serve: {args.name} is a worker; run its command instead: {' '.join(spec.command)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        reply = Client(args.runtime_dir, timeout=5).request({"cmd": "status", "services": [args.name]})
        running = reply.get("ok") and reply["services"][0]["state"] in ("starting", "running", "reloading")
    except Unreachable:
        running = False
    if running and not args.force:
        s = reply["services"][0]
        print(
            f"wsgictl serve: {args.name} is being served by wsgi-supervisor right now "
            f"(pid {s['pid']}, socket {s['socket']}). Stop it first (wsgictl stop {args.name}), "
            "or pass --force to run a second copy on a port.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    venv = Path(spec.venv) if spec.venv else Path(sys.prefix)
    python = venv / "bin" / "python3"
    payload = {
        "name": args.name,
        "app": spec.app,
        "paste": paste_uri(spec),
        "args": list(spec.args),
        "env": {"PYTHONUNBUFFERED": "1", **spec.environment},
        "mount": spec.mount,
        "chdir": spec.chdir,
        "file_dir": str(Path(spec.app).parent) if app_is_file(spec) else None,
        "host": args.host,
        "port": args.port,
    }
    runner = Path(__file__).with_name("serve_app.py")
    # the environment from the start, as the launcher gives it: PYTHONPATH and the like are read only then
    os.execve(python, [str(python), str(runner), _json.dumps(payload)], {**os.environ, **payload["env"]})


def cmd_check(args: argparse.Namespace) -> int:
    from supervisor.manifest.models import ManifestError, load  # pydantic: only this command needs it

    try:
        manifest = load(args.conf_dir)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{args.conf_dir}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_FAILED
    apis = sum(1 for s in manifest.services.values() if s.kind == "api")
    workers = len(manifest.services) - apis
    print(f"{args.conf_dir}: valid ({apis} APIs, {workers} workers)")
    return 0


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

    s = command("status", "state of services (exit 0 when every named one is running, 3 when one is not)")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--json", action="store_true", help="machine-readable output")

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

    lg = command("logs", "recent lines of services, in time order (and follow with -f)")
    lg.add_argument("names", nargs="*", metavar="NAME", help="services (default: all, and the daemon)")
    lg.add_argument("-n", "--lines", type=int, default=20, help="how many recent lines (default %(default)s)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

    sv = command("supervise", "the main process of wsgi@NAME.service (used by the unit)")
    sv.add_argument("name", metavar="NAME")
    sv.add_argument(
        "--reconnect", type=float, default=120.0, help="seconds to wait for a restarting daemon (default %(default)s)"
    )

    command("reload-config", "read the manifest again and apply the difference")
    rx = command("daemon-reexec", "the daemon execs itself again (after an upgrade); services keep running")
    rx.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for it to answer again (default %(default)s)"
    )

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

    im = command("import", "uWSGI ini files, Apache vhosts, systemd units -> a manifest (TOML)")
    im.add_argument("files", nargs="+", type=Path, metavar="FILE")

    se = command("serve", "one API in the foreground on wsgiref (a breakpoint works)")
    se.add_argument("name", metavar="NAME")
    se.add_argument("--port", type=int, default=8000, help="TCP port on --host (default %(default)s)")
    se.add_argument("--host", default="127.0.0.1", help="(default %(default)s)")
    se.add_argument("--force", action="store_true", help="even while the daemon serves it")

    command("check", "validate the manifest and what it names on this host (users, files, programs); starts nothing")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
    client = Client(args.runtime_dir)
    try:
        commands = {
            "status": cmd_status,
            "logs": cmd_logs,
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
