"""The service manifest's models: each `[services.NAME]` table as a frozen pydantic model.

Each setting is declared once, with its type, default and description;
`loading.py` reads the files into them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    ValidationInfo,
    field_validator,
    model_validator,
)

from supervisor.config import DEFAULT_PATH
from supervisor.gunicorn.settings import check_table as check_gunicorn_table
from supervisor.layout import RESERVED_SERVICE_NAMES
from supervisor.uwsgi.options import RESERVED_UWSGI_OPTIONS, UNSAFE_UWSGI_OPTIONS, UWSGI_OPTION_NAME

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_NAME = 64
# the daemon logs under "wsgi-supervisor"; "control" would collide with control.sock
RESERVED_NAMES = frozenset({"wsgi-supervisor"}) | RESERVED_SERVICE_NAMES
MODULE_APP = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?")
PASTE_APP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MOUNT = re.compile(r"/|(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")
ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]*\$?|[0-9]+")
SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the manifest, located as precisely as it can be."""

    file: str
    service: str | None
    key: str | None
    message: str
    section: str | None = None  # a table of the file that is not a service's: "defaults"

    def __str__(self) -> str:
        where = self.file
        if self.service:
            where += f": service {self.service!r}"
        elif self.section:
            where += f": {self.section}"
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
    """A WSGI application served by its own process tree (a uWSGI vassal or a gunicorn arbiter) on a unix socket."""

    kind: Literal["api"]
    server: Literal["uwsgi", "gunicorn"] = Field(
        "uwsgi", description="the WSGI server that runs it, installed in its venv (pyuwsgi or gunicorn)"
    )
    app: SafeStr | None = Field(
        None, description="'package.module:callable' or a path to a .py file defining `application`"
    )
    paste: SafeStr | None = Field(None, description="a paste-deploy ini file that builds the app (instead of `app`)")
    paste_app: SafeStr | None = Field(None, description="the app of the `paste` file to load (paste-deploy's 'main')")
    args: tuple[ArgStr, ...] = Field((), description="sys.argv of the app (uWSGI pyargv)")
    processes: StrictInt = Field(2, ge=1, le=512, description="worker processes")
    threads: StrictInt = Field(1, ge=1, le=256, description="threads per worker")
    protocol: Literal["uwsgi", "http"] = Field("uwsgi", description="what the socket speaks")
    mount: SafeStr | None = Field(None, description="URL prefix at the front-end proxy, e.g. /identity")
    chdir: AbsPath | None = Field(None, description="working directory of the app")
    request_log: StrictBool = Field(True, description="log one line per request")
    request_log_skip: tuple[StrictStr, ...] = Field(
        (), description="path prefixes (under the mount) whose request lines are counted in metrics, not logged"
    )
    harakiri: StrictInt | None = Field(None, ge=1, le=86400, description="seconds before a stuck worker is killed")
    max_rss_mb: StrictInt | None = Field(
        None, ge=16, description="recycle a worker whose own memory (USS: pages no other process shares) passes this"
    )
    uwsgi: dict[str, Any] = Field(default_factory=dict, description="extra uWSGI options for this vassal")
    gunicorn: dict[str, Any] = Field(
        default_factory=dict, description="extra gunicorn settings (config-file names) for a gunicorn service"
    )
    preload: StrictBool = Field(
        False,
        description="load the app once in the master and fork the workers from it (gc.freeze() first): they "
        "share its memory; a master holding a thread, socket or file after the import loads it in each worker instead",
    )
    warmup: tuple[StrictStr, ...] = Field(
        (),
        description='paths GET through the app in the master before the fork (needs preload), e.g. ["/", "/v3"]',
    )
    health: SafeStr | None = Field(
        None,
        description="the app's own health path (e.g. /healthcheck, oslo.middleware): ready only while it answers 2xx",
    )
    health_interval: Seconds = Field(5.0, gt=0, le=3600, description="seconds between two health checks")
    health_timeout: Seconds = Field(2.0, gt=0, le=600, description="seconds a health check may take")
    health_threshold: StrictInt = Field(
        3, ge=1, le=100, description="failed health checks in a row before a ready service turns not ready"
    )

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
        if self.server != "uwsgi" and self.uwsgi:
            raise ValueError(
                f"a uwsgi table applies to uWSGI services; this one runs under {self.server} "
                f"(server = {self.server!r}): put its settings in a {self.server} table"
            )
        if self.server != "gunicorn" and self.gunicorn:
            raise ValueError(
                "a gunicorn table applies to gunicorn services; this one runs under uWSGI: "
                'set server = "gunicorn", or put its options in a uwsgi table'
            )
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

    @field_validator("health")
    @classmethod
    def _health(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(ch.isspace() for ch in value)):
            raise ValueError("must be a URL path of the app, like '/healthcheck' (relative to its mount)")
        return value

    @field_validator("warmup")
    @classmethod
    def _warmup(cls, paths: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if paths and not info.data.get("preload"):
            raise ValueError(
                "needs preload = true: warm-up requests run in the master, which loads the app only with preload"
            )
        for path in paths:
            if not path.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in path):
                raise ValueError(f"{path!r} is not a path: each item must be a URL path of the app, like '/v3'")
        return paths

    @field_validator("request_log_skip")
    @classmethod
    def _request_log_skip(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in prefixes:
            if not prefix.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in prefix):
                raise ValueError(
                    f"{prefix!r} is not a path prefix: each item must be a URL path like '/healthcheck' "
                    "(relative to the mount), without spaces"
                )
        return prefixes

    @field_validator("gunicorn")
    @classmethod
    def _gunicorn(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return check_gunicorn_table(settings)

    @field_validator("uwsgi")
    @classmethod
    def _uwsgi(cls, options: dict[str, Any]) -> dict[str, Any]:
        for key, value in options.items():
            if not UWSGI_OPTION_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a uWSGI option name")
            if key in RESERVED_UWSGI_OPTIONS:
                raise ValueError(f"{key!r} is set by wsgi-supervisor; use the manifest key for it instead")
            if key in UNSAFE_UWSGI_OPTIONS:
                raise ValueError(f"{key!r} corrupts the memory of a vassal run in its launcher's process; leave it out")
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
        False,
        description="the worker sends READY=1 to $NOTIFY_SOCKET when up (oslo.service does); wait for it "
        "(heard only from its main process or their descendants, running as its user)",
    )
    reload_notify: StrictBool = Field(
        False,
        description="the worker speaks systemd's reload protocol (Type=notify-reload): after the reload signal it "
        "sends RELOADING=1, then READY=1 once reloaded, and a reload waits for that (up to start_timeout); "
        "off, a reload is done once the signal is delivered, as systemd counts it for Type=notify",
    )
    ready_after: Seconds = Field(
        2.0, ge=0, le=3600, description="seconds up before a worker that never sends READY=1 counts as ready"
    )
    chdir: AbsPath | None = Field(None, description="working directory of the command")

    @model_validator(mode="after")
    def _reload_notify_needs_notify(self) -> WorkerService:
        if self.reload_notify and not self.notify:
            raise ValueError("reload_notify = true needs notify = true: the reload protocol speaks on $NOTIFY_SOCKET")
        return self

    @field_validator("command")
    @classmethod
    def _command(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if not argv[0]:
            raise ValueError("the program name is empty")
        if any("\0" in a for a in argv):
            raise ValueError("an argument contains a NUL byte")
        return argv


Service = ApiService | WorkerService


def runner(service: Service) -> str:
    """What runs the service's processes, which names its driver: "uwsgi", "gunicorn" or "process"."""
    return service.server if isinstance(service, ApiService) else "process"


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


def worker_path(service: WorkerService) -> str:
    """The PATH a worker runs with: its `environment`'s, else its venv's bin/ before the default."""
    if "PATH" in service.environment:
        return service.environment["PATH"]
    return f"{service.venv}/bin:{DEFAULT_PATH}" if service.venv else DEFAULT_PATH
