"""Loading the manifest: every file, every service, every problem at once, located.

Touches no process. Each problem is a `Problem(file, service, key,
message)`, so an operator fixes a broken manifest in one pass; the host
checks (venvs, users, files, programs) come after the models validate.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from supervisor.manifest import defaults as file_defaults
from supervisor.manifest.expand import expand_argv
from supervisor.manifest.models import (
    MAX_NAME,
    RESERVED_NAMES,
    SERVICE_NAME,
    ApiService,
    Manifest,
    ManifestError,
    Problem,
    Service,
    WorkerService,
    _is_app_file,
    app_is_file,
    worker_path,
)

_FIELD_NAMES = {
    "api": set(ApiService.model_fields),
    "worker": set(WorkerService.model_fields),
}


def _describe(error: dict[str, Any], kind: str) -> tuple[str | None, str]:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) if loc else None
    etype = error["type"]
    if etype == "missing":
        field = loc[-1] if loc else "?"
        if field == "app":
            return key, "required for an api service: 'package.module:callable' or a path to a .py file"
        if field == "command":
            return key, "required for a worker service: the command's argv as a list of strings"
        return key, "is required"
    if etype == "extra_forbidden":
        field = loc[-1] if loc else "?"
        others = sorted(_FIELD_NAMES[kind] - {"kind"})
        hint = " (it belongs to the other kind)" if field in _FIELD_NAMES["api"] | _FIELD_NAMES["worker"] else ""
        return key, f"unknown key for a{'n' if kind == 'api' else ''} {kind} service{hint}; known: {', '.join(others)}"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = error.get("input")
    if etype.endswith("_type") and not isinstance(got, dict | list):
        msg += f" (got {type(got).__name__} {got!r})"
    return key, msg


def _one_app(file: str, name: str, table: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """`app` or `paste`, exactly one, as located problems (the model would only say the service is wrong)."""
    problems = []
    if "app" in table and "paste" in table:
        problems.append(
            Problem(
                file,
                name,
                "paste",
                "cannot be used together with 'app': 'app' names the WSGI callable, 'paste' a paste-deploy ini "
                "file that builds it; keep one",
            )
        )
        table = {k: v for k, v in table.items() if k not in ("paste", "paste_app")}
    elif "app" not in table and "paste" not in table:
        problems.append(
            Problem(
                file,
                name,
                "app",
                "required for an api service: 'package.module:callable' or a path to a .py file "
                "(or 'paste' for a paste-deploy ini file)",
            )
        )
        table = {**table, "app": "missing.app"}  # the other keys are still checked
    elif "paste_app" in table and "paste" not in table:
        problems.append(Problem(file, name, "paste_app", "needs 'paste' (the paste ini file that has this app)"))
        table = {k: v for k, v in table.items() if k != "paste_app"}
    return table, problems


def _validate_service(file: str, name: str, table: Any) -> tuple[Service | None, list[Problem]]:
    problems: list[Problem] = []
    if not SERVICE_NAME.fullmatch(name) or len(name) > MAX_NAME:
        problems.append(
            Problem(file, name, None, f"bad service name: use [a-z0-9][a-z0-9_-]* (at most {MAX_NAME} chars)")
        )
    elif name in RESERVED_NAMES:
        problems.append(Problem(file, name, None, f"the name {name!r} is reserved for the daemon itself"))
    if not isinstance(table, dict):
        problems.append(Problem(file, name, None, "must be a table ([services.NAME])"))
        return None, problems
    kind = table.get("kind")
    if kind is None:
        problems.append(Problem(file, name, "kind", 'is required: "api" or "worker"'))
        return None, problems
    if kind not in ("api", "worker"):
        problems.append(Problem(file, name, "kind", f'must be "api" or "worker", not {kind!r}'))
        return None, problems
    model = ApiService if kind == "api" else WorkerService
    table, unknown = expand_argv(table)
    problems.extend(Problem(file, name, key, message) for key, message in unknown)
    app = table.get("app")
    if isinstance(app, str) and _is_app_file(app) and not app.startswith("/"):
        # a relative app file is relative to the manifest that names it
        table = {**table, "app": str((Path(file).parent / app).resolve())}
    paste = table.get("paste")
    if kind == "api" and isinstance(paste, str) and paste and not paste.startswith(("/", "config:", "egg:", "call:")):
        table = {**table, "paste": str((Path(file).parent / paste).resolve())}
    if kind == "api":
        table, found = _one_app(file, name, table)
        problems.extend(found)
        table, found = _server_table(file, name, table)
        problems.extend(found)
    try:
        service = model.model_validate(table)
    except ValidationError as exc:
        for error in exc.errors():
            key, message = _describe(error, kind)
            problems.append(Problem(file, name, key, message))
        return None, problems
    return (None if problems else service), problems


def _server_table(file: str, name: str, table: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """A table of settings for another server than the service's (a `uwsgi` table on a gunicorn
    service, or the other way round): located here, and left out so the model checks the rest."""
    server = table.get("server", "uwsgi")
    if server not in ("uwsgi", "gunicorn"):
        return table, []  # the model says what the choices are
    problems = []
    for other in ("uwsgi", "gunicorn"):
        if other != server and other in table:
            problems.append(
                Problem(
                    file,
                    name,
                    other,
                    f"applies to server = {other!r} services; this one runs under {server}"
                    + (f": put its settings in a {server} table" if server == "gunicorn" else ""),
                )
            )
    return {k: v for k, v in table.items() if k not in ("uwsgi", "gunicorn") or k == server}, problems


@dataclass(frozen=True)
class _Declared:
    """A service as written: its model when valid, and its `after` list either way."""

    file: str
    service: Service | None
    after: tuple[str, ...]
    defaulted: frozenset[str] = frozenset()  # keys whose value came from the file's [defaults]


def load_file(path: Path) -> tuple[dict[str, _Declared], list[Problem]]:
    """The services one file declares, and the problems found in it."""
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return {}, [Problem(file, None, None, f"not valid TOML: {exc}")]
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [Problem(file, None, None, f"cannot be read: {exc}")]
    problems: list[Problem] = []
    for key in data:
        if key not in ("services", file_defaults.SECTION):
            problems.append(
                Problem(
                    file,
                    None,
                    key,
                    "unknown top-level key; services go in [services.NAME] tables, "
                    "what they share in a [defaults] table",
                )
            )
    defaults, found = _validate_defaults(file, data.get(file_defaults.SECTION, {}))
    problems.extend(found)
    services_table = data.get("services", {})
    if not isinstance(services_table, dict):
        problems.append(Problem(file, None, "services", "must be a table of [services.NAME] tables"))
        return {}, problems
    declared: dict[str, _Declared] = {}
    fitted: set[str] = set()
    unknown_kind = False  # then which defaults fit nothing is not known
    for name, table in services_table.items():
        taken: frozenset[str] = frozenset()
        if isinstance(table, dict):
            kind, server = table.get("kind"), file_defaults.server_of(table, defaults)
            unknown_kind |= kind not in ("api", "worker")
            fitted.update(key for key in defaults if file_defaults.fits(key, kind, server))
            table, taken = file_defaults.apply(defaults, table)
        service, found = _validate_service(file, name, table)
        problems.extend(found)
        after = table.get("after") if isinstance(table, dict) else None
        if not (isinstance(after, list) and all(isinstance(d, str) for d in after)):
            after = []
        declared[name] = _Declared(file, service, tuple(after), taken)
    for key in set() if unknown_kind else defaults.keys() - fitted:
        problems.append(
            Problem(
                file,
                None,
                key,
                f"fits no service of this file ({file_defaults.where_it_fits(key)}), so it would do nothing",
                file_defaults.SECTION,
            )
        )
    return declared, problems


def _validate_defaults(file: str, table: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The file's [defaults] whose values are valid, and a problem for each that is not.

    Each value is checked by the models themselves, on a stand-in service of
    every kind it fits, so that a bad default is reported once, under
    `defaults`, and not again for every service that would have taken it.
    """
    section = file_defaults.SECTION
    if not isinstance(table, dict):
        return {}, [Problem(file, None, section, "must be a table of keys that every service of this file takes")]
    valid: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in table.items():
        if key in file_defaults.PER_SERVICE:
            reason = file_defaults.PER_SERVICE[key]
            problems.append(Problem(file, None, key, f"cannot be a default: {reason}", section))
            continue
        if key not in file_defaults.API_KEYS | file_defaults.WORKER_KEYS:
            known = ", ".join(sorted(file_defaults.API_KEYS | file_defaults.WORKER_KEYS))
            problems.append(Problem(file, None, key, f"unknown key for [defaults]; known: {known}", section))
            continue
        found = _probe_default(file, key, value)
        problems.extend(found)
        if not found:
            valid[key] = value
    return valid, problems


