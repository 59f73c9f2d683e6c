"""API services as uWSGI emperor vassals: the actions the core asks for.

Start: hold the socket, write the vassal file, poke the emperor (the
launcher then calls in with the new master's pid). Stop: graceful stop
through the master FIFO, the file removed so the emperor does not bring it
back. Restart: graceful stop with the file left in place, so the emperor
spawns a new vassal on the same socket. Reload: a chain reload (workers
replaced one at a time: no stall, no refused request).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from . import uwsgi
from .emperor import read_unix
from .listeners import Listener, listen
from .manifest import ApiService
from .procs import signal_tree, take_listener
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
        os.write(fd, text.encode())
        os.fsync(fd)
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

    def render(self, svc: ServiceRuntime) -> str:
        assert isinstance(svc.spec, ApiService)
        return uwsgi.render_vassal(svc.name, svc.spec, self.layout, self.sup.config.default_venv)

    def prepare(self, svc: ServiceRuntime) -> None:
        self.hold_socket(svc)
        write_atomic(self.layout.vassal_file(svc.name), self.render(svc), mtime=VASSAL_MTIME)

    def launch(self, svc: ServiceRuntime) -> None:
        self.sup.spawn_task(self._poke_until_launched(svc), f"poke-{svc.name}")

    async def _poke_until_launched(self, svc: ServiceRuntime) -> None:
        """Make the emperor rescan until it has spawned the vassal.

        A rescan right after a vassal died can come before the emperor has
        buried it, so one poke is not always enough.
        """
        delay = 0.005
        for _ in range(400):
            if svc.pid is not None or not svc.state.active:
                return
            await self.sup.emperor.poke()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        """Ask the vassal to stop gracefully; False when there is nothing to ask."""
        if svc.pid is None:
            return False
        if self._fifo(svc.name, uwsgi.GRACEFUL_STOP):
            return True
        # no master FIFO yet (still starting): SIGTERM is a graceful stop too
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    def ask_reload(self, svc: ServiceRuntime) -> bool:
        return self._fifo(svc.name, uwsgi.CHAIN_RELOAD)

    def kill(self, svc: ServiceRuntime) -> None:
        if svc.pid is not None:
            signal_tree(svc.pid, signal.SIGKILL)

    def disable(self, svc: ServiceRuntime) -> None:
        """Remove the vassal file, so the emperor does not bring the vassal back."""
        with contextlib.suppress(FileNotFoundError):
            self.layout.vassal_file(svc.name).unlink()

    def release(self, svc: ServiceRuntime) -> None:
        listener = self.listeners.pop(svc.name, None)
        if listener is not None:
            listener.close()

    def _fifo(self, name: str, command: bytes) -> bool:
        try:
            fd = os.open(self.layout.master_fifo(name), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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

    async def stats(self, name: str, timeout: float = 1.0) -> uwsgi.VassalStats | None:
        raw = await read_unix(self.layout.stats_socket(name), timeout)
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
