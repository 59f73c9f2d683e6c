"""The serving vassals' counters into the snapshot, and the workers past max_rss_mb replaced:
the vassal driver's collaborator (driver.py), one of the sampler's sources."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Protocol

from supervisor.observe.procs import descendants
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.observe.sampler import Sampler
    from supervisor.observe.stats import ServerStats
    from supervisor.state.drivers import Context
    from supervisor.state.service import ServiceRuntime


class Vassals(Protocol):
    def _mine(self) -> list[ServiceRuntime]: ...
    async def stats(self, name: str, instance: str = "", timeout: float = 1.0) -> ServerStats | None: ...


class VassalSampling:
    def __init__(self, ctx: Context, sampler: Sampler, vassals: Vassals):
        self.ctx = ctx
        self.sampler = sampler
        self.vassals = vassals
        self.recycled: set[int] = set()  # worker pids asked to go for their memory, not yet gone

    async def sample(self) -> None:
        """The serving vassals' counters, for the snapshot."""
        serving = [s for s in self.vassals._mine() if s.pid is not None and s.state != State.STOPPED]
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
        stats = await self.vassals.stats(svc.name, svc.instance)
        if stats is not None and stats.pid == pid == svc.pid:
            self.sampler.observe(svc.name, stats)
