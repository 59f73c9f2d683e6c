"""Everything wsgi-supervisor knows about uWSGI, in one place.

Rendering a vassal file from a validated service, the emperor's command
line, the master-FIFO commands, parsing the stats JSON of vassals and of
the emperor, and recognising the log lines that tell a story (an app that
loaded, an app that failed). The rest of the code speaks of services.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.accounts import identity
from supervisor.layout import Layout
from supervisor.observe.stats import ServerStats, WorkerStats
from supervisor.preload import BEFORE_FORK_VARIABLE, WARMUP_VARIABLE
from supervisor.request_marks import REQUEST_MARK
from supervisor.uwsgi.launcher import LOG_FD

if TYPE_CHECKING:  # the models need pydantic: imported only where a vassal is rendered
    from supervisor.manifest.models import ApiService

# first line of every vassal file: what the launcher needs before uWSGI starts
LAUNCH_PREFIX = "; wsgi-supervisor-launch "

# master FIFO commands (uWSGI "master-fifo")
PAUSE = b"p"  # workers stop accepting once their request is done (a toggle)
GRACEFUL_STOP = b"q"  # workers finish their requests (uWSGI reaps them in its 1 s master cycle)

# imported in each worker before the app: makes its stdout a blocking write
BOOT_FILE = Path(__file__).with_name("vassal_boot.py")
# the WSGI file of every vassal: loads vassal_app.py (which imports the service's app and gives it
# chunked bodies in wsgi.input) from its bytecode
APP_FILE = Path(__file__).with_name("vassal_file.py")
# where the launcher tells APP_FILE which app to import and what the socket speaks
APP_VARIABLE = "WSGI_SUPERVISOR_APP"
PROTOCOL_VARIABLE = "WSGI_SUPERVISOR_PROTOCOL"


# one request log line: fixed fields first, the URI last (it may hold spaces); the request id
# and the origin ("probe" for the daemon's health probe) are log variables vassal_app.py sets,
# "-" when unset. gunicorn's boot.py writes the same format.
REQUEST_LOG_FORMAT = "%(method) %(status) %(micros) %(size) %(addr) %(wsgi_rid) %(wsgi_origin) %(uri)"


class Raw(str):
    """An option value of our own that uses uWSGI's `%` magic on purpose."""


def _value(value: object) -> str:
    """Render one option value: refuse injection, escape uWSGI's `%` magic."""
    from supervisor.manifest.models import ini_safe

    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = ini_safe(str(value))
    return text.replace("%", "%%")


def interpreter(service: ApiService, default_venv: Path) -> tuple[Path, Path]:
    """The Python and the pyuwsgi entry point that run this service."""
    venv = Path(service.venv) if service.venv else default_venv
    return venv / "bin" / "python3", venv / "bin" / "uwsgi"


def launch_spec(
    name: str, service: ApiService, layout: Layout, default_venv: Path, instance: str = ""
) -> dict[str, Any]:
    from supervisor.manifest.models import paste_uri

    python, entry = interpreter(service, default_venv)
    env = {"PYTHONUNBUFFERED": "1", **service.environment}
    if service.venv:
        env.setdefault("VIRTUAL_ENV", str(service.venv))
    # the app vassal_app.py loads: a module or file, or a paste-deploy URI
    env[APP_VARIABLE] = service.app or paste_uri(service)
    env[PROTOCOL_VARIABLE] = service.protocol
    if service.warmup:
        env[WARMUP_VARIABLE] = "\n".join(service.warmup)
    if service.before_fork:
        env[BEFORE_FORK_VARIABLE] = "\n".join(service.before_fork)
    return {
        "service": name,
        "instance": instance,
        "exec": [str(python), str(entry)],
        "path": str(python.parent),
        "env": env,
        "launch": str(layout.launch_socket),
        "output": str(layout.vassal_log(name, instance)),  # where uWSGI's first lines go (launcher.output)
        "rundir": str(layout.master_dir(name, instance)),
        **_account(service),
    }


