"""API services as uWSGI emperor vassals: the driver the lifecycle asks to act.

Start: hold the socket, write the vassal file, poke the emperor (the
launcher then calls in with the new master's pid, and joins the vassal's
control group). Stop: pause, then a graceful stop through the master FIFO,
the file removed so the emperor does not bring it back; what the master
leaves in its group is SIGKILLed (state/supervisor.py `_main_exited`).
Restart: the same with the file left in place, so the emperor spawns a
new vassal on the same socket. Reload: a second vassal
(`NAME.b.ini`) on the same socket; the old one retires once the new one
serves. Readiness: the vassal's stats, sampled while it starts (woken by
the log line that says a worker loaded the app). It reports what it sees
as events and never changes a service's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import supervisor.uwsgi.core as uwsgi
import supervisor.uwsgi.noise as noise
from supervisor import preload
from supervisor.files import write_atomic
from supervisor.layout import INSTANCES, free_instance
from supervisor.listeners import HeldSockets
from supervisor.logs.fifos import LogFifos
from supervisor.logs.pipes import Take
from supervisor.manifest.models import ApiService, runner
from supervisor.observe.cgroups import group_name
from supervisor.observe.health import answers
from supervisor.observe.procs import descendants, take_listener
from supervisor.observe.stats import ServerStats
from supervisor.state.drivers import Context, Failure
from supervisor.state.events import Ready
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.state.states import State
from supervisor.uwsgi.emperor import Emperor, install_service_launcher, read_unix
from supervisor.uwsgi.ending import VassalEnds
from supervisor.uwsgi.sampling import VassalSampling
from supervisor.uwsgi.supervision import EmperorWatch

if TYPE_CHECKING:
    from supervisor.observe.sampler import Sampler

log = logging.getLogger("wsgi-supervisor")

# vassal files keep one fixed mtime: the emperor reloads a vassal when the
# mtime grows, and the daemon wants to decide every reload itself
VASSAL_MTIME = 946684800  # 2000-01-01
# readiness probes while starting or reloading: woken by the log line that says a
# worker loaded the app; this is only the fallback, so 100 services starting at
# once do not keep the daemon busy reading stats
PROBE_INTERVAL = 1.0
# how long the last look before a SIGKILL for readiness waits for the stats, and for an answer
LAST_LOOK = 5.0
REREPORT = 5.0  # seconds after which a Ready report the vassal is still `starting` after is made again


class VassalDriver:
    def __init__(self, context: Context, sampler: Sampler, emperor: Emperor, sockets: HeldSockets, take: Take):
        self.ctx = context
        self.layout = context.layout
        self.config = context.config
        self.sampler = sampler
        self.emperor = emperor
        self.sockets = sockets
        self.logs = LogFifos(context.loop, self.layout.vassal_log, take)
        self.probes: dict[str, asyncio.Event] = {}
        self.suspended: dict[str, set[int]] = {}  # worker ids that said "suspended" since the last pause
        self.ends = VassalEnds(self)  # how a vassal ends (ending.py)
        self.emperor_watch = EmperorWatch(context, emperor, self.logs, self)  # the emperor's life (supervision.py)
        self.sampling = VassalSampling(context, sampler, self)
        sampler.sources.append(self.sampling.sample)

    # -- the daemon's start and stop (state/drivers.py Hooks): the emperor's --------------------

    def check_paths(self) -> None:
        self.emperor_watch.check_paths()

    async def attach(self, kept: dict[str, Any], reexec: bool) -> None:
        await self.emperor_watch.attach(kept, reexec)

    async def shut_down(self) -> None:
        await self.emperor_watch.shut_down()

    @staticmethod
    def group(name: str, instance: str) -> str:
        """The control group of a vassal: its master and every process it starts (observe/cgroups.py)."""
        return group_name(name, "uwsgi", instance)

    async def group_for_launch(self, name: str, instance: str) -> int | None:
        """The `cgroup.procs` of the group a vassal's launcher joins (it asked, and may run), opened
        for writing. A new master starts in an empty group: what an earlier master of the same
        instance left there (it died, the emperor brought it back) is killed first."""
        groups = self.ctx.groups
        group = self.group(name, instance)
        if groups.left_behind(group):
            hit = groups.kill(group)
            self.ctx.say(name, f"a new master starts: SIGKILL to the {hit} process(es) the last one left", 4)
        # briefly: the launcher waits 5 s for its answer, and what was killed is gone soon anyway
        await groups.emptied(group, 1.0)
        return groups.procs_fd(group)

    def enclose(self, name: str, instance: str, pid: int) -> None:
        """An adopted vassal that runs outside its group (an older daemon started it) is moved in."""
        groups = self.ctx.groups
        group = self.group(name, instance)
        if groups.available and pid not in groups.members(group):
            moved = groups.enclose(group, [pid, *descendants(pid)])
            log.info("%s: moved %d process(es) of its vassal (pid %d) into its control group", name, moved, pid)

    def take_over_socket(self, name: str, master_pid: int) -> bool:
        """Hold the socket a running vassal serves on (after the daemon restarted)."""
        path = self.layout.api_socket(name)
        try:
            fd = take_listener(master_pid, path)
        except OSError as exc:
            log.warning("%s: cannot take over its socket from pid %d: %s", name, master_pid, exc)
            return False
        if fd is None:
            return False
        self.sockets.take_over(name, self, fd)
        return True

    # -- actions ---------------------------------------------------------------

    def render(self, svc: ServiceRuntime, instance: str | None = None) -> str:
        assert isinstance(svc.spec, ApiService)
        chosen = svc.instance if instance is None else instance
        return uwsgi.render_vassal(svc.name, svc.spec, self.layout, self.config.default_venv, chosen)

    def install_launcher(self, svc: ServiceRuntime) -> None:
        assert isinstance(svc.spec, ApiService)
        default_venv = self.config.default_venv
        python, _ = uwsgi.interpreter(svc.spec, default_venv)
        install_service_launcher(self.layout, svc.name, python, default_venv / "bin" / "python3")

    def prepare(self, svc: ServiceRuntime) -> None:
        self.sockets.hold(svc.name, self)
        self.install_launcher(svc)
        self.logs.follow(svc.name, svc.instance)
        write_atomic(self.layout.vassal_file(svc.name, svc.instance), self.render(svc), mtime=VASSAL_MTIME)

    def reload(self, svc: ServiceRuntime) -> ReloadAttempt:
        """A second vassal for a reload: the same socket, files of its own."""
        instance = free_instance(svc.instance, self.ends.retiring.get(svc.name, set()))
        if instance is None:
            raise OSError("the old vassals of the last reloads are still stopping: try again once they are gone")
        attempt = ReloadAttempt(instance, replaces=svc.instance)
        self.sockets.hold(svc.name, self)
        self.install_launcher(svc)
        self.logs.follow(svc.name, attempt.instance)
        path = self.layout.vassal_file(svc.name, attempt.instance)
        write_atomic(path, self.render(svc, attempt.instance), mtime=VASSAL_MTIME)
        self.emperor_watch.want_spawn(lambda: attempt.pid is not None or svc.reload is not attempt)
        return attempt

    def reports_reload(self, svc: ServiceRuntime) -> bool:
        return True

    def switch(self, svc: ServiceRuntime, attempt: ReloadAttempt, old_pid: int | None) -> None:
        if old_pid is not None:
            self.ends.retire(svc, attempt.replaces, old_pid)

    def abandon(self, svc: ServiceRuntime, attempt: ReloadAttempt) -> None:
        self.remove_file(svc.name, attempt.instance)
        if attempt.pid is not None:
            self.ctx.groups.kill_all(self.group(svc.name, attempt.instance), attempt.pid)
            self.sampler.master_gone(svc.name, attempt.pid)
        self.forget(svc.name, attempt.instance)

    def forget(self, name: str, instance: str) -> None:
        """Remove what a vassal that is gone leaves behind: uWSGI unlinks neither its stats socket nor its FIFO.
        Its log FIFO goes once its file has gone too (the emperor could start it again until then)."""
        self.ends.final_stats.pop((name, instance), None)
        self.ctx.tokens.drop("uwsgi", name, instance)
        if not self.layout.vassal_file(name, instance).exists():
            self.logs.unfollow(name, instance)
        for path in (self.layout.stats_socket(name, instance), self.layout.master_fifo(name, instance)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):  # not empty: what the service's user left there, for the next start
            self.layout.master_dir(name, instance).rmdir()

    def remove_file(self, name: str, instance: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.layout.vassal_file(name, instance).unlink()

    def awaiting(self, svc: ServiceRuntime) -> str:
        """What a start waits for once launched, as status shows it."""
        return "waiting for every worker to load the app and accept"

    def watch_ready(self, svc: ServiceRuntime) -> None:
        if svc.name in self.probes:
            self.probes[svc.name].set()
            return
        self.probes[svc.name] = asyncio.Event()
        self.ctx.spawn(self._probe(svc), f"probe-{svc.name}")

    async def _probe(self, svc: ServiceRuntime) -> None:
        """Sample a vassal's stats while it starts or reloads; report Ready once it serves.

        Woken early by the log line that says a worker loaded the app, then
        sampled in a short burst, since the worker accepts a moment later.
        """
        wake = self.probes[svc.name]
        reported: dict[int, float] = {}  # master pid: when its Ready was last reported
        try:
            while svc.state in (State.STARTING, State.RELOADING) and not self.emperor.stopping:
                woke = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_INTERVAL):
                        await wake.wait()
                        woke = True
                wake.clear()
                for pause in (0.0, 0.01, 0.03, 0.06) if woke else (0.0,):
                    await asyncio.sleep(pause)
                    attempt = svc.reload
                    pid, instance = (attempt.pid, attempt.instance) if attempt else (svc.pid, svc.instance)
                    # a report still unanswered after a while is made again: one the lifecycle did
                    # not act on must not leave a serving vassal `starting` until start_timeout
                    if pid is None or svc.waiting_for or time.monotonic() - reported.get(pid, -REREPORT) < REREPORT:
                        break
                    stats = await self.stats(svc.name, instance)
                    if stats is None or stats.pid != pid:
                        continue
                    if attempt is None:
                        self.sampler.observe(svc.name, stats)
                    if stats.serving:
                        reported[pid] = time.monotonic()
                        self.ctx.report(Ready(svc.name, pid))
                        break
        finally:
            self.probes.pop(svc.name, None)

    def on_line(self, svc: ServiceRuntime, text: str) -> Failure | None:
        if (said := preload.verdict(text)) is not None:
            svc.preload = said
            return None
        if (worker := uwsgi.suspended_worker(text)) is not None:
            self.suspended.setdefault(svc.name, set()).add(worker)
            return None
        if uwsgi.app_loaded(text):
            wake = self.probes.get(svc.name)
            if wake is not None:
                wake.set()
            return None
        hint = uwsgi.failure_hint(text)
        if hint is None:
            return None
        return Failure(hint, retry_helps=not uwsgi.is_config_error(text))

    def noise(self, text: str) -> bool:
        return noise.is_noise(text)

    daemon_noise = noise  # the emperor's lines are in the daemon's log

    def exited(self, svc: ServiceRuntime, pid: int, status: int | None) -> str | None:
        self.sampler.master_gone(svc.name, pid)
        if not self.emperor.alive():
            return "the emperor died"  # it is started again, and the service with it
        return None

    def describe_exit(self, svc: ServiceRuntime) -> str:
        return "exited unexpectedly" + (f" ({svc.last_exit})" if svc.last_exit else "")

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        return str(self.layout.api_socket(svc.name))

    def _mine(self) -> list[ServiceRuntime]:
        return [s for s in self.ctx.services() if runner(s.spec) == "uwsgi"]

    def launch(self, svc: ServiceRuntime) -> None:
        self.emperor_watch.want_spawn(lambda: svc.pid is not None or not svc.state.active)

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        """Ask the vassal to stop gracefully; False when there is nothing to ask.

        Workers are paused first and stopped once none of them accepts any
        more: uWSGI's graceful stop kills an idle worker at once, and one that
        has just accepted a connection but not yet read it counts as idle, so
        that connection would be reset. Paused workers accept nothing; what
        arrives meanwhile waits in the socket's queue for the next vassal.
        """
        if svc.pid is None:
            return False
        if os.path.exists(self.layout.master_fifo(svc.name, svc.instance)):
            self.ctx.spawn(self.ends.stop_when_paused(svc, svc.instance, svc.pid), f"stop-{svc.name}")
            return True
        # no master FIFO yet (still starting): SIGTERM is a graceful stop too
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.ctx.spawn(self.ends.kill_counting(svc, svc.instance, svc.pid, why), f"kill-{svc.name}")

    def kill_unready(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.ctx.spawn(self._last_look(svc, svc.instance, svc.pid, why), f"last-look-{svc.name}")

    async def _last_look(self, svc: ServiceRuntime, instance: str, pid: int, why: str) -> None:
        """Before a SIGKILL for readiness: does the vassal serve after all? Its stats (given longer
        than a probe's), and, when they do not say so, a real request on its socket. On a busy host
        a probe can come too late for start_timeout while both workers serve: killing them then
        would fail requests for nothing."""
        assert isinstance(svc.spec, ApiService)
        stats = await self.stats(svc.name, instance, timeout=LAST_LOOK)
        serving = stats is not None and stats.pid == pid and stats.serving
        if not serving:
            socket = self.layout.api_socket(svc.name)
            tokens = " ".join(self.ctx.tokens.of(svc.name))  # its probe leaves no request line
            serving = await answers(socket, svc.spec, tokens, timeout=LAST_LOOK)
        if svc.pid != pid or svc.state != State.STARTING:
            return  # it went meanwhile, or was reported ready
        if serving:
            self.ctx.say(svc.name, f"{why}, but it serves (its readiness was seen late): kept, not killed", 4)
            self.ctx.report(Ready(svc.name, pid))
            return
        await self.ends.kill_counting(svc, instance, pid, why)

    def disable(self, svc: ServiceRuntime) -> None:
        """Remove the vassal files, so the emperor does not bring a vassal back."""
        for instance in INSTANCES:
            self.remove_file(svc.name, instance)

    def release(self, svc: ServiceRuntime) -> None:
        """The service is down (stopped, failed, waiting to retry): its socket goes, and its vassal's files."""
        self.sockets.release(svc.name, self)
        self.forget(svc.name, svc.instance)
        self.suspended.pop(svc.name, None)

    async def stats(self, name: str, instance: str = "", timeout: float = 1.0) -> ServerStats | None:
        raw = await read_unix(self.layout.stats_socket(name, instance), timeout)
        if raw is None:
            return None
        try:
            return uwsgi.parse_stats(raw)
        except ValueError:
            return None

    def close(self) -> None:
        """The log FIFOs are read one last time; the sockets are the supervisor's to close."""
        self.logs.close()
