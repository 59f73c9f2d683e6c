"""TCP connections a service's processes hold, counted by remote port (3306 MariaDB, 5672 RabbitMQ…).

psutil's `net_connections` reads every process's descriptors and every table for one process at a
time; /proc/PID/net/tcp lists every socket of the process's network namespace, not of the process.
So: the socket inodes among each process's descriptors (/proc/PID/fd links read `socket:[INODE]`),
matched against the tcp and tcp6 tables, read once per network namespace. A socket several
processes share (inherited over a fork) counts once for the service. Only ESTABLISHED ones count:
what a database's `max_connections` sees.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

ESTABLISHED = "01"


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets among the process's descriptors (empty when it is gone)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def established(table: str) -> dict[int, int]:
    """inode -> remote port of every ESTABLISHED socket in the text of a /proc/net/tcp{,6} table."""
    remote = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == ESTABLISHED:
            remote[int(fields[9])] = int(fields[2].rpartition(":")[2], 16)
    return remote


def _tables(pid: int) -> dict[int, int] | None:
    remote: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as table:
                remote.update(established(table.read()))
        except FileNotFoundError:
            if name == "tcp":
                return None  # the process is gone
        except OSError:
            continue  # no IPv6 in this kernel
    return remote


def by_remote_port(pids: Iterable[int], tables: dict[int, dict[int, int]] | None = None) -> Counter[int]:
    """How many ESTABLISHED TCP connections the processes hold, by remote port. `tables` caches
    each network namespace's table (by the namespace's inode) across calls within one sample."""
    tables = {} if tables is None else tables
    seen: set[int] = set()
    counts: Counter[int] = Counter()
    for pid in pids:
        inodes = socket_inodes(pid) - seen
        if not inodes:
            continue
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if netns not in tables:
            table = _tables(pid)
            if table is None:
                continue
            tables[netns] = table
        table = tables[netns]
        for inode in inodes:
            port = table.get(inode)
            if port is not None:
                counts[port] += 1
        seen |= inodes
    return counts