def _probe_default(file: str, key: str, value: Any) -> list[Problem]:
    stand_ins: list[tuple[str, dict[str, Any]]] = []
    if key in file_defaults.API_KEYS:
        server = {"server": key} if key in file_defaults.SERVER_TABLES else {}
        stand_ins.append(("api", {"kind": "api", "app": "stand.in:application", **server}))
    if key in file_defaults.WORKER_KEYS:
        stand_ins.append(("worker", {"kind": "worker", "command": ["stand-in"]}))
    problems: set[Problem] = set()
    for kind, stand_in in stand_ins:
        model = ApiService if kind == "api" else WorkerService
        try:
            model.model_validate({**stand_in, key: value})
        except ValidationError as exc:
            for error in exc.errors():
                if error["loc"] and error["loc"][0] == key:  # not a rule across keys: each service is judged on it
                    where, message = _describe(error, kind)
                    problems.add(Problem(file, None, where, message, file_defaults.SECTION))
    return sorted(problems, key=str)


def _check_graph(declared: Mapping[str, _Declared]) -> list[Problem]:
    """Unknown names in `after` and dependency cycles, over every declared service
    (valid or not, so that one broken service does not hide the others' mistakes)."""
    problems: list[Problem] = []
    for name, decl in declared.items():
        for dep in decl.after:
            if dep == name:
                problems.append(Problem(decl.file, name, "after", "a service cannot come after itself"))
            elif dep not in declared:
                problems.append(Problem(decl.file, name, "after", f"names an unknown service {dep!r}"))
    # cycles: depth-first search with colours
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(declared, white)
    stack: list[str] = []

    def visit(name: str) -> None:
        colour[name] = grey
        stack.append(name)
        for dep in declared[name].after:
            if dep not in declared or dep == name:
                continue
            if colour[dep] == grey:
                cycle = [*stack[stack.index(dep) :], dep]
                problems.append(Problem(declared[name].file, name, "after", "dependency cycle: " + " -> ".join(cycle)))
            elif colour[dep] == white:
                visit(dep)
        stack.pop()
        colour[name] = black

    for name in sorted(declared):
        if colour[name] == white:
            visit(name)
    return problems


