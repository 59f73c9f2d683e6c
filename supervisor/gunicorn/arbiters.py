"""What the daemon tells a gunicorn arbiter, and reads of it: its spec file, its scoreboard as
stats, which arbiters run (for adoption), and what its output says of a failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import supervisor.gunicorn.board as board
from supervisor.layout import INSTANCES
from supervisor.listeners import BACKLOG
from supervisor.manifest.models import ApiService, paste_uri
from supervisor.observe.stats import ServerStats, WorkerStats
from supervisor.state.drivers import Failure

if TYPE_CHECKING:
    from supervisor.layout import Layout

BOOT_FILE = Path(__file__).with_name("boot.py")


def interpreter(service: ApiService, default_venv: Path) -> Path:
    return (Path(service.venv) if service.venv else default_venv) / "bin" / "python3"


def render_spec(name: str, service: ApiService, probe_token: str = "", daemon_lock: str = "") -> str:
    """What boot.py is told: pure, the same service gives the same text (adoption compares it).

    The arbiter gets it, its log FIFO and its board as descriptors the daemon opened: it may run as
    the service's user, who can open nothing in the daemon's private dirs.
    """
    spec: dict[str, Any] = {
        "service": name,
        "app": service.app or paste_uri(service),
        "argv0": name,
        "args": list(service.args),
        "processes": service.processes,
        "threads": service.threads,
        "protocol": service.protocol,
        "mount": service.mount,
        "chdir": service.chdir,
        "user": service.user,
        "group": service.group,
        "harakiri": service.harakiri,
        "max_rss_mb": service.max_rss_mb,
        "stop_timeout": max(1, int(service.stop_timeout)),
        "request_log": service.request_log,
        "backlog": BACKLOG,
        "settings": service.gunicorn,
        "slots": board.slots_for(service.processes),
        "probe_token": probe_token,  # what the daemon's health probe sends (request_marks.py)
        "daemon_lock": daemon_lock,  # the file a running daemon holds locked: its relay waits while one runs
    }
    if service.preload:  # only then: the spec of a service without it reads as an earlier version's did
        spec["preload"] = True
        spec["warmup"] = list(service.warmup)
        spec["before_fork"] = list(service.before_fork)
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def read_board(path: Path) -> ServerStats | None:
    """An arbiter's scoreboard as stats; None when there is none (yet)."""
    try:
        data = board.read_file(path)
        pid, slots = board.read(data)
    except (OSError, ValueError):
        return None
    workers, serving = [], board.read_requests(data, len(slots))
    for index, (wpid, state, busy, requests, exceptions, timeouts, tx, busy_us, spawned) in enumerate(slots):
        if wpid == 0:
            continue  # never used
        live = state != board.FREE
        workers.append(
            WorkerStats(
                id=index,
                pid=wpid if live else 0,
                accepting=state == board.READY,
                status=("busy" if busy else board.STATE_NAMES[state]) if live else "",
                requests=requests,
                exceptions=exceptions,
                harakiri_count=timeouts,
                respawn_count=0,
                avg_rt_us=busy_us // requests if requests else 0,
                tx=tx,
                apps=1 if state == board.READY else 0,
                last_spawn=int(spawned),
                in_flight=busy if live else 0,
                serving=(serving[index],) if live and busy and serving[index] else (),
            )
        )
    return ServerStats(pid=pid, workers=tuple(workers))


def ready_workers(stats: ServerStats) -> int:
    return sum(1 for w in stats.workers if w.pid > 0 and w.apps > 0)


def running_arbiters(layout: Layout) -> dict[tuple[str, str], int]:
    """Arbiters started from a spec file under this runtime dir, by (service, instance).

    With setproctitle in the venv (OpenStack's have it) gunicorn renames them (`gunicorn: master [NAME]`)
    and the command line names no spec: then the arbiter is the pid its board names, while that
    process still maps the board and its parent does not (a worker that wrote its own pid there).
    """
    if not any(layout.gunicorn_dir.glob("*.json")) and not any(layout.gunicorn_dir.glob("*.board")):
        # an arbiter's spec and board are removed only once it is gone: none here, none running. This
        # spares a cold start reading every process's command line on the host before its first vassal
        return {}
    matches: dict[int, tuple[int, str]] = {}  # pid -> (ppid, spec file): arbiters and their workers
    spec_dir = str(layout.gunicorn_dir) + "/"
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        argv = proc.info["cmdline"] or []
        if len(argv) == 3 and argv[1] == str(BOOT_FILE) and argv[2].startswith(spec_dir):
            matches[proc.pid] = (proc.info["ppid"], argv[2])
    found = {}
    for pid, (ppid, spec) in matches.items():
        if ppid in matches:
            continue  # a worker: forked by its arbiter, with the same command line
        name, _, instance = Path(spec).name.removesuffix(".json").partition(".")
        if instance in INSTANCES:
            found[name, instance] = pid
    for path in layout.gunicorn_dir.glob("*.board"):
        name, _, instance = path.name.removesuffix(".board").partition(".")
        stats = read_board(path)
        if instance in INSTANCES and (name, instance) not in found and stats is not None and heads(stats.pid, path):
            found[name, instance] = stats.pid
    return found


def heads(pid: int, path: Path) -> bool:
    """Whether `pid` is the arbiter of the board at `path`: it maps the board and its parent does not.

    Every worker maps the board too, and may write its own pid where the arbiter's belongs.
    """
    try:
        parent = psutil.Process(pid).ppid()
    except psutil.Error:
        return False
    return maps(pid, path) and not maps(parent, path)


def maps(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` mapped (an arbiter its board; a pid used again has not)."""
    try:
        return f" {path}\n" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def failure_hint(line: str, venv: str | None) -> Failure | None:
    """What a line of an arbiter's output says about why it is going down."""
    if "can't open file" in line and str(BOOT_FILE) in line and "Permission denied" in line:
        return Failure(f"{BOOT_FILE} is not readable by the service's user: install wsgi-supervisor where it is", False)
    if "No module named 'gunicorn'" in line:
        where = venv or sys.prefix
        return Failure(f"gunicorn is not installed in {where}: run '{where}/bin/pip install gunicorn'", False)
    if "No configuration setting for: " in line:
        return Failure(f"unknown gunicorn setting {line.rsplit(': ', 1)[-1]!r}", False)
    if "Worker failed to boot" in line or "App failed to load" in line or "Exception in worker process" in line:
        return Failure("the app failed to load")
    return None
