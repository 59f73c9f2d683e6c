"""What a lifecycle needs of the supervisor around it, and of time: passed in, so tests give their own."""

from __future__ import annotations

import asyncio
from typing import Protocol

from supervisor.state.events import Timeout
from supervisor.state.service import ServiceRuntime
from supervisor.state.states import State
from supervisor.state.waiters import Result


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class Host(Protocol):
    """What a lifecycle needs of the supervisor around it."""

    clock: Clock
    shutting_down: bool

    def future(self) -> Result: ...

    def arm(self, delay: float, event: Timeout) -> asyncio.TimerHandle: ...

    def pending_for(self, svc: ServiceRuntime) -> list[str]: ...

    def start_dependencies(self, svc: ServiceRuntime) -> None: ...

    def state_changed(self, svc: ServiceRuntime, old: State) -> None: ...

    def touched(self, svc: ServiceRuntime) -> None: ...

    def say(self, name: str, text: str, priority: int = 6) -> None: ...

    def watch(self, svc: ServiceRuntime, pid: int) -> None: ...

    def unwatch(self, pid: int) -> None: ...
