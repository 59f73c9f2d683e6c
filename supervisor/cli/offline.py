"""The commands that need no daemon: check, units, proxy-config, import, serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from supervisor.cli.client import Client, Unreachable
from supervisor.control.protocol import EXIT_FAILED, EXIT_UNKNOWN

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


def cmd_proxy_config(args: argparse.Namespace) -> int:
    from supervisor.layout import Layout
    from supervisor.manifest.loading import load
    from supervisor.manifest.models import ManifestError
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
    from supervisor.manifest.importer import ImportProblem, import_files, to_toml

    if not args.files and not args.gunicorn:
        print("wsgictl import: name a FILE or give --gunicorn CMDLINE", file=sys.stderr)
        return EXIT_FAILED
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"wsgictl import: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILED
    try:
        services = import_files(args.files, tuple(args.gunicorn))
    except ImportProblem as exc:
        print(f"wsgictl import: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(to_toml(services), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """One API of the manifest in the foreground, on wsgiref, for debugging."""
    import json as _json

    from supervisor.manifest.loading import load
    from supervisor.manifest.models import ApiService, ManifestError, app_is_file, paste_uri

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
    from supervisor.manifest.loading import load
    from supervisor.manifest.models import ManifestError  # pydantic: only this command needs it

    try:
        manifest = load(args.conf_dir, check_host=not args.offline)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{args.conf_dir}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_FAILED
    apis = sum(1 for s in manifest.services.values() if s.kind == "api")
    workers = len(manifest.services) - apis
    unchecked = "; not checked against this host" if args.offline else ""
    print(f"{args.conf_dir}: valid ({apis} APIs, {workers} workers{unchecked})")
    return 0
