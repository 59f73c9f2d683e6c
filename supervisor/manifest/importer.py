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

import importlib
import importlib.machinery
import importlib.util
import os
import re
import shlex
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from supervisor.gunicorn.settings import HOOKS
from supervisor.gunicorn.settings import MANAGED as GUNICORN_MANAGED
from supervisor.gunicorn.settings import check_table as check_gunicorn_table
from supervisor.manifest.models import MODULE_APP, SERVICE_NAME, ApiService, ini_safe
from supervisor.uwsgi.options import MANAGED, RESERVED_UWSGI_OPTIONS, UWSGI_OPTION_NAME


@dataclass
class Imported:
    name: str
    source: str
    table: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    socket: str | None = None
    callable: str | None = None


def service_name(stem: str) -> str:
    """`keystone-uwsgi-public` -> `keystone-public`; `nova-api-uwsgi` -> `nova-api`."""
    parts = [p for p in re.split(r"[^a-z0-9]+", stem.lower()) if p and p not in ("uwsgi", "wsgi", "ini")]
    name = "-".join(parts) or "service"
    return name if SERVICE_NAME.fullmatch(name) else f"s-{name}"


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
            _paste(svc, value)
        elif key == "paste-logger":
            svc.notes.append(f"{key} = {value}: not carried over (the daemon takes the app's log lines)")
        elif key == "mount" and "=" in value:
            prefix, app = value.split("=", 1)
            t["mount"] = prefix.rstrip("/") or "/"
            if app.startswith("config:"):
                _paste(svc, app)
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


def _paste(svc: Imported, uri: str) -> None:
    """`config:FILE#NAME` (uWSGI's `paste` option) as the `paste` and `paste_app` keys."""
    if not uri.startswith("config:"):
        svc.notes.append(f"paste = {uri}: only config: URIs are carried over; set `paste` by hand")
        return
    path, _, name = uri[len("config:") :].partition("#")
    svc.table["paste"] = path
    if name and name != "main":
        svc.table["paste_app"] = name


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
        return _gunicorn_unit(svc, env)
    return svc


def _gunicorn_unit(unit: Imported, env: dict[str, str]) -> Imported:
    """The API service of a unit whose ExecStart is gunicorn: its user, directory and environment too."""
    t = unit.table
    hints = {"cwd": t.get("chdir"), "environment": env, "user": t.get("user"), "group": t.get("group")}
    svc = from_gunicorn_command(t["command"], unit.source, unit.name, hints)
    svc.notes[:0] = unit.notes
    for key in ("notify", "stop_signal", "stop_timeout"):
        if key in t:
            svc.notes.append(
                f"{key} = {t[key]} (from the unit): not carried over (gunicorn's settings say how it stops)"
            )
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


# --- gunicorn ----------------------------------------------------------------------------


class ImportProblem(Exception):
    """An input that cannot be imported at all (wsgictl import says why, and writes nothing)."""


# gunicorn settings that are one manifest key each, with the value gunicorn would use (its
# defaults too, where the manifest's differ: 1 worker, timeout 30, graceful_timeout 30, http)
GUNICORN_SAME_AS = {
    "workers": "processes",
    "threads": "threads",
    "timeout": "harakiri",
    "graceful_timeout": "stop_timeout",
    "protocol": "protocol",
}
# their validators look the value up on this host (a user, a directory): checked by the manifest instead
_HOST_SETTINGS = ("user", "group", "chdir")
_GUNICORN_PROGRAM = re.compile(r"gunicorn3?")


def _gunicorn_config() -> Any:
    try:
        from gunicorn.config import Config
    except ImportError:
        raise ImportProblem(
            "a gunicorn command line or config file is read with gunicorn's own parser, and gunicorn is not "
            f"importable here ({sys.executable}): install it beside wsgictl (pip install gunicorn)"
        ) from None
    return Config


def is_gunicorn_command(words: list[str]) -> bool:
    """`gunicorn …`, `/venv/bin/gunicorn …` or `python3 -m gunicorn …`."""
    name = Path(words[0]).name if words else ""
    return bool(_GUNICORN_PROGRAM.fullmatch(name)) or (name.startswith("python") and words[1:3] == ["-m", "gunicorn"])