def _account(service: ApiService) -> dict[str, Any]:
    """Whom the launcher becomes before uWSGI starts (numbers: the launcher imports no `pwd`)."""
    if not service.user:
        return {}
    who = identity(service.user, service.group)
    assert who is not None
    return {"uid": who.uid, "gid": who.gid, "groups": [str(g) for g in who.groups]}


def launch_line(spec: dict[str, Any]) -> str:
    """The launcher's line: `key=hex` fields (lists and tables NUL-joined), parsed with no import."""

    def text(value: Any) -> str:
        if isinstance(value, dict):
            return "\0".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, list):
            return "\0".join(value)
        return str(value)

    return LAUNCH_PREFIX + " ".join(f"{key}={text(spec[key]).encode().hex()}" for key in sorted(spec))


Options = list[tuple[str, object]]


def render_vassal(name: str, service: ApiService, layout: Layout, default_venv: Path, instance: str = "") -> str:
    """The vassal ini for one API (one of its two instances). Pure: same service, same text.
    It holds no secret: each master gets its probe token in the launch socket's answer."""
    options = [
        *_workers(service),
        *_socket(service, str(layout.api_socket(name))),
        *_app(service),
        *_plumbing(name, service, layout, default_venv, instance),
        *_identity(service),
        *_limits(service),
    ]
    for key, value in service.uwsgi.items():
        for item in value if isinstance(value, list) else [value]:
            options.append((key, item))
    spec = launch_spec(name, service, layout, default_venv, instance)
    lines = [launch_line(spec), "[uwsgi]"]
    lines += [f"{key} = {_value(value)}" for key, value in options]
    return "\n".join(lines) + "\n"


def _workers(service: ApiService) -> Options:
    options: Options = [
        ("strict", True),
        ("master", True),
        ("need-app", True),
        # without preload, apps load in each worker after the fork: OpenStack apps may open
        # connections and threads at import. With it, the master loads the app (vassal_app.py
        # guards the fork, and relaunches the master with --lazy-apps when it must not)
        *([] if service.preload else [("lazy-apps", True)]),
        ("die-on-term", True),
        ("enable-threads", True),
        ("thunder-lock", True),
        ("processes", service.processes),
    ]
    if service.threads > 1:
        options.append(("threads", service.threads))
    return options


def _socket(service: ApiService, socket: str) -> Options:
    if service.protocol != "http":
        return [("socket", socket)]
    return [
        ("http-socket", socket),
        ("protocol", "http"),
        ("http-auto-chunked", True),
        ("http-raw-body", True),
        # the largest chunk uwsgi.chunked_read() takes (vassal_app.py reads them)
        ("chunked-input-limit", 10 * 1024 * 1024),
        # no http-manage-expect: it answers `Expect: 100-continue` only in uWSGI's
        # HTTP router, never on an http-socket; the front end answers it instead
    ]


def _app(service: ApiService) -> Options:
    """uWSGI loads APP_FILE, which imports service.app (named in the launch line's environment)."""
    if service.mount and service.mount != "/":
        # the app under its URL prefix: uWSGI splits SCRIPT_NAME/PATH_INFO itself, so a
        # front end passes the full path (nginx does); other paths reach it unsplit
        options: Options = [("mount", f"{service.mount}={APP_FILE}"), ("manage-script-name", True)]
    else:
        options = [("wsgi-file", APP_FILE)]
    if service.args:
        options.append(("pyargv", " ".join(service.args)))
    # systemd's default: the emperor starts each vassal in its own vassals dir (0700, the daemon's), where
    # a master or worker of another user could not even read its working directory
    options.append(("chdir", service.chdir or "/"))
    return options