def _check_mounts(services: Mapping[str, Service], sources: Mapping[str, str]) -> list[Problem]:
    seen: dict[str, str] = {}
    problems = []
    for name in sorted(services):
        mount = getattr(services[name], "mount", None)
        if mount is None:
            continue
        if mount in seen:
            problems.append(Problem(sources[name], name, "mount", f"{mount} is already the mount of {seen[mount]!r}"))
        else:
            seen[mount] = name
    return problems


def _check_paths(services: Mapping[str, Service], sources: Mapping[str, str]) -> list[Problem]:
    """Checks against this machine: venvs, users, groups, programs."""
    import grp
    import pwd
    import shutil

    problems: list[Problem] = []
    for name, service in services.items():
        file = sources[name]
        if service.venv is not None:
            venv = Path(service.venv)
            python = venv / "bin" / "python3"
            if not python.exists():
                problems.append(Problem(file, name, "venv", f"{service.venv} is not a virtualenv (no bin/python3)"))
            elif (
                isinstance(service, ApiService) and service.server == "uwsgi" and not (venv / "bin" / "uwsgi").exists()
            ):
                problems.append(
                    Problem(
                        file,
                        name,
                        "venv",
                        f"{service.venv} has no uWSGI: run '{service.venv}/bin/pip install pyuwsgi'",
                    )
                )
            elif (
                isinstance(service, ApiService)
                and service.server == "gunicorn"
                and not _has_module(service.venv, "gunicorn")
            ):
                problems.append(
                    Problem(
                        file,
                        name,
                        "server",
                        f"gunicorn is not installed in {service.venv}: run '{service.venv}/bin/pip install gunicorn'",
                    )
                )
        if service.user is not None and not service.user.isdigit():
            try:
                pwd.getpwnam(service.user)
            except KeyError:
                problems.append(Problem(file, name, "user", f"no such user {service.user!r}"))
        if service.group is not None and not service.group.isdigit():
            try:
                grp.getgrnam(service.group)
            except KeyError:
                problems.append(Problem(file, name, "group", f"no such group {service.group!r}"))
        if isinstance(service, ApiService) and app_is_file(service) and not Path(service.app or "").is_file():
            problems.append(Problem(file, name, "app", f"app file {service.app} does not exist"))
        if isinstance(service, ApiService) and service.paste is not None:
            if not Path(service.paste).is_file():
                problems.append(Problem(file, name, "paste", f"paste ini file {service.paste} does not exist"))
            if not _has_module(service.venv, "paste.deploy"):
                where = service.venv or sys.prefix
                problems.append(
                    Problem(
                        file,
                        name,
                        "paste",
                        f"PasteDeploy is not installed in {where}: run '{where}/bin/pip install PasteDeploy'",
                    )
                )
        if service.chdir is not None and not Path(service.chdir).is_dir():
            problems.append(Problem(file, name, "chdir", f"{service.chdir} is not a directory"))
        if isinstance(service, WorkerService):
            program = service.command[0]
            search = worker_path(service)  # where the worker will look for it
            if "/" in program:
                if not Path(program).is_file():
                    problems.append(Problem(file, name, "command", f"program {program} does not exist"))
            elif shutil.which(program, path=search) is None:
                problems.append(Problem(file, name, "command", f"program {program!r} is not on the PATH ({search})"))
    return problems


