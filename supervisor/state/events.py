"""What drivers, observers, timers and operators tell the supervisor.

Every one of these goes through the supervisor's one queue and is handled
there, one at a time, by the service's lifecycle: nothing else changes a
service's state. Drivers and observers only report what they saw.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.manifest.models import Manifest

Reply = asyncio.Future[Any]


@dataclass(frozen=True)
class Event:
    name: str  # the service it is about


@dataclass(frozen=True)
class Launched(Event):
    """A vassal's launcher called in: `pid` is the new uWSGI master. `reply` gets (ok, why)."""

    pid: int
    instance: str
    reply: Reply = field(compare=False)


@dataclass(frozen=True)
class Spawned(Event):
    """The daemon started the service's main process (not ready yet): a worker's, or a server's
    instance (`instance`, as a reload's second one)."""

    pid: int
    instance: str = ""


@dataclass(frozen=True)
class SpawnFailed(Event):
    why: str


@dataclass(frozen=True)
class Exited(Event):
    """A process the supervisor tracks is gone; `status` is its wait status when it was our child."""

    pid: int
    status: int | None


@dataclass(frozen=True)
class Ready(Event):
    """The process `pid` serves: every worker has the app and accepts (an API), or READY=1 (a worker)."""

    pid: int


@dataclass(frozen=True)
class Reloading(Event):
    """The service says it reloads by itself (RELOADING=1)."""


@dataclass(frozen=True)
class StatusText(Event):
    text: str


@dataclass(frozen=True)
class Lost(Event):
    """The process went down with what ran it (the emperor died): start it again."""

    why: str


@dataclass(frozen=True)
class Adopted(Event):
    """A process a previous daemon started, found running and taken over."""

    pid: int
    instance: str = ""
    changed: bool = False  # its definition changed while no daemon ran
    ready: bool = False  # known ready already (a worker handed over by a re-exec)
    up_since: float | None = None  # what the previous daemon knew of this very process
    ready_duration: float | None = None


@dataclass(frozen=True)
class Health(Event):
    """The app's own health check changed its answer (after the failure threshold)."""

    healthy: bool
    reason: str | None = None


@dataclass(frozen=True)
class Timeout(Event):
    """A timer of the lifecycle fired; `token` tells a stale timer from the current one."""

    what: str  # "start", "stop", "reload", "retry", "stable"
    token: object = field(compare=False)


@dataclass(frozen=True)
class Command(Event):
    """An operator's verb (start, stop, restart, reload); `reply` gets the future that settles when it is done."""

    verb: str
    reply: Reply = field(compare=False)


@dataclass(frozen=True)
class Reconcile:
    """A new manifest to apply; `reply` gets its `reconcile.Applied` once the manifest is taken."""

    manifest: Manifest
    reply: Reply = field(compare=False)