def _plumbing(name: str, service: ApiService, layout: Layout, default_venv: Path, instance: str) -> Options:
    """What ties the vassal to the daemon: its Python, stats, FIFO, logs, names."""
    python, _ = interpreter(service, default_venv)
    stop = max(1, int(service.stop_timeout))
    options: Options = [
        ("binary-path", python),
        ("stats", layout.stats_socket(name, instance)),
        ("master-fifo", layout.master_fifo(name, instance)),
        ("exit-on-reload", False),
        # a little longer than the daemon's own bound: the daemon's SIGKILL comes
        # first, and it counts the requests it ends
        ("worker-reload-mercy", stop + 2),
        ("reload-mercy", stop + 2),
        ("buffer-size", 65535),
        ("add-header", "Connection: close"),
        ("ignore-sigpipe", True),
        ("ignore-write-errors", True),
        ("disable-write-exception", True),
        ("threaded-logger", True),
        ("import", BOOT_FILE),
        # request lines too: one pipe from the workers keeps them in order with what else they write
        # the instance's log FIFO (layout.vassal_log), opened by the launcher as root on this descriptor
        ("logger", f"fd:{LOG_FD}"),
    ]
    if service.request_log:
        options.append(("log-format", Raw(REQUEST_MARK + REQUEST_LOG_FORMAT)))
    else:
        options.append(("disable-logging", True))
    return options


def _identity(service: ApiService) -> Options:
    if service.user:
        return []  # the launcher is the service's user already (launch_spec): uWSGI has nothing to drop
    if service.group:
        return [("gid", service.group), ("master-as-root", True)]
    return []


def _limits(service: ApiService) -> Options:
    options: Options = []
    if service.harakiri:
        options += [("harakiri", service.harakiri), ("harakiri-verbose", True)]
    # max_rss_mb is not uWSGI's reload-on-rss, which judges RSS (shared pages counted in every worker):
    # the daemon judges each worker's USS from its samples (sampling.py `recycle_fat_workers`)
    return options


def read_launch_spec(text: str) -> dict[str, Any] | None:
    """The launch line as the launcher reads it (lists and tables decoded)."""
    from supervisor.uwsgi.launcher import parse_launch_line

    first = text.split("\n", 1)[0]
    if not first.startswith(LAUNCH_PREFIX):
        return None
    spec: dict[str, Any] = parse_launch_line(first)
    spec["exec"] = spec["exec"].split("\0")
    spec["env"] = dict(item.split("=", 1) for item in spec["env"].split("\0") if item)
    return spec


def emperor_argv(uwsgi_entry: Path, python: Path, layout: Layout) -> list[str]:
    """The emperor's command line: kept minimal, since options that imply a
    master turn the emperor into one (and SIGTERM into a reload)."""
    return [
        str(python),
        str(uwsgi_entry),
        "--emperor",
        str(layout.vassal_dir),
        "--emperor-wrapper",
        str(layout.launcher),
        "--emperor-stats",
        str(layout.emperor_stats),
        # the daemon keeps its own backoff; the emperor's throttle (1 s more per
        # unloyal death) would delay every restart
        "--emperor-throttle",
        "1",
        "--emperor-max-throttle",
        "10",
        # a vassal whose file is gone (stopped, or retired by a reload) is the daemon's to end,
        # bounded by its stop_timeout (up to an hour): the emperor's own SIGKILL of the master,
        # 30 s after the file went, cut short what its workers still did, and orphaned them
        "--emperor-curse-tolerance",
        "3700",
    ]


def _in_flight(worker: dict[str, Any]) -> int:
    cores = sum(1 for core in worker.get("cores", ()) if core.get("in_request"))
    return cores or (1 if worker.get("status") == "busy" else 0)


def _serving(worker: dict[str, Any]) -> tuple[str, ...]:
    """Each request the worker's cores are in, as "METHOD URI" (uWSGI lists a busy core's request vars)."""
    found = []
    for core in worker.get("cores", ()):
        if not core.get("in_request"):
            continue
        pairs = (str(v).partition("=") for v in core.get("vars", ()) if isinstance(v, str))
        env = {key: value for key, _, value in pairs}
        uri = env.get("REQUEST_URI") or env.get("PATH_INFO", "")
        if uri:
            found.append(f"{env.get('REQUEST_METHOD', '?')} {uri}")
    return tuple(found)


def parse_stats(raw: bytes) -> ServerStats:
    data = json.loads(raw)
    workers = tuple(
        WorkerStats(
            id=int(w.get("id", 0)),
            pid=int(w.get("pid", 0)),
            accepting=bool(w.get("accepting", 0)),
            status=str(w.get("status", "")),
            requests=int(w.get("requests", 0)),
            exceptions=int(w.get("exceptions", 0)),
            harakiri_count=int(w.get("harakiri_count", 0)),
            respawn_count=int(w.get("respawn_count", 0)),
            avg_rt_us=int(w.get("avg_rt", 0)),
            tx=int(w.get("tx", 0)),
            apps=len(w.get("apps", ())),
            last_spawn=int(w.get("last_spawn", 0)),
            in_flight=_in_flight(w),
            serving=_serving(w),
        )
        for w in data.get("workers", ())
    )
    return ServerStats(pid=int(data.get("pid", 0)), workers=workers)


