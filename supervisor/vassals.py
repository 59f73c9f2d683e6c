"""API services as uWSGI emperor vassals: the actions the core asks for.

Start: hold the socket, write the vassal file, poke the emperor (the
launcher then calls in with the new master's pid). Stop: pause, then a
graceful stop through the master FIFO, the file removed so the emperor does
not bring it back. Restart: the same with the file left in place, so the
emperor spawns a new vassal on the same socket. Reload: a second vassal
(`NAME.b.ini`) on the same socket; the old one retires once the new one
serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import uwsgi
from .emperor import install_service_launcher, read_unix
from .listeners import Listener, listen
from .manifest import ApiService
from .procs import in_pause_loop, signal_tree, stopped, take_listener
from .service import ServiceRuntime

if TYPE_CHECKING:
    from .core import Supervisor

log = logging.getLogger("wsgi-supervisor")

# vassal files keep one fixed mtime: the emperor reloads a vassal when the
# mtime grows, and the daemon wants to decide every reload itself
VASSAL_MTIME = 946684800  # 2000-01-01


def write_atomic(path: Path, text: str, mode: int = 0o600, mtime: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        # no fsync: the runtime dir is rebuilt at every boot (tmpfs under /run);
        # the rename is what keeps a reader from seeing half a file
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


class VassalDriver:
    def __init__(self, sup: Supervisor):
        self.sup = sup
        self.layout = sup.layout
        self.listeners: dict[str, Listener] = {}
        self.pending: list[Callable[[], bool]] = []
        self.poker: asyncio.Task[None] | None = None
        self.final_stats: dict[tuple[str, str], uwsgi.VassalStats] = {}  # (name, instance) of stopping vassals

    # -- the socket the daemon holds -------------------------------------------

    def listener_fd(self, name: str) -> int | None:
        listener = self.listeners.get(name)
        return listener.fileno() if listener else None

    def hold_socket(self, svc: ServiceRuntime) -> None:
        listener = self.listeners.get(svc.name)
        if listener is not None and listener.owns_path():
            return
        if listener is not None:
            listener.close(unlink=False)
        self.listeners[svc.name] = listen(
            self.layout.api_socket(svc.name), self.sup.config.socket_mode, self.sup.config.socket_gid
        )

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
        from .listeners import adopt

        old = self.listeners.pop(name, None)
        if old is not None:
            old.close(unlink=False)
        self.listeners[name] = adopt(fd, path)
        return True

    # -- actions ---------------------------------------------------------------

    def render(self, svc: ServiceRuntime, instance: str | None = None) -> str:
        assert isinstance(svc.spec, ApiService)
        chosen = svc.instance if instance is None else instance
        return uwsgi.render_vassal(svc.name, svc.spec, self.layout, self.sup.config.default_venv, chosen)

    def install_launcher(self, svc: ServiceRuntime) -> None:
        assert isinstance(svc.spec, ApiService)
        default_venv = self.sup.config.default_venv
        python, _ = uwsgi.interpreter(svc.spec, default_venv)
        install_service_launcher(self.layout, svc.name, python, default_venv / "bin" / "python3")

    def prepare(self, svc: ServiceRuntime) -> None:
        self.hold_socket(svc)
        self.install_launcher(svc)
        write_atomic(self.layout.vassal_file(svc.name, svc.instance), self.render(svc), mtime=VASSAL_MTIME)

    def start_second(self, svc: ServiceRuntime, instance: str) -> None:
        """A second vassal for a reload: the same socket, files of its own."""
        self.hold_socket(svc)
        self.install_launcher(svc)
        path = self.layout.vassal_file(svc.name, instance)
        write_atomic(path, self.render(svc, instance), mtime=VASSAL_MTIME)
        self._want_spawn(lambda: svc.extra.get("reload_pid") is not None or svc.extra.get("reload") != instance)

    def retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """Stop a vassal that no longer serves (the old one after a reload), gracefully."""
        self.sup.spawn_task(self._retire(svc, instance, pid), f"retire-{svc.name}")

    async def _retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        if self._fifo(svc.name, uwsgi.PAUSE, instance):
            await self._wait_paused(svc, instance, pid)
        await self._count_final(svc, instance, pid)
        if not self._fifo(svc.name, uwsgi.GRACEFUL_STOP, instance):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # removed once it is stopping: the emperor's own stop would not be graceful
        self.remove_file(svc.name, instance)
        gone = asyncio.get_running_loop().create_future()
        self.sup.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(None))
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
            self.sup.watcher.unwatch(pid)
        self.sup.sampler.master_gone(svc.name, pid)
        if instance not in (svc.instance, svc.extra.get("reload")):  # not in use again already
            self.forget(svc.name, instance)

    async def _count_final(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """The vassal's last counts, once its workers are paused: what it served after the
        last sample is counted too (uWSGI's counters go with the master). Kept, since a
        stopping master answers no stats: a SIGKILL later counts what was in flight here."""
        stats = await self.stats(svc.name, instance, timeout=0.5)
        if stats is not None and stats.pid == pid:
            self.sup.sampler.fold(svc.name, stats)
            self.final_stats[svc.name, instance] = stats

    async def _kill_counting(self, svc: ServiceRuntime, instance: str, pid: int, why: str) -> None:
        """SIGKILL a vassal that did not stop in time, saying how many requests that ends."""
        stats = await self.stats(svc.name, instance, timeout=0.3)
        if stats is not None and stats.pid == pid:
            self.sup.sampler.fold(svc.name, stats)
        else:
            stats = self.final_stats.get((svc.name, instance)) or svc.extra.get("stats")
        in_flight = stats.in_flight if stats is not None and stats.pid == pid else 0
        if in_flight:
            self.sup.sampler.count_killed(svc.name, in_flight)
            what = f"{in_flight} request{'s' if in_flight != 1 else ''} still in flight ended"
            self.sup.say(svc, f"{why}: SIGKILL; {what} (raise stop_timeout for long requests)", 3)
        else:
            self.sup.say(svc, f"{why}: SIGKILL", 4)
        signal_tree(pid, signal.SIGKILL)

    def forget(self, name: str, instance: str) -> None:
        """Remove what a vassal that is gone leaves behind: uWSGI unlinks neither its stats socket nor its FIFO."""
        self.final_stats.pop((name, instance), None)
        for path in (self.layout.stats_socket(name, instance), self.layout.master_fifo(name, instance)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def remove_file(self, name: str, instance: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.layout.vassal_file(name, instance).unlink()

    def awaiting(self, svc: ServiceRuntime) -> str:
        """What a start waits for once launched, as status shows it."""
        return "waiting for every worker to load the app and accept"

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
            self.poker = self.sup.spawn_task(self._poke(), "poke-emperor")

    async def _poke(self) -> None:
        delay = 0.005
        for _ in range(400):
            await asyncio.sleep(0)  # let the files of this round be written first
            self.pending = [done for done in self.pending if not done()]
            if not self.pending:
                return
            await self.sup.emperor.poke()
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
        if self._fifo(svc.name, uwsgi.PAUSE, svc.instance):
            self.sup.spawn_task(self._stop_when_paused(svc, svc.instance, svc.pid), f"stop-{svc.name}")
            return True
        # no master FIFO yet (still starting): SIGTERM is a graceful stop too
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    async def _wait_paused(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """Until every worker of the vassal waits in uWSGI's pause loop, where it accepts nothing.

        The stats' `pause` is not enough: it is the master's flag, shown as soon as the
        master has signalled the workers, for every worker that is not in a request. A
        worker that had passed its pause check already (waiting for the accept lock, or
        in epoll_wait) still takes one more connection, and a graceful stop that reaches
        it between that accept and reading the request closes the connection unread
        (issue 13: one request in ~14,000 lost across restarts on a busy machine). So
        each worker is checked where it actually waits (/proc/PID/syscall). One that sits
        idle in epoll_wait, where the pause signal did not reach it, is stopped and
        continued: that makes epoll_wait return (EINTR, signal(7)) and the worker then
        sees the pause; a stop and continue restarts every other call it could be in.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(5.0, svc.spec.stop_timeout / 2)
        idle_since: dict[int, float] = {}
        while loop.time() < deadline:
            stats = await self.stats(svc.name, instance, timeout=0.5)
            if stats is None or stats.pid != pid:
                return
            if stats.paused:
                where = {w.pid: in_pause_loop(w.pid) for w in stats.workers if w.pid > 0}
                if None in where.values():
                    return  # cannot look (no /proc access): the master's word has to do
                waiting = [p for p, paused in where.items() if not paused]
                if not waiting:
                    return
                now = loop.time()
                for worker in waiting:
                    # give a worker that accepted one last connection time to read it
                    if now - idle_since.setdefault(worker, now) >= 0.02:
                        idle_since[worker] = now
                        await self._nudge(worker)
            else:
                idle_since.clear()
            await asyncio.sleep(0.005)

    @staticmethod
    async def _nudge(worker: int) -> None:
        """Stop and continue a worker: once it has really stopped, so the stop is not discarded."""
        try:
            os.kill(worker, signal.SIGSTOP)
        except OSError:
            return
        try:
            for _ in range(100):
                if stopped(worker):
                    break
                await asyncio.sleep(0.001)
        finally:
            with contextlib.suppress(OSError):
                os.kill(worker, signal.SIGCONT)

    async def _stop_when_paused(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        await self._wait_paused(svc, instance, pid)
        await self._count_final(svc, instance, pid)
        if svc.pid == pid and not self._fifo(svc.name, uwsgi.GRACEFUL_STOP, instance):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.sup.spawn_task(self._kill_counting(svc, svc.instance, svc.pid, why), f"kill-{svc.name}")

    def disable(self, svc: ServiceRuntime) -> None:
        """Remove the vassal files, so the emperor does not bring a vassal back."""
        for instance in ("", "b"):
            self.remove_file(svc.name, instance)

    def release(self, svc: ServiceRuntime) -> None:
        """The service is down (stopped, failed, waiting to retry): its socket goes, and its vassal's files."""
        listener = self.listeners.pop(svc.name, None)
        if listener is not None:
            listener.close()
        self.forget(svc.name, svc.instance)

    def _fifo(self, name: str, command: bytes, instance: str = "") -> bool:
        try:
            fd = os.open(self.layout.master_fifo(name, instance), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                log.warning("%s: master FIFO: %s", name, exc)
            return False
        try:
            os.write(fd, command)
        except OSError as exc:
            log.warning("%s: master FIFO write: %s", name, exc)
            return False
        finally:
            os.close(fd)
        return True

    async def stats(self, name: str, instance: str = "", timeout: float = 1.0) -> uwsgi.VassalStats | None:
        raw = await read_unix(self.layout.stats_socket(name, instance), timeout)
        if raw is None:
            return None
        try:
            return uwsgi.parse_stats(raw)
        except ValueError:
            return None

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
