"""The emperor kept alive, and what a previous daemon left running taken over.

The vassal driver's collaborator, apart from its actions on one service:
the emperor's death starts a new one and reports each API Lost; at
start-up, vassals still serving are adopted and reported Adopted; the
emperor is poked to spawn what was asked for, and stopped last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.observe.procs import describe_wait_status
from supervisor.state.events import Adopted, Lost

if TYPE_CHECKING:
    from supervisor.logs.fifos import LogFifos
    from supervisor.state.drivers import Context
    from supervisor.state.service import ServiceRuntime
    from supervisor.uwsgi.emperor import Emperor
    from supervisor.uwsgi.ending import VassalEnds

log = logging.getLogger("wsgi-supervisor")

MAX_SOCKET_PATH = 107


class Vassals(Protocol):
    """What the emperor's watch needs of the vassal driver."""

    ends: VassalEnds

    def _mine(self) -> list[ServiceRuntime]: ...
    def install_launcher(self, svc: ServiceRuntime) -> None: ...
    def take_over_socket(self, name: str, master_pid: int) -> bool: ...
    def render(self, svc: ServiceRuntime, instance: str | None = None) -> str: ...
    def enclose(self, name: str, instance: str, pid: int) -> None: ...


class EmperorWatch:
    """The emperor's life beside the vassal driver: started early, watched, started again when it
    dies, poked to spawn, stopped last; and the vassals it already runs, adopted."""

    def __init__(self, ctx: Context, emperor: Emperor, logs: LogFifos, vassals: Vassals):
        self.ctx = ctx
        self.layout = ctx.layout
        self.emperor = emperor
        self.logs = logs
        self.vassals = vassals
        self.pending: list[Callable[[], bool]] = []  # vassals asked for, until each is spawned
        self.poker: asyncio.Task[None] | None = None

    def check_paths(self) -> None:
        """Every socket a vassal will have fits a unix socket path (sun_path holds 108 bytes with the NUL)."""
        longest = max((len(str(self.layout.stats_socket(s.name, "b"))) for s in self.vassals._mine()), default=0)
        if longest > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"the runtime dir {self.layout.runtime_dir} is too long: unix socket paths under it "
                f"would pass {MAX_SOCKET_PATH} bytes; use a shorter --runtime-dir"
            )

    async def attach(self, kept: dict[str, Any], reexec: bool) -> None:
        """Watch the emperor started (or adopted) before the manifest was read; adopt what runs."""
        how = "adopted the running emperor" if self.emperor.adopted else "emperor started"
        log.info("%s (pid %d)", how, self.emperor.pid)
        self._watch_emperor()
        if self.emperor.adopted:
            await self._adopt(kept.get("services", {}))

    def _watch_emperor(self) -> None:
        assert self.emperor.pid is not None
        self.ctx.watcher.watch(self.emperor.pid, self._emperor_exited)

    def _emperor_exited(self, pid: int, status: int | None) -> None:
        if self.emperor.stopping or pid != self.emperor.pid:
            return
        how = describe_wait_status(status) if status is not None else "gone"
        log.error("the uWSGI emperor (pid %d) died (%s): starting a new one", pid, how)
        self.emperor.restarts += 1
        self.emperor.spawn()
        log.info("emperor started (pid %d)", self.emperor.pid)
        self._watch_emperor()
        for svc in self.vassals._mine():
            self.ctx.report(Lost(svc.name, "the emperor died and was started again"))

    async def _adopt(self, previous: dict[str, Any]) -> None:
        """Take over the vassals a previous daemon left serving; report each as Adopted."""
        seen = await self.emperor.stats(timeout=5.0)
        running = seen[1] if seen else {}
        mine = {svc.name: svc for svc in self.vassals._mine()}
        found: dict[str, dict[str, int]] = {}
        for file in self.layout.vassal_dir.glob("*.ini"):
            await asyncio.sleep(0)  # control requests are answered meanwhile, one vassal at a time
            name, _, instance = file.stem.partition(".")
            vassal = running.get(file.stem)
            if name not in mine or vassal is None or vassal.pid <= 0:
                file.unlink()  # not ours any more, or not running: the normal start decides
                continue
            found.setdefault(name, {})[instance] = vassal.pid
        for name, instances in found.items():
            svc = mine[name]
            # both vassals of a reload the previous daemon did not finish: keep the one it had switched to
            keep = previous.get(name, {}).get("instance", "")
            keep = keep if keep in instances else next(iter(instances))
            for instance, pid in instances.items():
                self.vassals.enclose(name, instance, pid)
                self.logs.follow(name, instance)
                self.ctx.tokens.adopt("uwsgi", name, instance)  # its probes are still told apart
                if instance != keep:
                    self.vassals.ends.retire(svc, instance, pid)
            pid = instances[keep]
            self.vassals.install_launcher(svc)  # the emperor may start it again: with this version's launcher
            self.vassals.take_over_socket(name, pid)
            changed = self.vassals.render(svc, keep) != self.layout.vassal_file(name, keep).read_text()
            known = previous.get(name, {})
            same = known.get("pid") == pid  # the very master the previous daemon knew
            history = {"up_since": known.get("up_since"), "ready_duration": known.get("ready_duration")} if same else {}
            self.ctx.report(Adopted(name, pid, keep, changed=changed, **history))
            log.info("%s: adopted vassal (master pid %d)", name, pid)

    async def shut_down(self) -> None:
        """No vassal is left: stop the emperor without waiting for its slow shutdown loop (a second a pass).

        The old vassals of reloads may still be finishing their requests and their app's threads: they
        keep their stop_timeout first (the emperor's death would end them unsaid, or leave their workers
        behind, orphaned)."""
        pid = self.emperor.pid
        if pid is None:
            return
        if self.vassals.ends.retirements:
            await asyncio.wait(self.vassals.ends.retirements)
        self.emperor.stopping = True
        gone = asyncio.get_running_loop().create_future()
        self.ctx.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(s))
        self.emperor.signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone, 5)
        self.ctx.watcher.unwatch(pid)
        with contextlib.suppress(FileNotFoundError):
            self.layout.emperor_pidfile.unlink()
        self.emperor.pid = None

    def want_spawn(self, done: Callable[[], bool]) -> None:
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
