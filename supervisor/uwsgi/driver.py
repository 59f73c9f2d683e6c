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
import errno
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import supervisor.uwsgi.core as uwsgi
import supervisor.uwsgi.noise as noise
from supervisor import preload
from supervisor.files import write_atomic
from supervisor.layout import INSTANCES, free_instance
from supervisor.listeners import HeldSockets
from supervisor.logs.fifos import LogFifos
from supervisor.logs.pipes import Take
from supervisor.manifest.models import ApiService, runner
from supervisor.observe.app_threads import app_threads, what_a_kill_ends
from supervisor.observe.app_threads import describe as describe_threads
from supervisor.observe.cgroups import group_name
from supervisor.observe.health import answers
from supervisor.observe.procs import descendants, take_listener
from supervisor.observe.stats import ServerStats
from supervisor.state.drivers import Context, Failure
from supervisor.state.events import Ready
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.state.states import State
from supervisor.uwsgi.emperor import Emperor, install_service_launcher, read_unix
from supervisor.uwsgi.pause import own_threads, wait_paused
from supervisor.uwsgi.supervision import EmperorSupervision

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


class VassalDriver(EmperorSupervision):
    def __init__(self, context: Context, sampler: Sampler, emperor: Emperor, sockets: HeldSockets, take: Take):
        self.ctx = context
        self.layout = context.layout
        self.config = context.config
        self.sampler = sampler
        self.emperor = emperor
        self.sockets = sockets
        self.logs = LogFifos(context.loop, self.layout.vassal_log, take)
        self.pending: list[Callable[[], bool]] = []
        self.poker: asyncio.Task[None] | None = None
        self.final_stats: dict[tuple[str, str], ServerStats] = {}  # (name, instance) of stopping vassals
        self.probes: dict[str, asyncio.Event] = {}
        self.retiring: dict[str, set[str]] = {}  # instances of each service still stopping after a reload
        self.retirements: set[asyncio.Task[None]] = set()  # their stops, each bounded by its stop_timeout
        self.suspended: dict[str, set[int]] = {}  # worker ids that said "suspended" since the last pause
        self.recycled: set[int] = set()  # worker pids asked to go for their memory, not yet gone
        sampler.sources.append(self.sample)

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
        instance = free_instance(svc.instance, self.retiring.get(svc.name, set()))
        if instance is None:
            raise OSError("the old vassals of the last reloads are still stopping: try again once they are gone")
        attempt = ReloadAttempt(instance, replaces=svc.instance)
        self.sockets.hold(svc.name, self)
        self.install_launcher(svc)
        self.logs.follow(svc.name, attempt.instance)
        path = self.layout.vassal_file(svc.name, attempt.instance)
        write_atomic(path, self.render(svc, attempt.instance), mtime=VASSAL_MTIME)
        self._want_spawn(lambda: attempt.pid is not None or svc.reload is not attempt)
        return attempt

    def reports_reload(self, svc: ServiceRuntime) -> bool:
        return True

    def switch(self, svc: ServiceRuntime, attempt: ReloadAttempt, old_pid: int | None) -> None:
        if old_pid is not None:
            self.retire(svc, attempt.replaces, old_pid)

    def abandon(self, svc: ServiceRuntime, attempt: ReloadAttempt) -> None:
        self.remove_file(svc.name, attempt.instance)
        if attempt.pid is not None:
            self.ctx.groups.kill_all(self.group(svc.name, attempt.instance), attempt.pid)
            self.sampler.master_gone(svc.name, attempt.pid)
        self.forget(svc.name, attempt.instance)

    def retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """Stop a vassal that no longer serves (the old one after a reload), gracefully."""
        self.retiring.setdefault(svc.name, set()).add(instance)
        task = self.ctx.spawn(self._retire(svc, instance, pid), f"retire-{svc.name}")
        task.add_done_callback(lambda _: self.retiring.get(svc.name, set()).discard(instance))
        self.retirements.add(task)
        task.add_done_callback(self.retirements.discard)

    async def _retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        working: dict[int, int] = {}
        idle = await self._paused(svc, instance, pid, working)
        await self._count_final(svc, instance, pid)
        self._end(svc, instance, pid, idle, working)
        # removed once it is stopping: the emperor's own stop would not be graceful
        self.remove_file(svc.name, instance)
        gone = asyncio.get_running_loop().create_future()
        self.ctx.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(None))
        try:
            await asyncio.wait_for(gone, svc.spec.stop_timeout)
        except TimeoutError:
            await self._kill_counting(
                svc,
                instance,
                pid,
                f"the old vassal (pid {pid}) is still up {svc.spec.stop_timeout:g}s after the reload",
            )
        finally:
            self.ctx.watcher.unwatch(pid)
        group = self.group(svc.name, instance)
        if self.ctx.groups.left_behind(group):
            hit = self.ctx.groups.kill(group)
            self.ctx.say(svc.name, f"the old vassal (pid {pid}) left {hit} process(es) in its group: SIGKILL", 4)
        await self.ctx.groups.emptied(group, 5.0)
        self.sampler.master_gone(svc.name, pid)
        if instance != svc.instance and (svc.reload is None or svc.reload.instance != instance):  # not in use again
            self.forget(svc.name, instance)

    async def _count_final(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """The vassal's last counts, once its workers are paused: what it served after the
        last sample is counted too (uWSGI's counters go with the master). Kept, since a
        stopping master answers no stats: a SIGKILL later counts what was in flight here."""
        stats = await self.stats(svc.name, instance, timeout=0.5)
        if stats is not None and stats.pid == pid:
            self.sampler.fold(svc.name, stats)
            self.final_stats[svc.name, instance] = stats

    async def _kill_counting(self, svc: ServiceRuntime, instance: str, pid: int, why: str) -> None:
        """SIGKILL a vassal that did not stop in time, saying how many requests that ends."""
        stats = await self.stats(svc.name, instance, timeout=0.3)
        if stats is not None and stats.pid == pid:
            self.sampler.fold(svc.name, stats)
        else:
            stats = self.final_stats.get((svc.name, instance)) or self.sampler.sample_of(svc.name).stats
        ours = stats if stats is not None and stats.pid == pid else None
        in_flight = ours.in_flight if ours is not None else 0
        assert isinstance(svc.spec, ApiService)
        working = app_threads([w.pid for w in ours.workers if w.pid > 0] if ours else [], own_threads(svc.spec))
        if in_flight:
            self.sampler.count_killed(svc.name, in_flight)
        if what := what_a_kill_ends(in_flight, working):
            self.ctx.say(svc.name, f"{why}: SIGKILL; {what}", 3)
        else:
            self.ctx.say(svc.name, f"{why}: SIGKILL", 4)
        self.ctx.groups.kill_all(self.group(svc.name, instance), pid)

    def forget(self, name: str, instance: str) -> None:
        """Remove what a vassal that is gone leaves behind: uWSGI unlinks neither its stats socket nor its FIFO.
        Its log FIFO goes once its file has gone too (the emperor could start it again until then)."""
        self.final_stats.pop((name, instance), None)
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

    def exited(self, svc: ServiceRuntime, pid: int, status: int | None) -> str | None:
        self.sampler.master_gone(svc.name, pid)
        if not self.emperor.alive():
            return "the emperor died"  # it is started again, and the service with it
        return None

    def describe_exit(self, svc: ServiceRuntime) -> str:
        return "exited unexpectedly" + (f" ({svc.last_exit})" if svc.last_exit else "")

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        return str(self.layout.api_socket(svc.name))

    async def sample(self) -> None:
        """The serving vassals' counters, for the snapshot."""
        serving = [s for s in self._mine() if s.pid is not None and s.state != State.STOPPED]
        await asyncio.gather(*(self._sample_one(svc) for svc in serving))
        self.recycle_fat_workers(serving)

    def recycle_fat_workers(self, serving: list[ServiceRuntime]) -> None:
        """`max_rss_mb`, judged by each worker's own memory (USS) in the last sample, not by RSS as
        uWSGI's reload-on-rss would: a worker past it gets SIGHUP, which a uWSGI worker takes as
        "finish your request, then exit" (its master forks a new one; worker-reload-mercy bounds it)."""
        workers: set[int] = set()
        for svc in serving:
            sample = self.sampler.samples.get(svc.name)
            limit = getattr(svc.spec, "max_rss_mb", None)
            if not limit or sample is None or sample.footprint is None or sample.stats is None:
                continue
            if sample.stats.pid != svc.pid:
                continue
            for worker in sample.stats.workers:
                memory = sample.footprint.processes.get(worker.pid)
                workers.add(worker.pid)
                if worker.pid <= 0 or memory is None or memory.uss <= limit << 20 or worker.pid in self.recycled:
                    continue
                if worker.pid not in descendants(svc.pid):
                    continue  # the pid is no longer this master's worker
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)
                    self.recycled.add(worker.pid)
                    self.ctx.say(
                        svc.name,
                        f"worker {worker.pid}: its own memory (USS) {memory.uss >> 20} MB is past max_rss_mb"
                        f" ({limit}): it is replaced after its request",
                        5,
                    )
        self.recycled &= workers  # those gone are forgotten

    async def _sample_one(self, svc: ServiceRuntime) -> None:
        """Each vassal's stats into the snapshot as they come: one that does not answer delays no other."""
        pid = svc.pid
        stats = await self.stats(svc.name, svc.instance)
        if stats is not None and stats.pid == pid == svc.pid:
            self.sampler.observe(svc.name, stats)

    def _mine(self) -> list[ServiceRuntime]:
        return [s for s in self.ctx.services() if runner(s.spec) == "uwsgi"]

    def launch(self, svc: ServiceRuntime) -> None:
        self._want_spawn(lambda: svc.pid is not None or not svc.state.active)

    def _want_spawn(self, done: Callable[[], bool]) -> None:
        """Have the emperor rescan until every vassal asked for has been spawned.

        One poke (a connection to the emperor's stats socket) makes it scan the
        whole vassal dir, so all the vassals written meanwhile share one poker:
        a poke per vassal would cost the emperor a stats dump of every vassal
        each time, which grows with the square of their number.
        """
        self.pending.append(done)
        if self.poker is None or self.poker.done():
            self.poker = self.ctx.spawn(self._poke(), "poke-emperor")

    async def _poke(self) -> None:
        delay = 0.005
        for _ in range(400):
            await asyncio.sleep(0)  # let the files of this round be written first
            self.pending = [done for done in self.pending if not done()]
            if not self.pending:
                return
            await self.emperor.poke()
            await asyncio.sleep(delay)
            # a rescan right after a vassal died can come before the emperor has
            # buried it, so it takes more than one poke at times
            delay = min(delay * 2, 0.5)
        self.pending.clear()

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
            self.ctx.spawn(self._stop_when_paused(svc, svc.instance, svc.pid), f"stop-{svc.name}")
            return True
        # no master FIFO yet (still starting): SIGTERM is a graceful stop too
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    async def _paused(self, svc: ServiceRuntime, instance: str, pid: int, working: dict[int, int]) -> bool:
        """Pause the vassal's workers; True once every one is idle in the pause loop and runs no
        thread of the app: nothing is in flight, the vassal may go at once (a graceful stop would
        wait for uWSGI's once-a-second master cycle to reap the workers). False: it goes with a
        graceful stop (`working` then names the workers that still run threads of the app).

        A threaded vassal is not paused: uWSGI pauses a worker's main thread only, its other
        threads go on accepting, and a graceful stop then never ends the paused worker (measured:
        the master was still there after 15 s; tests/test_reliability.py has the case)."""
        if svc.spec.threads > 1:
            return False
        logged = self.suspended[svc.name] = set()
        if not self._fifo(svc.name, uwsgi.PAUSE, instance):
            return False
        bound = min(5.0, svc.spec.stop_timeout / 2)
        assert isinstance(svc.spec, ApiService)
        own = own_threads(svc.spec)

        async def read() -> ServerStats | None:
            return await self.stats(svc.name, instance, timeout=0.5)

        return await wait_paused(read, pid, bound, logged, own_threads=own, working=working)

    async def _stop_when_paused(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        working: dict[int, int] = {}
        idle = await self._paused(svc, instance, pid, working)
        await self._count_final(svc, instance, pid)
        if svc.pid == pid:
            self._end(svc, instance, pid, idle, working)

    def _end(self, svc: ServiceRuntime, instance: str, pid: int, idle: bool, working: dict[int, int]) -> None:
        """The vassal goes: at once when every worker is idle in the pause loop and runs no thread
        of the app (nothing is in flight, and uWSGI's own stop, graceful or not, reaps its workers
        only at its next once-a-second master cycle), else gracefully: its requests finish, and so
        does the work its app threads do after an answer (glance's imports), up to stop_timeout."""
        if idle:
            self.ctx.say(svc.name, f"every worker of pid {pid} is idle in the pause loop: it goes at once", 7)
            self.ctx.groups.kill_all(self.group(svc.name, instance), pid)
            return
        if working:
            why = f"pid {pid} still runs {describe_threads(working)}: a graceful stop lets that work finish"
            self.ctx.say(svc.name, f"{why}, for up to {svc.spec.stop_timeout:g}s", 6)
        if not self._fifo(svc.name, uwsgi.GRACEFUL_STOP, instance):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.ctx.spawn(self._kill_counting(svc, svc.instance, svc.pid, why), f"kill-{svc.name}")

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
        await self._kill_counting(svc, instance, pid, why)

    def disable(self, svc: ServiceRuntime) -> None:
        """Remove the vassal files, so the emperor does not bring a vassal back."""
        for instance in INSTANCES:
            self.remove_file(svc.name, instance)

    def release(self, svc: ServiceRuntime) -> None:
        """The service is down (stopped, failed, waiting to retry): its socket goes, and its vassal's files."""
        self.sockets.release(svc.name, self)
        self.forget(svc.name, svc.instance)
        self.suspended.pop(svc.name, None)

    def _fifo(self, name: str, command: bytes, instance: str = "") -> bool:
        try:
            # in a dir of the service's user: never a link it made to a file of root's
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.layout.master_fifo(name, instance), flags)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                log.warning("%s: master FIFO: %s", name, exc)
            return False
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                log.warning("%s: master FIFO: not a FIFO", name)
                return False
            os.write(fd, command)
        except OSError as exc:
            log.warning("%s: master FIFO write: %s", name, exc)
            return False
        finally:
            os.close(fd)
        return True

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
