"""The service manifest: `conf.d/*.toml` loaded into frozen pydantic models.

Loading touches no process. Every problem in every file is collected and
reported at once as a `Problem(file, service, key, message)`, so an operator
fixes a broken manifest in one pass.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from supervisor.config import DEFAULT_PATH
from supervisor.layout import RESERVED_SERVICE_NAMES

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_NAME = 64
# the daemon logs under "wsgi-supervisor"; "control" would collide with control.sock
RESERVED_NAMES = frozenset({"wsgi-supervisor"}) | RESERVED_SERVICE_NAMES
UWSGI_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
MODULE_APP = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?")
PASTE_APP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MOUNT = re.compile(r"/|(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")
ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]*\$?|[0-9]+")
SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL")

# uWSGI options that wsgi-supervisor sets itself: a service's `uwsgi` table may
# not override them, or the daemon would lose track of the vassal.
RESERVED_UWSGI_OPTIONS = frozenset(
    {
        "socket",
        "uwsgi-socket",
        "http-socket",
        "shared-socket",
        "protocol",
        "stats",
        "stats-server",
        "master",
        "master-fifo",
        "emperor",
        "binary-path",
        "logger",
        "req-logger",
        "logto",
        "log-master",
        "daemonize",
        "pidfile",
        "pidfile2",
        "uid",
        "gid",
        "module",
        "wsgi-file",
        "file",
        # the vassal loads vassal_app.py under its own callable and mount: `app` and `mount` say these
        "wsgi",
        "callable",
        "mount",
        "paste",
        "pyargv",
        "virtualenv",
        "home",
        "venv",
        "pyhome",
        "ini",
        "xml",
        "yaml",
        "json",
        "inherit",
        "include",
        "processes",
        "workers",
        "threads",
        "chmod-socket",
        "chown-socket",
        "vacuum",
        "strict",
        "need-app",
        "die-on-term",
        "lazy-apps",
        "lazy",
        "zerg",
        "env",
        "chdir",
        "log-format",
        "disable-logging",
        "emperor-wrapper",
    }
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the manifest, located as precisely as it can be."""

    file: str
    service: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.service:
            where += f": service {self.service!r}"
        if self.key:
            where += f", key {self.key!r}"
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The manifest does not validate; `problems` lists every reason."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.service or "", p.key or "", p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def ini_safe(value: str) -> str:
    """Refuse text that could add a line, an option or a directive to a vassal file.

    uWSGI's ini reader ends a value at a newline, expands `%x` magic and
    `$(VAR)` environment references, and reads `@(...)` as file content; a
    value carrying any of these could smuggle options into the vassal.
    `%` alone is escaped when rendering.
    """
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"contains the control character {ch!r}, which a uWSGI option cannot hold")
    for seq in ("$(", "@(", "%("):
        if seq in value:
            raise ValueError(f"contains {seq!r}, which uWSGI would expand")
    if value[:1] in ("@", "!"):
        raise ValueError(f"starts with {value[0]!r}, which uWSGI reads as file or command magic")
    return value


def _no_whitespace(value: str) -> str:
    if any(ch.isspace() for ch in value):
        raise ValueError("contains whitespace; uWSGI splits pyargv on spaces, so pass it as separate items")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


SafeStr = Annotated[StrictStr, AfterValidator(ini_safe)]
AbsPath = Annotated[StrictStr, AfterValidator(ini_safe), AfterValidator(_absolute)]
ArgStr = Annotated[StrictStr, AfterValidator(ini_safe), AfterValidator(_no_whitespace)]
Seconds = StrictFloat | StrictInt


