"""`wsgictl import`: existing deployments into a manifest.

Reads uWSGI ini files (devstack, openstack-ansible and kolla styles),
Apache vhosts (mod_wsgi `WSGIDaemonProcess`/`WSGIScriptAlias`, and
`ProxyPass` lines that give uWSGI sockets their URL prefix), systemd
units of worker services, and gunicorn command lines and config files
(read by the gunicorn beside wsgictl: its parser, and its way of running a
config file), and writes TOML that `wsgictl check` accepts, with a comment
for every option it could not carry over.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from supervisor.manifest.gunicorn_import import (
    from_gunicorn_command,
    from_gunicorn_conf,
    gunicorn_unit,
    is_gunicorn_command,
)
from supervisor.manifest.imported import Imported, ImportProblem, service_name, set_paste
from supervisor.manifest.models import ini_safe
from supervisor.uwsgi.options import MANAGED, RESERVED_UWSGI_OPTIONS, UNSAFE_UWSGI_OPTIONS, UWSGI_OPTION_NAME


def _ini_options(text: str) -> list[tuple[str, str]]:
    """`key = value` pairs of the [uwsgi] section, repeated keys kept in order."""
    options = []
    section = "uwsgi"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != "uwsgi" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        options.append((key.replace("_", "-"), value))
    return options


def _safe(value: str) -> bool:
    try:
        ini_safe(value)
    except ValueError:
        return False
    return True


# uWSGI options that are one manifest key each: (key, how the value converts)
SAME_AS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "processes": ("processes", int),
    "workers": ("processes", int),
    "threads": ("threads", int),
    "pyargv": ("args", str.split),
    "virtualenv": ("venv", str),
    "home": ("venv", str),
    "venv": ("venv", str),
    "pyhome": ("venv", str),
    "uid": ("user", str),
    "gid": ("group", str),
    "chdir": ("chdir", str),
    "harakiri": ("harakiri", int),
    "reload-on-rss": ("max_rss_mb", int),
}


# WSGIDaemonProcess options that are one manifest key each, likewise
DAEMON_PROCESS_SAME_AS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "processes": ("processes", int),
    "threads": ("threads", int),
    "user": ("user", str),
    "group": ("group", str),
    "python-home": ("venv", str),
}


def from_uwsgi_ini(path: Path) -> Imported:
    svc = Imported(service_name(path.stem), str(path))
    t = svc.table
    t["kind"] = "api"
    extra: dict[str, list[Any]] = {}
    env: dict[str, str] = {}
    for key, value in _ini_options(path.read_text()):
        if key in ("module", "wsgi"):
            t["app"] = value if ":" in value else f"{value}:application"
        elif key in ("wsgi-file", "file"):
            t["app"] = value
        elif key == "paste":
            set_paste(svc, value)
        elif key == "paste-logger":
            svc.notes.append(f"{key} = {value}: not carried over (the daemon takes the app's log lines)")
        elif key == "mount" and "=" in value:
            prefix, app = value.split("=", 1)
            t["mount"] = prefix.rstrip("/") or "/"
            if app.startswith("config:"):
                set_paste(svc, app)
            else:
                t["app"] = app if (":" in app or "/" in app) else f"{app}:application"
        elif key in SAME_AS:
            manifest_key, convert = SAME_AS[key]
            t[manifest_key] = convert(value)
        elif key in ("socket", "http-socket", "uwsgi-socket"):
            svc.socket = value
            if key == "http-socket":
                t["protocol"] = "http"
            svc.notes.append(f"{key} = {value}: now <runtime-dir>/{svc.name}.sock (point the front end there)")
        elif key == "env" and "=" in value:
            k, v = value.split("=", 1)
            env[k] = v
        elif key == "callable":
            svc.callable = value
        elif key in MANAGED:
            svc.notes.append(f"{key} = {value}: wsgi-supervisor sets this itself")
        elif key in UNSAFE_UWSGI_OPTIONS:
            svc.notes.append(f"{key} = {value}: left out (uWSGI's process titles corrupt an in-process vassal)")
        elif key in RESERVED_UWSGI_OPTIONS or not UWSGI_OPTION_NAME.fullmatch(key) or not _safe(value):
            svc.notes.append(f"{key} = {value}: not carried over (managed by wsgi-supervisor, or unsafe in a manifest)")
        else:
            extra.setdefault(key, []).append(_typed(value))
    if env:
        t["environment"] = env
    if extra:
        t["uwsgi"] = {k: v[0] if len(v) == 1 else v for k, v in extra.items()}
    if "app" not in t and "paste" not in t:
        svc.notes.append("no module, wsgi-file, paste or mount: set `app` by hand")
    elif "app" in t and svc.callable and svc.callable != "application":
        if t["app"].endswith(":application"):
            t["app"] = t["app"][: -len("application")] + svc.callable
        else:
            svc.notes.append(f"callable = {svc.callable}: a file app must define `application`; set `app` by hand")
    return svc


def _typed(value: str) -> Any:
    if value.isdigit():
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


_DIRECTIVE = re.compile(r"^\s*(\w+)\s+(.*)$")


def from_apache(path: Path) -> tuple[list[Imported], dict[str, str]]:
    """mod_wsgi services, and {socket path: URL prefix} from ProxyPass lines."""
    daemons: dict[str, dict[str, str]] = {}
    aliases: list[tuple[str, str, str | None]] = []
    proxied: dict[str, str] = {}
    group = None
    for raw in path.read_text().splitlines():
        match = _DIRECTIVE.match(raw)
        if not match:
            continue
        directive, rest = match.group(1), match.group(2)
        words = shlex.split(rest)
        if directive == "WSGIDaemonProcess" and words:
            daemons[words[0]] = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        elif directive == "WSGIProcessGroup" and words:
            group = words[0]
        elif directive == "WSGIScriptAlias" and len(words) >= 2:
            opts = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            aliases.append((words[0], words[1], opts.get("process-group")))
        elif directive == "ProxyPass" and len(words) >= 2 and words[1].startswith("unix:"):
            sock = words[1][len("unix:") :].split("|", 1)[0]
            proxied[sock] = words[0].rstrip("/") or "/"
    services = []
    for prefix, script, named in aliases:
        pg = named or group or Path(script).stem
        svc = Imported(service_name(pg), str(path))
        t = svc.table
        t.update(kind="api", app=script, mount=prefix.rstrip("/") or "/")
        opts = daemons.get(pg, {})
        for key, value in opts.items():
            if key in DAEMON_PROCESS_SAME_AS:
                manifest_key, convert = DAEMON_PROCESS_SAME_AS[key]
                t[manifest_key] = convert(value)
            elif key == "python-path":
                t.setdefault("environment", {})["PYTHONPATH"] = value
            else:
                svc.notes.append(f"WSGIDaemonProcess {key}={value}: no equivalent, not carried over")
        svc.notes.append("mod_wsgi served it in-process: Apache now proxies to its socket (wsgictl proxy-config)")
        services.append(svc)
    return services, proxied


def from_systemd_unit(path: Path) -> Imported:
    """A worker service from a unit such as devstack@n-cond.service."""
    name = path.stem.split("@", 1)[-1]
    svc = Imported(service_name(name), str(path))
    t = svc.table
    t["kind"] = "worker"
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if "=" not in line or line.startswith(("#", ";", "[")):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "ExecStart":
            t["command"] = shlex.split(value.lstrip("-@:+!"))
        elif key == "User":
            t["user"] = value
        elif key == "Group":
            t["group"] = value
        elif key == "WorkingDirectory":
            t["chdir"] = value
        elif key == "Environment":
            for item in shlex.split(value):
                if "=" in item:
                    k, v = item.split("=", 1)
                    env[k] = v
        elif key == "Type" and value == "notify":
            t["notify"] = True
        elif key == "KillSignal":
            t["stop_signal"] = value if value.startswith("SIG") else f"SIG{value}"
        elif key == "TimeoutStopSec" and value.rstrip("s").isdigit():
            t["stop_timeout"] = int(value.rstrip("s"))
        elif key in ("ExecReload", "Restart", "NotifyAccess", "KillMode", "SyslogIdentifier"):
            svc.notes.append(f"{key}={value}: the daemon does this itself")
    if env:
        t["environment"] = env
    if is_gunicorn_command(t.get("command", [])):
        return gunicorn_unit(svc, env)
    return svc


def import_files(paths: list[Path], gunicorn_commands: tuple[str, ...] = ()) -> list[Imported]:
    """The services of the files, then of the gunicorn command lines; ImportProblem for one that cannot be read."""
    services: list[Imported] = []
    prefixes: dict[str, str] = {}
    for path in paths:
        text = path.read_text(errors="replace")
        if path.suffix == ".py":
            services.append(from_gunicorn_conf(path))
        elif path.suffix == ".service":
            services.append(from_systemd_unit(path))
        elif path.suffix == ".ini" or "[uwsgi]" in text:
            services.append(from_uwsgi_ini(path))
        else:
            found, proxied = from_apache(path)
            services.extend(found)
            prefixes.update(proxied)
    for command in gunicorn_commands:
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise ImportProblem(f"{command}: not a command line: {exc}") from None
        services.append(from_gunicorn_command(words))
    for svc in services:
        if svc.socket and svc.socket in prefixes and "mount" not in svc.table:
            svc.table["mount"] = prefixes[svc.socket]
    seen: dict[str, int] = {}
    for svc in services:  # names stay unique
        if svc.name in seen:
            seen[svc.name] += 1
            old, svc.name = svc.name, f"{svc.name}-{seen[svc.name]}"
            svc.notes = [n.replace(f"/{old}.sock", f"/{svc.name}.sock") for n in svc.notes]
        else:
            seen[svc.name] = 1
    return services


# --- TOML out ----------------------------------------------------------------------------


# TOML allows no control character but tab in a comment
_NOT_IN_COMMENTS = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _comment(text: str) -> str:
    """One comment line; a control character from the imported file is written as its escape."""
    return "# " + _NOT_IN_COMMENTS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


ORDER = [
    "kind",
    "server",
    "app",
    "paste",
    "paste_app",
    "command",
    "args",
    "mount",
    "protocol",
    "processes",
    "threads",
    "venv",
    "user",
    "group",
    "chdir",
    "notify",
    "stop_signal",
    "stop_timeout",
    "harakiri",
    "max_rss_mb",
    "request_log",
    "environment",
    "uwsgi",
    "gunicorn",
]


def to_toml(services: list[Imported]) -> str:
    """The manifest, written by tomli-w (which escapes what TOML needs escaped), with our comments."""
    out = [_comment("imported by `wsgictl import`; check it with `wsgictl check`")]
    for svc in services:
        out.append("")
        out.append(_comment(f"from {svc.source}"))
        out.extend(_comment(f"  {note}") for note in svc.notes)
        keys = sorted(svc.table, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
        out.append(tomli_w.dumps({"services": {svc.name: {k: svc.table[k] for k in keys}}}).rstrip("\n"))
    return "\n".join(out) + "\n"