def _has_module(venv: str | None, module: str) -> bool:
    """`module` importable by the Python that serves the service, read from its files (no process started).

    Without a `venv`, the service runs on the daemon's own Python: this installation's.
    """
    if venv is None:
        import importlib.util

        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:
            return False
    root = Path(venv)
    package = module.replace(".", "/")
    patterns = [f"lib*/python3*/{where}/{package}/__init__.py" for where in ("site-packages", "dist-packages")]
    return any(next(root.glob(p), None) is not None for p in patterns)


def _from_defaults(problems: list[Problem], declared: Mapping[str, _Declared], host: bool = False) -> list[Problem]:
    """Problems with a value a service took from its file's [defaults], said so.

    What the host lacks (a venv, a user) is the default's own problem: it is
    reported once, under `defaults`; a dependency is judged per service, which
    stays named.
    """
    located = []
    for problem in problems:
        decl = declared.get(problem.service or "")
        if decl is None or (problem.key or "").split(".")[0] not in decl.defaulted:
            located.append(problem)
        elif host:
            located.append(Problem(problem.file, None, problem.key, problem.message, file_defaults.SECTION))
        else:
            located.append(Problem(problem.file, problem.service, problem.key, problem.message + " (from [defaults])"))
    return located


def load(conf_dir: Path, check_host: bool = True) -> Manifest:
    """Load and validate every `*.toml` in `conf_dir`; raise ManifestError listing all problems."""
    conf_dir = Path(conf_dir)
    if not conf_dir.is_dir():
        raise ManifestError([Problem(str(conf_dir), None, None, "conf dir does not exist or is not a directory")])
    services: dict[str, Service] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    declared: dict[str, _Declared] = {}
    for path in sorted(conf_dir.glob("*.toml")):
        found, file_problems = load_file(path)
        problems.extend(file_problems)
        for name, decl in found.items():
            if name in declared:
                problems.append(Problem(str(path), name, None, f"is already defined in {declared[name].file}"))
                continue
            declared[name] = decl
            if decl.service is not None:
                services[name] = decl.service
                sources[name] = decl.file
    problems.extend(_from_defaults(_check_graph(declared), declared))
    problems.extend(_check_mounts(services, sources))
    if check_host:
        problems.extend(_from_defaults(_check_paths(services, sources), declared, host=True))
    if problems:
        raise ManifestError(problems)
    return Manifest(services=services, sources=sources)
