"""The open connections of the metrics listener, bounded: it asks no credentials, so anyone who
reaches its port may connect, and each connection holds one of the daemon's descriptors.

At most `cap` are open at once. A connection that has not sent its whole request head is idle
and the first to go: when a new one comes at the cap, the oldest idle one is closed to make room
(Prometheus and a load balancer send their request as soon as they connect, so a crowd of idle
connections cannot keep them out); when none is idle, the new one is closed at once. Either is a
refusal, counted for the metrics. `MetricsServer` closes an idle connection after `IDLE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio

IDLE_TIMEOUT = 5.0  # seconds for a client to send its request head; Prometheus and HAProxy send it at once
REPLY_TIMEOUT = 30.0  # seconds to answer, for a client that asked and then reads nothing
DEFAULT_CAP = 256


class Connections:
    def __init__(self, cap: int = DEFAULT_CAP):
        self.cap = max(1, cap)
        self.open: dict[asyncio.StreamWriter, bool] = {}  # oldest first: True once its request came whole
        self.refused = 0  # closed unserved at the cap: the new one, or the oldest idle one to make room
        self.timed_out = 0  # closed idle after IDLE_TIMEOUT

    def admit(self, writer: asyncio.StreamWriter) -> bool:
        """Whether the new connection may stay; at the cap the oldest idle one makes room for it."""
        if len(self.open) >= self.cap:
            self.refused += 1
            oldest_idle = next((w for w, asked in self.open.items() if not asked), None)
            if oldest_idle is None:
                return False
            self.forget(oldest_idle)
            oldest_idle.transport.abort()  # its descriptor goes now; its handler finds it closed
        self.open[writer] = False
        return True

    def asked(self, writer: asyncio.StreamWriter) -> bool:
        """Its request came whole: no longer idle. False when it was closed meanwhile (to make room)."""
        if writer not in self.open:
            return False
        self.open[writer] = True
        return True

    def forget(self, writer: asyncio.StreamWriter) -> None:
        self.open.pop(writer, None)