def _gunicorn_argv(words: list[str]) -> tuple[list[str], str | None]:
    """gunicorn's arguments in a command line (with or without the program), and the venv of its program."""
    if not is_gunicorn_command(words):
        return words, None
    program = Path(words[0])
    rest = words[1:] if _GUNICORN_PROGRAM.fullmatch(program.name) else words[3:]
    bindir = program.parent
    venv = str(bindir.parent) if program.is_absolute() and bindir.name == "bin" else None
    return rest, (None if venv in ("/", "/usr", "/usr/local") else venv)


def _parse_gunicorn_args(args: list[str], source: str) -> tuple[dict[str, Any], list[str]]:
    """The settings a command line gives (as gunicorn's parser types them) and its positional arguments."""
    parser = _gunicorn_config()(prog="gunicorn").parser()

    def error(message: str) -> None:
        raise ImportProblem(f"{source}: gunicorn would refuse this command line: {message}")

    parser.error = error  # type: ignore[method-assign]
    try:
        options = parser.parse_args(args)
    except SystemExit:  # -h, -v: they print and exit
        raise ImportProblem(f"{source}: -h or -v: nothing to import") from None
    given = {k: v for k, v in vars(options).items() if v is not None and k != "args"}
    return given, options.args


def _run_gunicorn_conf(location: str, source: str) -> dict[str, Any]:
    """The globals of a gunicorn config file, run as gunicorn runs it (as module `__config__`), here."""
    if location.startswith("python:"):
        try:
            return vars(importlib.import_module(location[len("python:") :]))
        except Exception as exc:
            raise ImportProblem(f"{source}: config module {location}: {_one_line(exc)}") from None
    filename = location.removeprefix("file:")
    if not os.path.isfile(filename):
        raise ImportProblem(f"{source}: no such config file: {filename}")
    loader = importlib.machinery.SourceFileLoader("__config__", filename)
    spec = importlib.util.spec_from_file_location("__config__", filename, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["__config__"] = module
    try:
        loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise ImportProblem(f"{filename}: running it failed: {_one_line(exc)}") from None
    return vars(module)


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")


def _conf_settings(names: dict[str, Any], Config: Any) -> tuple[dict[str, Any], list[str], list[str]]:
    """The settings of a config file's globals, its hooks, and what gunicorn would ignore in it."""
    known = Config().settings
    settings = {k: v for k, v in names.items() if k in known and k not in HOOKS}
    hooks = [k for k in names if k in HOOKS]
    ignored = [
        k
        for k, v in names.items()
        if k not in known
        and not k.startswith("_")
        and k.islower()
        and not (callable(v) or isinstance(v, types.ModuleType))
    ]
    return settings, hooks, ignored


def _absolute_from(path: str, cwd: str | None) -> str:
    return path if path.startswith("/") or cwd is None else os.path.normpath(os.path.join(cwd, path))


def from_gunicorn_command(
    words: list[str], source: str | None = None, name: str | None = None, unit: dict[str, Any] | None = None
) -> Imported:
    """An API service from a gunicorn command line (and the config file it names with -c).

    `unit` carries what a systemd unit that runs it adds: its working directory (`cwd`, where
    gunicorn resolved relative paths), `environment`, `user` and `group`.
    """
    unit = dict(unit or {})
    source = source or shlex.join(words)
    args, venv = _gunicorn_argv(words)
    given, positional = _parse_gunicorn_args(args, source)
    settings: dict[str, Any] = {}
    hooks: list[str] = []
    notes: list[str] = []
    env = dict(unit.get("environment", {}))
    from_env: dict[str, Any] = {}
    if "GUNICORN_CMD_ARGS" in env:  # gunicorn reads it between the config file and the command line
        from_env, _ = _parse_gunicorn_args(shlex.split(env.pop("GUNICORN_CMD_ARGS")), f"{source}: GUNICORN_CMD_ARGS")
        notes.append("GUNICORN_CMD_ARGS: its settings are imported with the command line's")
    if "WEB_CONCURRENCY" in env:  # gunicorn's default number of workers
        settings["workers"] = env["WEB_CONCURRENCY"]
    unit["environment"] = env
    conf = given.pop("config", from_env.pop("config", None))
    if conf is not None:  # first the file, then the command line over it, as gunicorn does
        location = conf if conf.startswith(("python:", "file:")) else _absolute_from(conf, unit.get("cwd"))
        settings, hooks, ignored = _conf_settings(_run_gunicorn_conf(location, source), _gunicorn_config())
        notes.extend(f"{k} (in {conf}): not a gunicorn setting, ignored (as gunicorn does)" for k in ignored)
    elif unit.get("cwd") and os.path.isfile(os.path.join(unit["cwd"], "gunicorn.conf.py")):
        notes.append(f"{unit['cwd']}/gunicorn.conf.py: gunicorn reads it too; import it with -c (not run here)")
    settings.update(from_env)
    settings.update(given)
    svc = _gunicorn_service(name, source, settings, positional, hooks, unit)
    svc.notes[:0] = notes
    if venv:
        svc.table["venv"] = venv
    return svc


def from_gunicorn_conf(path: Path) -> Imported:
    """An API service from a gunicorn config file (Python: run here, as gunicorn runs it)."""
    settings, hooks, ignored = _conf_settings(_run_gunicorn_conf(str(path), str(path)), _gunicorn_config())
    # named by its proc_name or app, else by the file or its directory (/etc/placement/gunicorn.conf.py)
    words = [w for w in re.split(r"[^a-z0-9]+", path.name.lower()) if w not in ("gunicorn", "conf", "config", "py")]
    fallback = service_name("-".join(words) or path.resolve().parent.name)
    svc = _gunicorn_service(None, str(path), settings, [], hooks, {}, fallback)
    svc.notes[:0] = [f"{k}: not a gunicorn setting, ignored (as gunicorn does)" for k in ignored]
    return svc


def _gunicorn_name(settings: dict[str, Any], app: str | None, fallback: str) -> str:
    if isinstance(settings.get("proc_name"), str):
        return service_name(settings["proc_name"])
    if isinstance(settings.get("paste"), str):
        return service_name(Path(settings["paste"].removeprefix("config:").partition("#")[0]).stem)
    if app:
        return service_name(app.partition(":")[0])
    return fallback


def _gunicorn_service(
    name: str | None,
    source: str,
    settings: dict[str, Any],
    positional: list[str],
    hooks: list[str],
    unit: dict[str, Any],
    fallback: str = "service",
) -> Imported:
    """The service of settings as gunicorn would take them (`settings`: setting name -> value as written)."""
    Config = _gunicorn_config()
    config, defaults = Config(), Config()
    for key, value in settings.items():
        if key in _HOST_SETTINGS:
            continue
        try:
            config.set(key, value)
        except Exception as exc:
            raise ImportProblem(f"{source}: gunicorn refuses {key} = {value!r}: {exc}") from None
    app = positional[0] if positional else settings.get("wsgi_app")
    svc = Imported(name or _gunicorn_name(settings, app, fallback), source)
    t = svc.table
    t.update(kind="api", server="gunicorn")
    cwd = unit.get("cwd")
    if len(positional) > 1:
        svc.notes.append(f"{' '.join(positional[1:])}: more than one app argument; gunicorn uses the first")
    _gunicorn_app(svc, settings, app, cwd)
    for key, manifest_key in GUNICORN_SAME_AS.items():
        value = config.settings[key].get()
        if key == "timeout" and value == 0:
            value = None  # no limit
        if value != ApiService.model_fields[manifest_key].default:
            _manifest_key(svc, manifest_key, value, f"{key} = {value}")
    for key in ("user", "group"):
        value = settings.get(key, unit.get(key))
        if value is not None:
            _manifest_key(svc, key, str(value), f"{key} = {value}")
    chdir = settings.get("chdir", cwd)
    if isinstance(chdir, str):
        _manifest_key(svc, "chdir", _absolute_from(chdir, cwd), f"chdir = {chdir}")
    _gunicorn_environment(svc, settings, config, unit)
    _gunicorn_socket_and_logs(svc, settings, config)
    _gunicorn_rest(svc, settings, config, defaults)
    svc.notes.extend(
        f"{hook}: server hook: wsgi-supervisor sets the hooks itself; move the code into the app" for hook in hooks
    )
    return svc


def _gunicorn_app(svc: Imported, settings: dict[str, Any], app: str | None, cwd: str | None) -> None:
    paste = settings.get("paste")
    if isinstance(paste, str):
        uri = paste.removeprefix("config:")
        if not uri.startswith("/"):
            if cwd is None:
                svc.notes.append(f"paste = {paste}: relative to where gunicorn started; make it absolute")
            uri = _absolute_from(uri, cwd)
        _paste(svc, "config:" + uri)
    elif app is None:
        svc.notes.append("no app argument, wsgi_app or paste: set `app` by hand")
    elif MODULE_APP.fullmatch(app):
        svc.table["app"] = app if ":" in app else f"{app}:application"
    else:
        svc.notes.append(f"{app}: not 'package.module:callable' (an app factory call?): set `app` by hand")


def _manifest_key(svc: Imported, key: str, value: Any, what: str) -> None:
    """`key = value` in the table if the manifest takes it; else a note that says why not."""
    from pydantic import ValidationError

    try:
        ApiService.model_validate({"kind": "api", "app": "a:b", key: value})
    except ValidationError as exc:
        svc.notes.append(f"{what}: not carried over: {key} {exc.errors()[0]['msg'].removeprefix('Value error, ')}")
        return
    svc.table[key] = value


def _gunicorn_environment(svc: Imported, settings: dict[str, Any], config: Any, unit: dict[str, Any]) -> None:
    env = dict(unit.get("environment", {}))
    for item in config.raw_env:
        k, sep, v = item.partition("=")
        if not sep:
            raise ImportProblem(f"{svc.source}: gunicorn refuses raw_env {item!r}: not KEY=VALUE")
        env[k] = v
    if config.pythonpath:  # gunicorn puts these first on sys.path, the daemon's arbiter does not read it
        paths = [
            _absolute_from(p.strip(), settings.get("chdir", unit.get("cwd"))) for p in config.pythonpath.split(",")
        ]
        env["PYTHONPATH"] = ":".join([*paths, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        svc.notes.append(f"pythonpath = {config.pythonpath}: in PYTHONPATH")
    if env:
        svc.table["environment"] = env


def _gunicorn_socket_and_logs(svc: Imported, settings: dict[str, Any], config: Any) -> None:
    bind = ", ".join(config.bind) + ("" if "bind" in settings else " (gunicorn's default)")
    held = GUNICORN_MANAGED["bind"].replace("NAME", svc.name)
    svc.notes.append(f"bind = {bind}: {held}; point the front end there")
    svc.socket = next((b[len("unix:") :] for b in config.bind if b.startswith("unix:")), None)
    if config.accesslog is None:
        svc.table["request_log"] = False
        svc.notes.append("no accesslog: gunicorn logged no request lines; request_log = true would log them")
    else:
        svc.notes.append(f"accesslog = {config.accesslog}: request lines go to the daemon's log (request_log)")


# what the mapping above carries over, or reads (config: the file it names)
_MAPPED = {*GUNICORN_SAME_AS, *_HOST_SETTINGS, "raw_env", "pythonpath", "bind", "accesslog", "paste", "wsgi_app"}


def _gunicorn_rest(svc: Imported, settings: dict[str, Any], config: Any, defaults: Any) -> None:
    """Every other setting that differs from gunicorn's default: in the `gunicorn` table, or a note."""
    table: dict[str, Any] = {}
    for key, written in settings.items():
        if key in _MAPPED or key == "config" or config.settings[key].get() == defaults.settings[key].get():
            continue
        if key in GUNICORN_MANAGED:
            svc.notes.append(f"{key} = {written}: {GUNICORN_MANAGED[key]}")
            continue
        value = list(written) if isinstance(written, tuple) else written
        try:
            check_gunicorn_table({key: value})
        except ValueError as exc:
            svc.notes.append(f"{key} = {written!r}: not carried over: {exc}")
            continue
        table[key] = value
    if table:
        svc.table["gunicorn"] = table


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
