"""What the daemon knows about one service at run time."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from supervisor.observe.latency import RequestCounts
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.manifest.models import Service

TAIL_LINES = 200


@dataclass
class LogLine:
    ts: float
    service: str
    stream: str  # "o" output, "r" request, "d" the daemon about this service
    text: str
    priority: int = 6
    request: Any = None  # a parsed request line (uwsgi.Request), for structured fields
    noise: bool = False  # the server's routine banner or notice: debug priority, off the console


@dataclass
class ReloadAttempt:
    """A reload under way: a second instance of the service (`instance`) that takes over once ready.

    `pid` is its main process once it has called in. A driver that reloads
    in place (a signal to a worker) makes none.
    """

    instance: str
    replaces: str = ""  # the instance it takes over from
    pid: int | None = None


@dataclass
class Waiter:
    """A command waiting for a service to reach one of `ok_states`.

    `settle_in_backoff`: a failed attempt ends the wait too (the daemon's own
    boot, which must tell systemd it is up while a service waits for its
    database); an operator's start waits on through backoff, up to its timeout.
    """

    future: asyncio.Future[tuple[bool, str]]
    ok_states: frozenset[State]
    settle_in_backoff: bool = False


@dataclass
class ServiceRuntime:
    name: str
    spec: Service
    state: State = State.STOPPED
    ready: bool = False
    pid: int | None = None
    restarts: int = 0
    failures: int = 0  # failed starts in a row (the attempt count while in backoff)
    reason: str | None = None  # why it last failed or stopped on its own
    last_exit: str | None = None  # "exited with status 1", "killed by SIGKILL"
    status_text: str | None = None  # a worker's STATUS=
    since: float = field(default_factory=time.time)
    started_at: float | None = None  # monotonic, when the current process was asked for
    ready_at: float | None = None
    up_since: float | None = None  # wall clock, when it last became ready
    ready_duration: float | None = None
    next_retry: float | None = None  # wall clock
    goal_running: bool = False
    instance: str = ""  # which of an API's vassal files is the serving one ("", "b" or "c")
    restart_pending: bool = False
    waiters: list[Waiter] = field(default_factory=list)
    tail: deque[LogLine] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    last_exception: str | None = None
    failure_hint: str | None = None
    last_failure: str | None = None  # why the last failed start failed
    config_error: bool = False  # the last failure is the manifest's own (retrying cannot help)
    timer: asyncio.TimerHandle | None = None
    reload: ReloadAttempt | None = None
    reload_heard: bool = False  # an in-place reload was answered with RELOADING=1 (the reload protocol)
    waiting_for: tuple[str, ...] = ()  # what it waits for before its process is asked for
    adopted: bool = False  # taken over from a previous daemon, not started by this one
    healthy: bool | None = None  # the app's health check: None until it first answered (or none is set)
    health_reason: str | None = None  # why it is not healthy
    drained: bool = False  # out of the load balancer's rotation (operator intent, kept across daemon restarts)
    exceptions: Any = None  # the driver's reader of exception lines in its output
    request_counts: RequestCounts = field(default_factory=RequestCounts)  # from its request lines
    preload: str | None = None  # what its master last said of preload ("shared", "refused: …"; preload.verdict)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def health_ok(self) -> bool:
        """No health check is set, or the last one (after any threshold) passed."""
        return getattr(self.spec, "health", None) is None or self.healthy is True

    def uptime(self) -> float | None:
        if self.up_since is None or not self.state.up:
            return None
        return max(0.0, time.time() - self.up_since)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
