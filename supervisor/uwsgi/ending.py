"""How a vassal ends: paused first, its last counts kept, then at once or gracefully; the old one
of a reload retired within its stop_timeout; SIGKILL saying what it ends. The vassal driver's
collaborator (driver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
from typing import TYPE_CHECKING, Protocol

import supervisor.uwsgi.core as uwsgi
from supervisor.manifest.models import ApiService
from supervisor.observe.app_threads import before_a_kill
from supervisor.observe.app_threads import describe as describe_threads
from supervisor.uwsgi.pause import own_threads, wait_paused

if TYPE_CHECKING:
    from supervisor.layout import Layout
    from supervisor.observe.sampler import Sampler
    from supervisor.observe.stats import ServerStats
    from supervisor.state.drivers import Context
    from supervisor.state.service import ServiceRuntime

log = logging.getLogger("wsgi-supervisor")


class Vassals(Protocol):
    """What the endings need of the vassal driver."""

    ctx: Context
    layout: Layout
    sampler: Sampler
    suspended: dict[str, set[int]]

    @staticmethod
    def group(name: str, instance: str) -> str: ...
    async def stats(self, name: str, instance: str = "", timeout: float = 1.0) -> ServerStats | None: ...
    def forget(self, name: str, instance: str) -> None: ...
    def remove_file(self, name: str, instance: str) -> None: ...


class VassalEnds:
    def __init__(self, vassals: Vassals):
        self.vassals = vassals
        self.ctx = vassals.ctx
        self.layout = vassals.layout
        self.sampler = vassals.sampler
        self.final_stats: dict[tuple[str, str], ServerStats] = {}  # (name, instance) of stopping vassals
        self.retiring: dict[str, set[str]] = {}  # instances of each service still stopping after a reload
        self.retirements: set[asyncio.Task[None]] = set()  # their stops, each bounded by its stop_timeout

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
        self.vassals.remove_file(svc.name, instance)
        gone = asyncio.get_running_loop().create_future()
        self.ctx.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(None))
        try:
            await asyncio.wait_for(gone, svc.spec.stop_timeout)
        except TimeoutError:
            await self.kill_counting(
                svc,
                instance,
                pid,
                f"the old vassal (pid {pid}) is still up {svc.spec.stop_timeout:g}s after the reload",
            )
        finally:
            self.ctx.watcher.unwatch(pid)
        group = self.vassals.group(svc.name, instance)
        if self.ctx.groups.left_behind(group):
            hit = self.ctx.groups.kill(group)
            self.ctx.say(svc.name, f"the old vassal (pid {pid}) left {hit} process(es) in its group: SIGKILL", 4)
        await self.ctx.groups.emptied(group, 5.0)
        self.sampler.master_gone(svc.name, pid)
        if instance != svc.instance and (svc.reload is None or svc.reload.instance != instance):  # not in use again
            self.vassals.forget(svc.name, instance)

    async def _count_final(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """The vassal's last counts, once its workers are paused: what it served after the
        last sample is counted too (uWSGI's counters go with the master). Kept, since a
        stopping master answers no stats: a SIGKILL later counts what was in flight here."""
        stats = await self.vassals.stats(svc.name, instance, timeout=0.5)
        if stats is not None and stats.pid == pid:
            self.sampler.fold(svc.name, stats)
            self.final_stats[svc.name, instance] = stats

    async def kill_counting(self, svc: ServiceRuntime, instance: str, pid: int, why: str) -> None:
        """SIGKILL a vassal that did not stop in time, saying how many requests that ends."""
        stats = await self.vassals.stats(svc.name, instance, timeout=0.3)
        if stats is not None and stats.pid == pid:
            self.sampler.fold(svc.name, stats)
        else:
            stats = self.final_stats.get((svc.name, instance)) or self.sampler.sample_of(svc.name).stats
        assert isinstance(svc.spec, ApiService)
        in_flight, line, priority = before_a_kill(stats, pid, own_threads(svc.spec), why)
        if in_flight:
            self.sampler.count_killed(svc.name, in_flight)
        self.ctx.say(svc.name, line, priority)
        self.ctx.groups.kill_all(self.vassals.group(svc.name, instance), pid)

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
        logged = self.vassals.suspended[svc.name] = set()
        if not self._fifo(svc.name, uwsgi.PAUSE, instance):
            return False
        bound = min(5.0, svc.spec.stop_timeout / 2)
        assert isinstance(svc.spec, ApiService)
        own = own_threads(svc.spec)

        async def read() -> ServerStats | None:
            return await self.vassals.stats(svc.name, instance, timeout=0.5)

        return await wait_paused(read, pid, bound, logged, own_threads=own, working=working)

    async def stop_when_paused(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
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
            self.ctx.groups.kill_all(self.vassals.group(svc.name, instance), pid)
            return
        if working:
            why = f"pid {pid} still runs {describe_threads(working)}: a graceful stop lets that work finish"
            self.ctx.say(svc.name, f"{why}, for up to {svc.spec.stop_timeout:g}s", 6)
        if not self._fifo(svc.name, uwsgi.GRACEFUL_STOP, instance):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

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