@dataclass(frozen=True)
class EmperorVassal:
    name: str
    pid: int


def parse_emperor_stats(raw: bytes) -> tuple[int, dict[str, EmperorVassal]]:
    """The emperor's pid and its vassals by service name."""
    data = json.loads(raw)
    vassals = {}
    for v in data.get("vassals", ()):
        ident = str(v.get("id", ""))
        if ident.endswith(".ini"):
            name = ident[: -len(".ini")]  # NAME, or NAME.b for the second instance
            vassals[name] = EmperorVassal(name=name, pid=int(v.get("pid", 0)))
    return int(data.get("pid", 0)), vassals


# --- log lines ---------------------------------------------------------------

LOG_PREFIX = re.compile(rb"([a-z0-9][a-z0-9_-]*)\|([or])\|")
_APP_FAILED = re.compile(r"unable to load app \d+|no app loaded\. GAME OVER|failed loading app in worker")
_OPTION_ERROR = re.compile(r"\[strict-mode\] unknown config directive: (\S+)")


def split_datagram(data: bytes) -> tuple[str | None, str, bytes]:
    """(service, stream, payload) of a datagram on the daemon's log socket.

    Only servers an earlier version of the daemon started still send there
    (now every vassal and arbiter writes into a log FIFO of its own,
    logs/fifos.py): prefixed `NAME|o|` (output) or `NAME|r|` (request lines)
    by their logger, unprefixed (service None) for a vassal's first lines.
    The name is a claim, not a fact: the log intake keeps a datagram only
    from a process of the service it names (logs/senders.py).
    """
    match = LOG_PREFIX.match(data)
    if match:
        return match.group(1).decode(), match.group(2).decode(), data[match.end() :]
    return None, "o", data


@dataclass(frozen=True)
class Request:
    method: str
    status: int
    duration_s: float
    size: int
    addr: str
    path: str
    request_id: str | None = None  # what the app returned in X-OpenStack-Request-ID (or X-Request-Id)
    probe: bool = False  # asked by the daemon's own health probe


_ORIGINS = ("-", "probe")


def parse_request(line: str) -> Request | None:
    """A request line; one of a server started by an earlier daemon (without the request id and
    origin fields) is read too."""
    parts = line.rstrip("\n").split(" ", 7)
    if len(parts) < 6:
        return None
    method, status, micros, size, addr = parts[:5]
    rid = origin = "-"
    if len(parts) == 8 and parts[6] in _ORIGINS and not parts[5].startswith("/"):
        rid, origin, path = parts[5:]
    else:
        path = line.rstrip("\n").split(" ", 5)[5]
    try:
        timing = (int(status), int(micros) / 1e6, int(size))
        return Request(method, *timing, addr, path, None if rid == "-" else rid, origin == "probe")
    except ValueError:
        return None


def is_config_error(line: str) -> bool:
    """The vassal refuses its own options (strict mode): no retry can help."""
    return _OPTION_ERROR.search(line) is not None


def failure_hint(line: str) -> str | None:
    """A short reason when a log line says why a vassal is going down."""
    match = _OPTION_ERROR.search(line)
    if match:
        return f"unknown uWSGI option {match.group(1)!r}"
    if _APP_FAILED.search(line):
        return "the app failed to load"
    return None


_SUSPENDED = re.compile(r"\*\*\* worker (\d+) suspended \*\*\*")


def suspended_worker(line: str) -> int | None:
    """The id of the worker that says it is pausing (it writes this line, then waits in its pause loop)."""
    match = _SUSPENDED.search(line)
    return int(match.group(1)) if match else None


def app_loaded(line: str) -> bool:
    return line.startswith("WSGI app ") and " ready in " in line
