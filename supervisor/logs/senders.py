"""Who may put a line under a name: the sender of a datagram on the daemon's log socket, checked.

A datagram names the service it is for (`NAME|o|`), and any process that
holds a socket connected to the daemon's could name any service, or none
(which used to mean the daemon itself). So the name is only a claim: the
socket passes the sender's pid (SO_PASSCRED, checked by the kernel), and a
datagram is kept only when that pid is a process of the service's tree (the
service's main process or one of its descendants) and the datagram names
that service or none. Anything else is dropped and counted against the
service that sent it ("" when the sender belongs to no service).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping

from supervisor.observe.procs import lineage

log = logging.getLogger("wsgi-supervisor")


def tree_owner(pid: int, mains: Mapping[int, str]) -> str | None:
    """The service whose tree holds `pid`: the first of its ancestors (itself included) that is a
    service's main process (`mains`: pid -> service). A process that left its service's tree
    (double-forked, re-parented to init) belongs to none."""
    for ancestor in lineage(pid):
        name = mains.get(ancestor)
        if name is not None:
            return name
    return None


class Rejections:
    """Datagrams dropped by the check, counted by the service that sent them, and said under that
    service's name once a minute at most (a flood of forgeries must not become a flood of lines)."""

    def __init__(self, say) -> None:
        self.say = say  # (service, text, priority): a line of the daemon's in that service's log
        self.counts: Counter[str] = Counter()
        self._last_said: dict[str, float] = {}

    def add(self, sender: str | None, claimed: str | None, pid: int | None) -> None:
        key = sender or ""
        self.counts[key] += 1
        now = time.monotonic()
        if now - self._last_said.get(key, -60.0) < 60:
            return
        self._last_said[key] = now
        what = f"for {claimed}" if claimed else "naming no service"
        if sender:
            self.say(sender, f"dropped a log line {what} from its process {pid} ({self.counts[key]} so far)", 4)
        else:
            log.warning(
                "log socket: dropped a line %s from process %s, of no service (%d so far)", what, pid, self.counts[key]
            )
