"""`wsgictl import` of gunicorn: command lines, `gunicorn.conf.py` files and units that run gunicorn.

Read by the gunicorn beside wsgictl: its own parser for a command line, and
its own way of running a config file (the operator's own Python), so every
value is the one gunicorn would use; then mapped to manifest keys, the
rest into the service's `gunicorn` table, and what cannot be carried over
noted as a comment.
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
from pathlib import Path
from typing import Any

from supervisor.gunicorn.settings import HOOKS
from supervisor.gunicorn.settings import MANAGED as GUNICORN_MANAGED
from supervisor.gunicorn.settings import check_table as check_gunicorn_table
from supervisor.manifest.imported import Imported, ImportProblem, service_name, set_paste
from supervisor.manifest.models import MODULE_APP, ApiService

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
        set_paste(svc, "config:" + uri)
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


def gunicorn_unit(unit: Imported, env: dict[str, str]) -> Imported:
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
