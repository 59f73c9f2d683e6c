"""The notify sockets of worker services: READY=1 and STATUS= from the service's own processes only.

Each worker's socket belongs to the service: its file is owned by the
service's user, mode 0600, in a directory others may traverse but not list,
so no other local user can even send to it. What does arrive is checked
against the credentials the kernel attaches to every datagram
(SCM_CREDENTIALS: the sender cannot forge its pid or uid): the sender must
be the worker's main process or one of its descendants, running as the
service's user. A process of another service of the same user, or an
orphan that left the tree, is not the service. Nothing a sender says about
itself (its environment) is trusted.

A refused datagram is dropped, never acted on, and said in the service's
log at most once a minute (with how many more were dropped meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.listeners import bind_datagram
from supervisor.observe.procs import lineage

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
REFUSED_SAY_EVERY = 60.0  # seconds between two messages about refused datagrams of one service
MAX_DATAGRAM = 4096


@dataclass(frozen=True)
class Owner:
    """Whose socket it is: the service's processes run as `uid` (and `gid`); `main()` is their root."""

    uid: int
    gid: int
    main: Callable[[], int | None]


@dataclass
class _Refusals:
    said_at: float | None = None
    unsaid: int = 0


@dataclass
class _Socket:
    sock: socket.socket
    owner: Owner
    refusals: _Refusals = field(default_factory=_Refusals)


def fields_of(data: bytes) -> dict[str, str]:
    """sd_notify's `KEY=value` lines."""
    return dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)


def sender_of(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(pid, uid) of a datagram's sender as the kernel vouches for them, or None without them."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _CREDS.size:
            pid, uid, _gid = _CREDS.unpack_from(data)
            return pid, uid
    return None


def descends_from(pid: int, main: int) -> bool:
    """Whether the live process `pid` is below `main`, walking up its parents as the kernel has them now.

    Cheap (a read of /proc per generation): it runs for every datagram that is not the main process's.
    `main` is the daemon's own unreaped child, so its pid names no other process meanwhile.
    """
    return pid != main and main in lineage(pid)


def refusal(owner: Owner, sender: tuple[int, int] | None) -> str | None:
    """Why a datagram from `sender` does not speak for the service (None: it does)."""
    if sender is None:
        return "no sender credentials"
    pid, uid = sender
    if uid != owner.uid:
        return f"from pid {pid}, uid {uid}: not the service's user (uid {owner.uid})"
    main = owner.main()
    if main is None:
        return f"from pid {pid}: the service has no main process"
    if pid != main and not descends_from(pid, main):
        return f"from pid {pid}, uid {uid}: not the main process (pid {main}) nor one of its descendants"
    return None


class NotifySockets:
    """One datagram socket per worker service; accepted fields go to `deliver(name, fields)`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[str, dict[str, str]], None],
        say: Callable[[str, str, int], None],
    ):
        self.loop = loop
        self.deliver = deliver
        self.say = say
        self.sockets: dict[str, _Socket] = {}

    def open(self, name: str, path: Path, owner: Owner) -> None:
        """Bind `path` for the service (once), and give it to `owner` (again: the user may have changed)."""
        held = self.sockets.get(name)
        if held is None:
            sock = bind_datagram(path, 0o600)  # the daemon's only, until it is the owner's
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setblocking(False)
            held = self.sockets[name] = _Socket(sock, owner)
            self.loop.add_reader(sock.fileno(), self._read, name)
        held.owner = owner
        try:
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        except OSError:
            self.close(name, path)
            raise

    def _read(self, name: str) -> None:
        held = self.sockets.get(name)
        if held is None:
            return
        for _ in range(64):  # then let the loop breathe; the reader is called again
            try:
                data, ancdata, _flags, _addr = held.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS.size))
            except OSError:  # drained (BlockingIOError), or closed meanwhile
                return
            why = refusal(held.owner, sender_of(ancdata))
            if why is None:
                self.deliver(name, fields_of(data))
            else:
                self._refused(name, held.refusals, why)

    def _refused(self, name: str, refusals: _Refusals, why: str) -> None:
        now = self.loop.time()
        if refusals.said_at is not None and now - refusals.said_at < REFUSED_SAY_EVERY:
            refusals.unsaid += 1
            return
        more = f" ({refusals.unsaid} more dropped since the last message)" if refusals.unsaid else ""
        self.say(name, f"dropped a notification {why}{more}", 4)
        refusals.said_at, refusals.unsaid = now, 0

    def close(self, name: str, path: Path | None = None) -> None:
        held = self.sockets.pop(name, None)
        if held is None:
            return
        self.loop.remove_reader(held.sock.fileno())
        held.sock.close()
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close_all(self) -> None:
        for name in list(self.sockets):
            self.close(name)
