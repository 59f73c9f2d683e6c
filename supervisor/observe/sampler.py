"""What the services do, sampled in the background into a snapshot.

Every `sample_interval` seconds (sooner when a service just came up) the
drivers' sources run on the event loop (an API's uWSGI stats, read with a
timeout) while the RSS and CPU of every service's process tree are read
from the process table (psutil), and the PSS, USS and TCP connections of
its processes from /proc (observe/footprint.py), in threads of the loop's
default executor.
The metrics endpoint and `wsgictl status` read the snapshot. A scrape (and
`wsgictl top`) wants it no older than `FRESH`: when the last sample is
older, it starts one (or joins the one in flight: never two at once) and
waits for it at most `FRESH_WAIT`, so that a vassal that does not answer
its stats never holds up a scrape; the snapshot then is the last one, and
each service's `Sample.age()` says how old its part is. The socket queues
are asked of the kernel afresh at every scrape (`instant`). uWSGI's
per-worker counters start again from zero whenever a worker or the master
is replaced, so the daemon keeps totals that only grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from supervisor.observe.footprint import Footprint, footprints
from supervisor.observe.sockdiag import listen_queues
from supervisor.observe.stats import ServerStats, WorkerStats
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.listeners import HeldSockets
    from supervisor.state.drivers import Context

log = logging.getLogger("wsgi-supervisor")

COUNTERS = ("requests", "exceptions", "harakiri", "tx")
FRESH = 1.0  # seconds: a scrape takes a new sample when the last one is older than this
FRESH_WAIT = 0.5  # seconds a scrape waits for that sample before it answers with the last one


class Totals:
    """Monotonic totals over uWSGI's per-worker counters.

    uWSGI keeps a counter per worker slot of a master: it may carry on
    across a respawn of the worker, and it starts again from zero with a
    new master (a restart, a crash, a reload's second vassal). Counters are
    followed per (master, slot), for every master still around (during a
    reload two serve at once); whatever a slot had counted when it went back
    down, or when its master was retired, is kept in `base`. The whole of
    it goes into the state file, so a re-exec or a restart of the daemon
    carries on from the same figures.
    """

    def __init__(self) -> None:
        self.base: Counter[str] = Counter()
        self.masters: dict[int, dict[int, dict[str, int]]] = {}  # master pid -> slot id -> counters
        self.pids: dict[int, dict[int, int]] = {}  # master pid -> slot id -> worker pid
        self.respawns = 0
        self.killed = 0  # requests still in flight when a stop or a retirement had to SIGKILL

    def update(self, master: int, workers: tuple[WorkerStats, ...]) -> None:
        last = self.masters.setdefault(master, {})
        pids = self.pids.setdefault(master, {})
        for w in workers:
            now = {"requests": w.requests, "exceptions": w.exceptions, "harakiri": w.harakiri_count, "tx": w.tx}
            before = last.get(w.id)
            if before is not None:
                for key, value in before.items():
                    if now[key] < value:
                        self.base[key] += value  # the slot started again from zero
            last[w.id] = now
            if w.pid > 0:
                old = pids.get(w.id)
                if old is not None and old != w.pid:
                    self.respawns += 1
                pids[w.id] = w.pid

    def retire(self, master: int) -> None:
        """The master is gone: what it counted stays in the totals."""
        for values in self.masters.pop(master, {}).values():
            self.base.update(values)
        self.pids.pop(master, None)

    def value(self, key: str) -> int:
        return self.base[key] + sum(v[key] for slots in self.masters.values() for v in slots.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "masters": {str(m): {str(i): v for i, v in slots.items()} for m, slots in self.masters.items()},
            "respawns": self.respawns,
            "killed": self.killed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Totals:
        """Totals as a state file kept them; anything malformed counts as nothing."""
        totals = cls()
        try:
            totals.base.update({k: int(v) for k, v in data.get("base", {}).items() if k in COUNTERS})
            for master, slots in data.get("masters", {}).items():
                totals.masters[int(master)] = {
                    int(i): {k: int(v.get(k, 0)) for k in COUNTERS} for i, v in slots.items()
                }
            totals.respawns = int(data.get("respawns", 0))
            totals.killed = int(data.get("killed", 0))
        except (AttributeError, TypeError, ValueError):
            return cls()
        return totals


@dataclass
class Sample:
    """One service's numbers, as last sampled."""

    stats: ServerStats | None = None  # the serving vassal's, as last read
    workers: Counter[str] = field(default_factory=Counter)
    avg_response_s: float | None = None
    rss_bytes: int = 0
    footprint: Footprint | None = None  # PSS, USS and TCP connections of the service's processes
    cpu_seconds: float = 0.0
    listen_queue: int | None = None
    listen_queue_max: int | None = None
    stats_at: float | None = None  # monotonic: when the server's stats were last read
    usage_at: float | None = None  # monotonic: when the process tree was last read

    def age(self, now: float) -> float | None:
        """Seconds since the older of the two reads (None before the first)."""
        stamps = [t for t in (self.stats_at, self.usage_at) if t is not None]
        return now - min(stamps) if stamps else None


@dataclass
class Usage:
    """CPU seconds of a process tree, carried across restarts of its main process."""

    base: float = 0.0
    main_pid: int | None = None
    last: float = 0.0

    def update(self, main_pid: int, seconds: float) -> float:
        if main_pid != self.main_pid:
            self.base += self.last
            self.main_pid = main_pid
            self.last = 0.0
        self.last = max(self.last, seconds)
        return self.base + self.last


def tree_usage(pids: list[int]) -> dict[int, tuple[int, float]]:
    """Resident bytes and CPU seconds (own, and of reaped children) of each pid's process tree.

    One pass over the process table for all of them: it reads every process's
    stat, so with hundreds of processes it takes a while (the sampler runs it
    in a thread). A pid that is gone gets (0, 0.0). With no pid to look for, the table is not read
    (the first sample, taken as the daemon starts, has no service running yet).
    """
    if not pids:
        return {}
    children: dict[int, list[psutil.Process]] = {}
    procs: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            ppid = proc.ppid()  # cheaper than process_iter(["ppid"]), which builds a dict per process
        except psutil.Error:
            continue
        procs[proc.pid] = proc
        children.setdefault(ppid, []).append(proc)
    usage = {}
    for pid in pids:
        rss, cpu = 0, 0.0
        todo, seen = ([procs[pid]] if pid in procs else []), set()
        while todo:
            proc = todo.pop()
            if proc.pid in seen:  # a pid reused during the pass can make a loop of parents
                continue
            seen.add(proc.pid)
            todo.extend(children.get(proc.pid, ()))
            try:
                with proc.oneshot():
                    memory, times = proc.memory_info(), proc.cpu_times()
            except psutil.Error:  # gone meanwhile
                continue
            rss += memory.rss
            cpu += times.user + times.system + times.children_user + times.children_system
        usage[pid] = (rss, cpu)
    return usage


class Sampler:
    """Keeps the snapshot: RSS and CPU of every service's process tree, and what the
    drivers' own sources add (an API's uWSGI counters and socket queue)."""

    def __init__(self, context: Context, save_soon: Callable[[], None], sockets: HeldSockets):
        self.records = context.services
        self.groups = context.groups
        self.sockets = sockets
        self.save_soon = save_soon
        self.interval = context.config.sample_interval
        self.sources: list[Callable[[], Awaitable[None]]] = []  # each sample runs these
        self.instant: list[Callable[[], None]] = []  # cheap enough to run at every scrape
        self.samples: dict[str, Sample] = {}
        self.totals: dict[str, Totals] = {}
        self.usage: dict[str, Usage] = {}
        self._wake: asyncio.Event | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self.sampled_at: float | None = None  # monotonic: when the last whole sample began

    def sample_of(self, name: str) -> Sample:
        return self.samples.setdefault(name, Sample())

    def totals_of(self, name: str) -> Totals:
        return self.totals.setdefault(name, Totals())

    async def run(self) -> None:
        self._wake = asyncio.Event()
        while True:
            started = time.monotonic()
            await self.sample()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.5, self.interval - (time.monotonic() - started))):
                    await self._wake.wait()
            self._wake.clear()

    def soon(self) -> None:
        """Sample again now rather than at the next interval (a service just came up)."""
        if self._wake is not None:
            self._wake.set()

    def sample(self) -> asyncio.Task[None]:
        """The sample in flight, or a new one: the loop and every scrape share it."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.get_running_loop().create_task(self._sample_once(), name="sample")
        return self._in_flight

    async def _sample_once(self) -> None:
        started = time.monotonic()
        try:
            await self.sample_all()
        except Exception:  # never let sampling take the daemon down
            log.exception("sampling failed")
        self.sampled_at = started

    async def fresh(self, max_age: float = FRESH, wait: float = FRESH_WAIT) -> None:
        """A sample no older than `max_age`, waited for at most `wait` (else the last one stays)."""
        if self.sampled_at is not None and time.monotonic() - self.sampled_at <= max_age:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(self.sample())

    async def sample_all(self) -> None:
        """Every source and the process table at once: a slow vassal delays only its own figures."""
        results = await asyncio.gather(
            *(source() for source in self.sources), self.sample_usage(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.error("sampling failed: %r", result, exc_info=result)
        self.sample_queues()

    async def sample_usage(self) -> None:
        running = [svc for svc in self.records() if svc.pid is not None and svc.state != State.STOPPED]
        # the whole process table is read in a thread, off the event loop
        pids = [svc.pid for svc in running if svc.pid is not None]
        mains = {svc.name: svc.pid for svc in running if svc.pid is not None}
        loop = asyncio.get_running_loop()
        usage, held = await asyncio.gather(
            loop.run_in_executor(None, tree_usage, pids), loop.run_in_executor(None, footprints, self.groups, mains)
        )
        for svc in running:
            if svc.pid is None or svc.pid not in usage:
                continue  # a new main process since the table was read: sampled next time
            rss, cpu = usage[svc.pid]
            sample = self.sample_of(svc.name)
            sample.rss_bytes, sample.usage_at = rss, time.monotonic()
            sample.footprint = held.get(svc.name)
            sample.cpu_seconds = self.usage.setdefault(svc.name, Usage()).update(svc.pid, cpu)

    def refresh(self) -> None:
        """What can be read at once, read now (a scrape)."""
        self.sample_queues()
        for source in self.instant:
            source()

    def sample_queues(self) -> None:
        """Connections waiting on each held socket (cheap: a scrape asks for it fresh)."""
        try:
            queues = listen_queues()  # one netlink dump, as `ss -xl` reads it: uWSGI's own figure is 0
        except OSError as exc:
            log.debug("sock_diag: %s", exc)
            return
        for name, inode in self.sockets.inodes().items():
            waiting, limit = queues.get(inode, (None, None))
            self.queue_depth(name, waiting, limit)

    def observe(self, name: str, stats: ServerStats) -> None:
        """Fold a serving instance's stats into the totals and the snapshot (also fed by readiness probes)."""
        self.fold(name, stats)
        sample = self.sample_of(name)
        sample.stats, sample.stats_at = stats, time.monotonic()
        sample.workers = Counter(_worker_status(w.status) for w in stats.workers if w.pid > 0)
        times = [w.avg_rt_us for w in stats.workers if w.requests and w.avg_rt_us]
        sample.avg_response_s = (sum(times) / len(times) / 1e6) if times else None

    def fold(self, name: str, stats: ServerStats) -> None:
        """Count what an instance's stats say it served (the serving one, or one that retires)."""
        self.totals_of(name).update(stats.pid, stats.workers)
        self.save_soon()

    def master_gone(self, name: str, pid: int) -> None:
        self.totals_of(name).retire(pid)
        self.save_soon()

    def count_killed(self, name: str, requests: int) -> None:
        self.totals_of(name).killed += requests
        self.save_soon()

    def queue_depth(self, name: str, waiting: int | None, limit: int | None) -> None:
        sample = self.sample_of(name)
        sample.listen_queue, sample.listen_queue_max = waiting, limit

    def forget(self, name: str) -> None:
        for table in (self.samples, self.totals, self.usage):
            table.pop(name, None)


def _worker_status(status: str) -> str:
    return "signal" if status.startswith("sig") else status or "unknown"
