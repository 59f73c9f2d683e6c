"""The one interface between a service's lifecycle and whatever runs its processes.

A driver acts when the lifecycle asks and reports what it sees as events
(`supervisor.state.events`) through `Context.report`; it reads the service's
record but never writes it. The lifecycle never asks which kind of
service it drives: uWSGI vassals and plain processes are two drivers, and
another server is one more module that implements `Driver`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.observe.cgroups import ServiceGroups
from supervisor.state.probe_tokens import ProbeTokens

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.layout import Layout
    from supervisor.observe.watcher import ExitWatcher
    from supervisor.state.events import Event
    from supervisor.state.service import ReloadAttempt, ServiceRuntime


@dataclass
class Context:
    """What a driver may use: given at construction, so a driver never reaches for the supervisor."""

    loop: asyncio.AbstractEventLoop
    config: Config
    layout: Layout
    watcher: ExitWatcher
    report: Callable[[Event], None]  # into the supervisor's queue
    say: Callable[[str, str, int], None]  # (service, text, priority): a message in that service's log
    spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]  # a task the daemon keeps and reaps
    services: Callable[[], Iterable[ServiceRuntime]]  # the records, to read
    # what the daemon's health probe sends, so that servers leave its requests out: one per instance
    tokens: ProbeTokens = field(default_factory=ProbeTokens)
    # a control group per service instance (observe/cgroups.py); none in tests of the pure parts
    groups: ServiceGroups = field(default_factory=lambda: ServiceGroups.unavailable("not set up"))


@dataclass(frozen=True)
class Failure:
    """What a line of a service's output says about why it is going down."""

    reason: str
    retry_helps: bool = True  # False: the definition itself is wrong (an unknown server option)


class Driver(Protocol):
    def prepare(self, svc: ServiceRuntime) -> None:
        """Everything a start needs before its process is asked for; raises OSError or ValueError
        with a reason a person can act on (the socket is taken, the user does not exist…)."""

    def launch(self, svc: ServiceRuntime) -> None:
        """Ask for the process; it reports Launched or Spawned (or SpawnFailed), then Ready."""

    def awaiting(self, svc: ServiceRuntime) -> str:
        """What a start waits for once launched, as status shows it."""

    def watch_ready(self, svc: ServiceRuntime) -> None:
        """Report Ready once the service's current process (or its reload attempt's) serves."""

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        """Ask the process to stop gracefully; False when there is nothing to ask."""

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        """SIGKILL every process of the service (its control group, else its main process's tree),
        saying `why` in the service's log."""

    def kill_unready(self, svc: ServiceRuntime, why: str) -> None:
        """The start was not reported ready in time: SIGKILL, as `kill`, unless a last look finds the
        process serving after all (a readiness report that came late): then it reports Ready instead."""

    def disable(self, svc: ServiceRuntime) -> None:
        """Make sure nothing brings the process back by itself."""

    def release(self, svc: ServiceRuntime) -> None:
        """The service is down: close what it held (its socket, its notify socket)."""

    def exited(self, svc: ServiceRuntime, pid: int, status: int | None) -> str | None:
        """The main process is gone: clean up after it; a reason when it was not the service's fault."""

    def describe_exit(self, svc: ServiceRuntime) -> str:
        """Why the process ended, in words, for a crash reason."""

    def reload(self, svc: ServiceRuntime) -> ReloadAttempt | bool:
        """Start a reload: a second instance that takes over once Ready (an attempt), True when
        the process was asked to reload in place (it reports Ready when done, if it can tell:
        `reports_reload`), False when it could not be asked. Raises OSError or ValueError."""

    def reports_reload(self, svc: ServiceRuntime) -> bool:
        """Whether an in-place reload ends with a Ready report (else it counts as done at once)."""

    def switch(self, svc: ServiceRuntime, attempt: ReloadAttempt, old_pid: int | None) -> None:
        """The attempt serves: retire the instance it replaces."""

    def abandon(self, svc: ServiceRuntime, attempt: ReloadAttempt) -> None:
        """The attempt did not come up: end it, the current instance goes on serving."""

    def on_line(self, svc: ServiceRuntime, text: str) -> Failure | None:
        """A line of the service's output: the driver may know what it means."""

    def noise(self, text: str) -> bool:
        """A routine line of the server's own (its banner, a notice of normal operation): logged at
        debug priority and left off the console and `wsgictl logs` unless asked for."""

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        """Where clients reach the service (an API's socket), for status."""

    def close(self) -> None:
        """The daemon stops: let go of everything."""


class Hooks(Protocol):
    """Optional driver methods: the supervisor calls each on every driver that has it, in the
    registry's order (uwsgi, gunicorn, process, then plug-ins). A driver without one needs none."""

    def check_paths(self) -> None:
        """Before the daemon opens its sockets: raise RuntimeError with a reason if it cannot run here."""

    async def attach(self, kept: dict[str, Any], reexec: bool) -> None:
        """Take over what a previous daemon left running (`kept`: its state file; `reexec`: this very
        process, re-executed), reporting Adopted for each service it finds serving."""

    def handover(self) -> dict[str, dict[str, int]]:
        """Before a re-exec: by service, what the next image needs to take over (the state file keeps it)."""

    async def shut_down(self) -> None:
        """Every service has stopped: stop what the server keeps of its own (uWSGI's emperor)."""

    def daemon_noise(self, text: str) -> bool:
        """A line in the daemon's own log that is this server's routine (the emperor's lines are there)."""
