"""`wsgi-supervisor`: the daemon's command line and its run, start to finish.

Reads like a script: parse arguments, load the manifest, take the runtime
dir, open the log intake and the control socket, start or adopt the
emperor, start the services, serve until SIGTERM/SIGINT, then stop
everything in a fixed, bounded order, whatever part of the start-up
succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import __version__, config
from supervisor.config import Config
from supervisor.layout import DAEMON_NAME, Layout
from supervisor.observe.cgroups import ServiceGroups
from supervisor.registry import BUILTIN, PluginError, Registry
from supervisor.uwsgi.emperor import EmperorError, clear_runtime_dir, prepare_runtime_dir

if TYPE_CHECKING:
    from supervisor.control.server import ControlServer
    from supervisor.logs.pipeline import FileSink
    from supervisor.manifest.models import Manifest
    from supervisor.state.reconcile import Applied
    from supervisor.state.supervisor import Supervisor
    from supervisor.surfaces.metrics import MetricsServer

log = logging.getLogger("wsgi-supervisor")

# set (to anything): only the built-in servers, no plug-in (as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD)
NO_PLUGINS = "WSGI_SUPERVISOR_DISABLE_PLUGIN_AUTOLOAD"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return config.parser().parse_args(argv)  # every setting, as config.py declares it


class AlreadyRunning(RuntimeError):
    pass


def lock_runtime_dir(layout: Layout) -> int:
    """Hold an exclusive lock for as long as this daemon runs on the runtime dir."""
    fd = os.open(layout.daemon_pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another wsgi-supervisor (pid {other}) already runs on {layout.runtime_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def summary(sup: Supervisor) -> str:
    """What `make run` prints once the services are up: what serves where, and how to look."""
    rows = []
    tries = []
    for info in sup.status():
        where = info["socket"] or "-"
        rows.append(f"  {info['name']:<16} {info['kind']:<7} {info['state']:<9} {where}")
        svc = sup.services[info["name"]]
        if info["socket"] and getattr(svc.spec, "protocol", "") == "http":
            tries.append(f"  curl --unix-socket {where} http://localhost{info['mount'] or ''}/")
    ctl = f"{Path(sys.argv[0]).parent / 'wsgictl'} --runtime-dir {sup.layout.runtime_dir}"
    return "\n".join(
        [
            f"wsgi-supervisor {__version__}: {len(sup.services)} services from {sup.config.conf_dir}",
            *rows,
            "try:",
            f"  {ctl} status",
            f"  {ctl} logs -f",
            f"  {ctl} top",
            *tries,
            "  (uwsgi-protocol sockets are for a front end: Apache mod_proxy_uwsgi or nginx uwsgi_pass)",
            "stop with Ctrl-C (SIGTERM): every service stops gracefully",
        ]
    )


def start_early(config: Config, registry: Registry) -> tuple[Layout, int, dict[str, Any], ServiceGroups]:
    """Take the runtime dir and get the emperor going (each server's `early` step), before the heavy imports.

    The emperor needs ~0.1 s to come up; the daemon spends about as long
    importing and validating the manifest. Doing both at once is most of
    what separates the daemon's start-up from a bare emperor's. The
    daemon moves into its control group's leaf first, so the emperor
    starts there too (observe/cgroups.py).
    """
    layout = Layout(config.runtime_dir)
    layout.daemon_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_runtime_dir(layout)
    try:
        prepare_runtime_dir(layout, config.default_venv)
        groups = ServiceGroups.open(config.runtime_dir)
        early = {name: server.early(config, layout) for name, server in registry.servers.items() if server.early}
    except BaseException:
        os.close(lock_fd)
        raise
    return layout, lock_fd, early, groups


async def serve(
    config: Config,
    lock_fd: int,
    early: dict[str, Any],
    groups: ServiceGroups | None = None,
    registry: Registry | None = None,
) -> int:
    """Load the manifest, start, serve until SIGTERM/SIGINT, then stop in a fixed, bounded order."""
    from supervisor.control.server import ControlServer
    from supervisor.observe.watcher import ExitWatcher
    from supervisor.state.supervisor import Supervisor
    from supervisor.wiring import assemble

    groups = groups or ServiceGroups.unavailable("not set up")
    registry = registry or Registry.builtin()
    if not os.environ.get(NO_PLUGINS):
        registry.discover()  # third-party servers (entry points): a manifest may name them
    manifest = _manifest_or_none(config, registry)
    if manifest is None:
        emperor = early.get("uwsgi")
        if emperor is not None:
            emperor.kill_if_ours()  # an adopted emperor and its vassals keep serving
        groups.close()
        os.close(lock_fd)
        return 1
    sup = Supervisor(config, manifest, assemble(registry, early), ExitWatcher(asyncio.get_running_loop()), groups)
    file_sink = setup_logging(sup)
    for name in registry.servers.keys() - BUILTIN.keys():
        log.info("server %r from %s", name, registry.origins[name])
    if not groups.available:
        log.warning("no control group per service (%s): a stop reaches the main process's tree only", groups.why_not)
    elif groups.undelegated:
        log.warning("%s", groups.undelegated)
    control = ControlServer(sup, lambda: reload_config(sup, registry))
    metrics = None
    if config.metrics_listen:
        from supervisor.surfaces.metrics import MetricsServer  # prometheus-client: imported only when it serves

        metrics = MetricsServer(sup, config.metrics_listen, config.metrics_max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: sup.spawn_task(reload_config(sup, registry), "sighup"))
    try:
        await _start(sup, control, metrics, stop)
        if not stop.is_set():
            if not config.quiet and config.log_format == "text":  # a JSON console holds JSON objects only
                print(summary(sup), flush=True)
            await stop.wait()
        sup.systemd.stopping()
        if config.stop_drain > 0:
            await leave_rotation(sup, config.stop_drain)
        log.info("stopping: %d services", sum(1 for s in sup.services.values() if s.state.active))
    except Exception:
        log.exception("start-up failed")
        return_code = 1
    else:
        return_code = 0
    finally:
        await _stop(sup, control, metrics, lock_fd)
    log.info("stopped")
    if file_sink is not None:
        file_sink.close()
    return return_code


async def leave_rotation(sup: Supervisor, seconds: float) -> None:
    """--stop-drain: every /health answers 503 for `seconds` while the services go on serving, so
    that the load balancer has the host out before they stop. A second SIGTERM ends the wait."""
    from supervisor.surfaces.rotation import in_rotation

    if not any(in_rotation(svc) is None for svc in sup.services.values()):
        return  # nothing is in rotation: nothing to take out
    sup.leaving = True
    log.info("stopping: out of rotation for %gs first (--stop-drain), still serving", seconds)
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hurry.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hurry.wait(), seconds)


def _manifest_or_none(config: Config, registry: Registry) -> Manifest | None:
    from supervisor.manifest.loading import load
    from supervisor.manifest.models import ManifestError

    try:
        return load(config.conf_dir, servers=registry.problem)
    except ManifestError as exc:
        print(f"wsgi-supervisor: the manifest in {config.conf_dir} is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


async def _start(sup: Supervisor, control: ControlServer, metrics: MetricsServer | None, stop: asyncio.Event) -> None:
    """Open the daemon's sockets, take over what runs, start what is enabled; READY=1 once each has had its try."""
    for check in sup.hooks("check_paths"):
        check()
    sup.intake.open()
    sup.intake.open_emperor_fifo()
    control.open()
    if metrics is not None:
        await metrics.start()
        sup.metrics_address = metrics.address
    await sup.attach()
    sup.spawn_task(sup.sampler.run(), "sampler")
    boot = sup.start_enabled()
    if boot:
        waiting = asyncio.ensure_future(asyncio.wait(boot))
        await asyncio.wait([waiting, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    sup.systemd.ready()


async def _stop(sup: Supervisor, control: ControlServer, metrics: MetricsServer | None, lock_fd: int) -> None:
    """Every service, then the daemon's own sockets; whatever part of the start-up succeeded."""
    await sup.shut_down()
    if metrics is not None:
        await metrics.close()
    await control.close()
    sup.intake.close()
    emperor = getattr(sup.drivers.get("uwsgi"), "emperor", None)
    if emperor is None or emperor.pid is None:  # stopped with every vassal: nothing uses their sockets any more
        clear_runtime_dir(sup.layout)
    sup.watcher.close()
    sup.groups.close()
    for task in list(sup.tasks):
        task.cancel()
    with contextlib.suppress(OSError):
        os.close(lock_fd)


async def reload_config(sup: Supervisor, registry: Registry) -> Applied | dict[str, Any]:
    """Read the manifest again and hand the difference to the supervisor; return once it has taken
    it (its changes under way: `Applied.outcome` ends when each has its result). A manifest that
    does not validate changes nothing: the refusal (a reply for `wsgictl`), every problem logged.
    It may name the servers loaded when the daemon started."""
    from supervisor.manifest.loading import load
    from supervisor.manifest.models import ManifestError

    try:
        manifest = load(sup.config.conf_dir, servers=registry.problem)
    except ManifestError as exc:
        sup.last_reload_ok = False
        log.error("manifest reload refused: %d problems, nothing changed", len(exc.problems))
        for problem in exc.problems:
            log.error("  %s", problem)
        return {
            "ok": False,
            "error": "the manifest is not valid; nothing changed",
            "problems": [str(p) for p in exc.problems],
        }
    applied = await sup.take_manifest(manifest)
    sup.last_reload_ok = True
    sup.last_reload_success = time.time()
    return applied


def journal_available() -> bool:
    return Path("/run/systemd/journal/socket").exists()


def setup_logging(sup: Supervisor) -> FileSink | None:
    """Sinks for every line: the terminal, journald, files; the daemon's logger joins the pipeline."""
    from supervisor.logs.pipeline import ConsoleSink, DaemonLogHandler, FileSink, JournalSink, format_line, json_lines
    from supervisor.logs.safe_files import LogAccess

    as_json = json_lines(sup.logs.kind_of) if sup.config.log_format == "json" else None
    if not sup.config.quiet:
        sup.logs.sinks.append(ConsoleSink(form=as_json))
    use_journal = sup.config.journal if sup.config.journal is not None else journal_available()
    if use_journal:
        sup.logs.sinks.append(JournalSink(sup.logs.kind_of, sup.drops))
    file_sink = None
    if sup.config.log_dir is not None:
        access = LogAccess(sup.config.log_dir_mode, sup.config.log_file_mode, sup.config.log_gid)
        file_sink = FileSink(
            sup.config.log_dir, sup.drops, sup.config.log_max_bytes, sup.config.log_keep, as_json or format_line, access
        )
        sup.logs.sinks.append(file_sink)
    root = logging.getLogger("wsgi-supervisor")
    root.handlers[:] = [DaemonLogHandler(sup.logs.emit)]
    root.propagate = False
    root.setLevel(logging.INFO)
    return file_sink


def main(argv: list[str] | None = None) -> None:
    settings = config.from_arguments(parse_args(argv))
    # until the log pipeline is up (a bad manifest, say), messages go to stderr
    logging.basicConfig(level=logging.INFO, format=f"{DAEMON_NAME}: %(message)s")
    registry = Registry.builtin()
    try:
        _layout, lock_fd, early, groups = start_early(settings, registry)
    except (AlreadyRunning, EmperorError, PluginError, OSError) as exc:
        print(f"wsgi-supervisor: {exc}", file=sys.stderr)
        sys.exit(1)
    import uvloop

    sys.exit(uvloop.run(serve(settings, lock_fd, early, groups, registry)))


if __name__ == "__main__":
    main()
