"""Listening unix sockets that the daemon creates and holds for each API.

The daemon, not the vassal, owns an API's socket: it is created once with
its final owner and mode, handed to every vassal that serves the service,
and kept open across restarts, so connections wait in its queue instead of
being refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.layout import Layout

BACKLOG = 1024


class SocketInUse(OSError):
    """Another process answers on the path."""


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def bind_stream(path: Path, mode: int = 0o660, gid: int | None = None, backlog: int = BACKLOG) -> socket.socket:
    """A listening unix stream socket at `path`, with `mode` from its first instant.

    Refuses (SocketInUse) when something already answers there; a stale
    socket file left by a dead process is replaced.
    """
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise SocketInUse(errno.EEXIST, f"{path} exists and is not a socket")
        if _answers(path):
            raise SocketInUse(errno.EADDRINUSE, f"{path} is already in use by another process")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # the umask makes bind() create the file with `mode`, never wider
        with _umask(0o777 & ~mode):
            sock.bind(str(path))
        if gid is not None:
            os.chown(path, -1, gid)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_datagram(path: Path, mode: int = 0o660, gid: int | None = None) -> socket.socket:
    """A datagram socket at `path` (log intake, notify sockets), replacing a stale one."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with _umask(0o777 & ~mode):
            sock.bind(str(path))
        if gid is not None:
            os.chown(path, -1, gid)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """A listening socket and the file it was bound to."""

    def __init__(self, sock: socket.socket, path: Path):
        self.sock = sock
        self.path = path
        self.file_inode = path.stat().st_ino

    def fileno(self) -> int:
        return self.sock.fileno()

    def owns_path(self) -> bool:
        """The file at `path` is still ours (nobody bound over it)."""
        try:
            return self.path.stat().st_ino == self.file_inode
        except OSError:
            return False

    def close(self, unlink: bool = True) -> None:
        """Close the socket and remove its file, unless another socket took the path."""
        mine = unlink and self.owns_path()
        self.sock.close()
        if mine:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def listen(path: Path, mode: int = 0o660, gid: int | None = None) -> Listener:
    return Listener(bind_stream(path, mode, gid), path)


def adopt(fd: int, path: Path) -> Listener:
    """Wrap a listening socket taken from elsewhere (a running vassal)."""
    return Listener(socket.socket(fileno=fd), path)


class HeldSockets:
    """The socket of every API, held for whichever driver serves it.

    Shared by the drivers so that a service moved from one server to another
    keeps its socket: the new server's instance is handed the very socket the
    old one serves on, and it is closed only when no driver holds it any more.
    """

    def __init__(self, layout: Layout, mode: int, gid: int | None):
        self.layout = layout
        self.mode = mode
        self.gid = gid
        self.listeners: dict[str, Listener] = {}
        self.holders: dict[str, set[object]] = {}

    def fd(self, name: str) -> int | None:
        listener = self.listeners.get(name)
        return listener.fileno() if listener else None

    def hold(self, name: str, holder: object) -> int:
        """The service's socket, bound now unless held already (and still at its path); its fd."""
        self.holders.setdefault(name, set()).add(holder)
        listener = self.listeners.get(name)
        if listener is not None and listener.owns_path():
            return listener.fileno()
        if listener is not None:
            listener.close(unlink=False)
        self.listeners[name] = listen(self.layout.api_socket(name), self.mode, self.gid)
        return self.listeners[name].fileno()

    def take_over(self, name: str, holder: object, fd: int) -> None:
        """Hold a socket taken out of a running server (after the daemon restarted)."""
        self.holders.setdefault(name, set()).add(holder)
        old = self.listeners.pop(name, None)
        if old is not None:
            old.close(unlink=False)
        self.listeners[name] = adopt(fd, self.layout.api_socket(name))

    def release(self, name: str, holder: object) -> None:
        """`holder` is done with the socket: it goes once nobody holds it."""
        holders = self.holders.get(name, set())
        holders.discard(holder)
        if holders:
            return
        self.holders.pop(name, None)
        listener = self.listeners.pop(name, None)
        if listener is not None:
            listener.close()

    def inodes(self) -> dict[str, int]:
        """Each held socket's inode, as sock_diag names it."""
        found = {}
        for name, listener in list(self.listeners.items()):
            with contextlib.suppress(OSError):
                found[name] = os.fstat(listener.fileno()).st_ino
        return found

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self.holders.clear()