class _Service(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    venv: AbsPath | None = Field(None, description="the service's own virtualenv (its bin/python3 runs it)")
    environment: dict[str, StrictStr] = Field(
        default_factory=dict, description="environment variables the service sees from its first instruction"
    )
    user: SafeStr | None = Field(None, description="user the service runs as")
    group: SafeStr | None = Field(None, description="group the service runs as")
    after: tuple[StrictStr, ...] = Field((), description="services that must be ready before this one starts")
    stop_timeout: Seconds = Field(10.0, gt=0, le=3600, description="seconds a graceful stop may take before SIGKILL")
    start_timeout: Seconds = Field(
        120.0, gt=0, le=3600, description="seconds a start may take to become ready before it counts as failed"
    )
    enabled: StrictBool = Field(True, description="start with the daemon (false: only on `wsgictl start`)")
    backoff_max: Seconds = Field(
        60.0, ge=1, le=3600, description="longest pause between two attempts to start a service that fails to start"
    )
    start_limit: StrictInt = Field(
        0, ge=0, le=1000, description="failed starts in a row before the service is `failed` (0: keep retrying)"
    )

    @field_validator("environment")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not ENV_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\0" in value:
                raise ValueError(f"value of {key} contains a NUL byte")
        return env

    @field_validator("user", "group")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT.fullmatch(value):
            raise ValueError(f"{value!r} is not a user or group name")
        return value


class ApiService(_Service):
    """A WSGI application served by its own uWSGI vassal on a unix socket."""

    kind: Literal["api"]
    app: SafeStr | None = Field(
        None, description="'package.module:callable' or a path to a .py file defining `application`"
    )
    paste: SafeStr | None = Field(None, description="a paste-deploy ini file that builds the app (instead of `app`)")
    paste_app: SafeStr | None = Field(None, description="the app of the `paste` file to load (paste-deploy's 'main')")
    args: tuple[ArgStr, ...] = Field((), description="sys.argv of the app (uWSGI pyargv)")
    processes: StrictInt = Field(2, ge=1, le=512, description="uWSGI worker processes")
    threads: StrictInt = Field(1, ge=1, le=256, description="threads per worker")
    protocol: Literal["uwsgi", "http"] = Field("uwsgi", description="what the socket speaks")
    mount: SafeStr | None = Field(None, description="URL prefix at the front-end proxy, e.g. /identity")
    chdir: AbsPath | None = Field(None, description="working directory of the app")
    request_log: StrictBool = Field(True, description="log one line per request")
    harakiri: StrictInt | None = Field(None, ge=1, le=86400, description="seconds before a stuck worker is killed")
    max_rss_mb: StrictInt | None = Field(None, ge=16, description="recycle a worker whose resident memory passes this")
    uwsgi: dict[str, Any] = Field(default_factory=dict, description="extra uWSGI options for this vassal")

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        if value is not None and not _is_app_file(value) and not MODULE_APP.fullmatch(value):
            raise ValueError("must be 'package.module:callable' or an absolute path to a .py file")
        return value

    @field_validator("paste")
    @classmethod
    def _paste(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith(("config:", "egg:", "call:")):
            raise ValueError(
                "is the path of the paste ini file, without a 'config:' scheme; "
                '\'config:FILE#NAME\' is written paste = "FILE" and paste_app = "NAME"'
            )
        if "#" in value:
            raise ValueError("must not contain '#': name the app with paste_app = \"NAME\"")
        if not value.startswith("/"):
            raise ValueError("must be a path to a paste ini file (relative to the manifest file, or absolute)")
        return value

    @field_validator("paste_app")
    @classmethod
    def _paste_app(cls, value: str | None) -> str | None:
        if value is not None and not PASTE_APP.fullmatch(value):
            raise ValueError("must be the name of an [app:NAME], [pipeline:NAME] or [composite:NAME] section")
        return value

    @model_validator(mode="after")
    def _one_app(self) -> ApiService:
        # `load` reports these as located problems before the model sees them
        if (self.app is None) == (self.paste is None):
            raise ValueError("an api service needs exactly one of 'app' and 'paste'")
        if self.paste_app is not None and self.paste is None:
            raise ValueError("'paste_app' needs 'paste'")
        return self

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str | None) -> str | None:
        if value is not None:
            if not MOUNT.fullmatch(value):
                raise ValueError("must be '/' or a URL path like '/identity' without a trailing slash")
            if "//" in value:
                raise ValueError("must not contain '//'")
        return value

    @field_validator("uwsgi")
    @classmethod
    def _uwsgi(cls, options: dict[str, Any]) -> dict[str, Any]:
        for key, value in options.items():
            if not UWSGI_OPTION_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a uWSGI option name")
            if key in RESERVED_UWSGI_OPTIONS:
                raise ValueError(f"{key!r} is set by wsgi-supervisor; use the manifest key for it instead")
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    try:
                        ini_safe(item)
                    except ValueError as exc:
                        raise ValueError(f"option {key!r} {exc}") from None
                elif not isinstance(item, bool | int):
                    raise ValueError(f"option {key!r} must be a string, an integer, a boolean or a list of those")
        return options


class WorkerService(_Service):
    """A long-running command (conductor, scheduler, rpc server...)."""

    kind: Literal["worker"]
    command: tuple[StrictStr, ...] = Field(min_length=1, description="argv of the command; no shell is involved")
    stop_signal: Literal[SIGNALS] = Field("SIGTERM", description="signal that asks the worker to stop")
    reload_signal: Literal[SIGNALS] = Field("SIGHUP", description="signal that asks the worker to reload")
    notify: StrictBool = Field(
        False, description="the worker sends READY=1 to $NOTIFY_SOCKET when up (oslo.service does); wait for it"
    )
    ready_after: Seconds = Field(
        2.0, ge=0, le=3600, description="seconds up before a worker that never sends READY=1 counts as ready"
    )
    chdir: AbsPath | None = Field(None, description="working directory of the command")

    @field_validator("command")
    @classmethod
    def _command(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if not argv[0]:
            raise ValueError("the program name is empty")
        if any("\0" in a for a in argv):
            raise ValueError("an argument contains a NUL byte")
        return argv


Service = ApiService | WorkerService


def _is_app_file(app: str) -> bool:
    return app.endswith(".py") or "/" in app


def app_is_file(service: ApiService) -> bool:
    return service.app is not None and _is_app_file(service.app)


def paste_uri(service: ApiService) -> str | None:
    """The paste-deploy URI of a `paste` service (`config:FILE` or `config:FILE#NAME`), else None."""
    if service.paste is None:
        return None
    return f"config:{service.paste}" + (f"#{service.paste_app}" if service.paste_app else "")


@dataclass(frozen=True)
class Manifest:
    """Every service of the host, by name, with the file each came from."""

    services: Mapping[str, Service]
    sources: Mapping[str, str]

    def start_order(self, names: Iterable[str] | None = None) -> list[str]:
        """Names in an order where each comes after what it depends on."""
        wanted = list(self.services) if names is None else list(names)
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dep in self.services[name].after:
                visit(dep)
            order.append(name)

        for name in sorted(wanted):
            visit(name)
        return order

    def dependents(self, name: str) -> list[str]:
        return sorted(n for n, s in self.services.items() if name in s.after)


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
    try:
        service = model.model_validate(table)
    except ValidationError as exc:
        for error in exc.errors():
            key, message = _describe(error, kind)
            problems.append(Problem(file, name, key, message))
        return None, problems
    return (None if problems else service), problems


@dataclass(frozen=True)
class _Declared:
    """A service as written: its model when valid, and its `after` list either way."""

    file: str
    service: Service | None
    after: tuple[str, ...]


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
        if key != "services":
            problems.append(Problem(file, None, key, "unknown top-level key; services go in [services.NAME] tables"))
    services_table = data.get("services", {})
    if not isinstance(services_table, dict):
        problems.append(Problem(file, None, "services", "must be a table of [services.NAME] tables"))
        return {}, problems
    declared: dict[str, _Declared] = {}
    for name, table in services_table.items():
        service, found = _validate_service(file, name, table)
        problems.extend(found)
        after = table.get("after") if isinstance(table, dict) else None
        if not (isinstance(after, list) and all(isinstance(d, str) for d in after)):
            after = []
        declared[name] = _Declared(file, service, tuple(after))
    return declared, problems


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
            elif isinstance(service, ApiService) and not (venv / "bin" / "uwsgi").exists():
                problems.append(
                    Problem(
                        file,
                        name,
                        "venv",
                        f"{service.venv} has no uWSGI: run '{service.venv}/bin/pip install pyuwsgi'",
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
            if not _has_paste_deploy(service.venv):
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


def worker_path(service: WorkerService) -> str:
    """The PATH a worker runs with: its `environment`'s, else its venv's bin/ before the default."""
    if "PATH" in service.environment:
        return service.environment["PATH"]
    return f"{service.venv}/bin:{DEFAULT_PATH}" if service.venv else DEFAULT_PATH


def _has_paste_deploy(venv: str | None) -> bool:
    """paste.deploy importable by the Python that serves the service, read from its files (no process started).

    Without a `venv`, the service runs on the daemon's own Python: this installation's.
    """
    if venv is None:
        import importlib.util

        try:
            return importlib.util.find_spec("paste.deploy") is not None
        except ImportError:
            return False
    root = Path(venv)
    patterns = (
        "lib*/python3*/site-packages/paste/deploy/__init__.py",
        "lib*/python3*/dist-packages/paste/deploy/__init__.py",
    )
    return any(next(root.glob(p), None) is not None for p in patterns)


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
    problems.extend(_check_graph(declared))
    problems.extend(_check_mounts(services, sources))
    if check_host:
        problems.extend(_check_paths(services, sources))
    if problems:
        raise ManifestError(problems)
    return Manifest(services=services, sources=sources)
