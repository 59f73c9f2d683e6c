"""What a lifecycle does with what its driver reports: launches, readiness, exits, adoption.

The lifecycle's collaborator, kept apart from the commands and transitions
in `lifecycle.py` so each reads on its own: it reads the service's record and
changes it only through the lifecycle's transitions (`Transitions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from supervisor.observe.procs import describe_wait_status
from supervisor.state.events import (
    Adopted,
    Event,
    Exited,
    Health,
    Launched,
    Lost,
    Ready,
    Reloading,
    Spawned,
    SpawnFailed,
    StatusText,
)
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.state.drivers import Driver
    from supervisor.state.host import Host
    from supervisor.state.service import ReloadAttempt, ServiceRuntime


class Transitions(Protocol):
    """What reactions need of their lifecycle: its record, driver and host, and its transitions."""

    svc: ServiceRuntime
    driver: Driver
    host: Host

    def _set_state(self, state: State, reason: str | None = None) -> None: ...
    def _track(self, pid: int) -> None: ...
    def _became_ready(self) -> None: ...
    def _crashed(self) -> None: ...
    def _finish_stop(self) -> None: ...
    def _begin_stop(self, then_start: bool = False) -> None: ...
    def _begin_start(self) -> None: ...
    def _cancel_timer(self) -> None: ...
    def _abandon_reload(self, why: str) -> None: ...
    def _finish_reload(self, attempt: ReloadAttempt) -> None: ...


class Reactions:
    """A lifecycle's collaborator: it reads the record and applies the lifecycle's transitions."""

    def __init__(self, lc: Transitions):
        self.lc = lc
        self.svc = lc.svc
        self.driver = lc.driver
        self.host = lc.host

    def react(self, event: Event) -> None:
        """One event from the supervisor's queue, to the method for its kind."""
        match event:
            case Launched(pid=pid, instance=instance, reply=reply):
                reply.set_result(self.on_launched(pid, instance))
            case Exited(pid=pid, status=status):
                self.on_exit(pid, status)
            case Ready(pid=pid):
                self.on_ready(pid)
            case Spawned(pid=pid, instance=instance):
                self.on_spawned(pid, instance)
            case SpawnFailed(why=why):
                self.on_spawn_failed(why)
            case Adopted():
                self.on_adopted(event)
            case Lost(why=why):
                self.on_lost(why)
            case Reloading():
                self.on_reloading()
            case StatusText(text=text):
                self.on_status_text(text)
            case Health(healthy=healthy, reason=reason):
                self.on_health(healthy, reason)

    # -- what the driver reports ---------------------------------------------------------------

    def on_launched(self, pid: int, instance: str) -> tuple[bool, str]:
        """The launcher of a new main process called in: may it run?"""
        svc = self.svc
        attempt = svc.reload
        if instance != svc.instance:
            if svc.state == State.RELOADING and attempt is not None and attempt.instance == instance:
                attempt.pid = pid
                self.host.watch(svc, pid)
                return True, "ok"
            return False, f"{svc.name}: instance {instance or 'a'} is not wanted"
        restarting = svc.state == State.STOPPING and svc.restart_pending
        if not svc.goal_running or (
            svc.state not in (State.STARTING, State.RUNNING, State.RELOADING) and not restarting
        ):
            return False, f"{svc.name} is {svc.state}"
        if svc.waiting_for:
            return False, f"{svc.name} waits for {', '.join(svc.waiting_for)}"
        if restarting:
            # a new master came before the old one was seen to exit
            if svc.pid is not None:
                self.host.unwatch(svc.pid)
                svc.pid = None
            self.lc._finish_stop()
        if svc.pid is not None and svc.pid != pid:
            self.host.unwatch(svc.pid)  # replaced before it was seen to die
        self.lc._track(pid)
        if svc.state != State.STARTING:
            svc.restarts += 1
            svc.started_at = self.host.clock.monotonic()
            self.lc._set_state(State.STARTING, "a new main process was started")
        self.driver.watch_ready(svc)
        return True, "ok"

    def on_spawned(self, pid: int, instance: str = "") -> None:
        svc = self.svc
        attempt = svc.reload
        if instance != svc.instance:
            if svc.state == State.RELOADING and attempt is not None and attempt.instance == instance:
                attempt.pid = pid  # the reload's second instance
                self.host.watch(svc, pid)
                self.driver.watch_ready(svc)
            return
        if svc.pid is not None and svc.pid != pid:
            self.host.unwatch(svc.pid)  # replaced before it was seen to die
        self.lc._track(pid)
        self.driver.watch_ready(svc)

    def on_spawn_failed(self, why: str) -> None:
        if self.svc.state == State.STARTING:
            self.svc.failure_hint = why
            self.lc._crashed()

    def on_ready(self, pid: int) -> None:
        svc = self.svc
        attempt = svc.reload
        if svc.state == State.RELOADING and attempt is not None:
            if pid == attempt.pid:
                self.lc._finish_reload(attempt)
            return
        if pid != svc.pid:
            return
        if svc.state == State.STARTING:
            self.lc._became_ready()
        elif svc.state == State.RELOADING and svc.reload_heard:
            # the reload protocol's end (RELOADING=1, then READY=1), as systemd's Type=notify-reload
            # reads it: a READY=1 before the RELOADING=1 is not this reload's
            self.lc._cancel_timer()
            self.lc._set_state(State.RUNNING, "reloaded")

    def on_reloading(self) -> None:
        """RELOADING=1: the answer to the reload signal, or a reload the service began by itself."""
        svc = self.svc
        if svc.state == State.RELOADING and svc.reload is None:
            svc.reload_heard = True
        elif svc.state == State.RUNNING:
            svc.reason = None
            svc.reload_heard = True
            self.lc._set_state(State.RELOADING, "the service reloads")

    def on_health(self, healthy: bool, reason: str | None) -> None:
        """The app's health check passes again, or fails: ready follows it; nothing is restarted
        (a busy service fails checks, and restarting it under load makes storms)."""
        svc = self.svc
        if not svc.state.up or svc.healthy == healthy:
            return
        first = svc.healthy is None
        svc.healthy, svc.health_reason = healthy, (None if healthy else reason)
        svc.ready = svc.state.up and svc.health_ok
        if healthy:
            self.host.say(svc.name, "health check passes: ready" if first else "health check passes again: ready", 5)
        else:
            self.host.say(svc.name, f"not ready: {reason} (it keeps running; nothing is restarted for it)", 4)
        self.host.touched(svc)

    def on_status_text(self, text: str) -> None:
        self.svc.status_text = text
        self.host.touched(self.svc)

    def on_exit(self, pid: int, status: int | None) -> None:
        svc = self.svc
        attempt = svc.reload
        if attempt is not None and pid == attempt.pid:
            if svc.state == State.RELOADING:
                why = svc.failure_hint or "the new instance exited before it was ready"
                if svc.last_exception:
                    why += f": {svc.last_exception}"
                self.lc._cancel_timer()
                self.lc._abandon_reload(why)
                self.lc._set_state(State.RUNNING, f"reload failed: {why}")
            return
        if pid != svc.pid:
            return
        svc.pid = None
        svc.last_exit = describe_wait_status(status) if status is not None else None
        not_its_fault = self.driver.exited(svc, pid, status)
        if svc.state == State.STOPPING:
            self.lc._finish_stop()
        elif self.host.shutting_down:
            return
        elif not_its_fault:
            svc.reason = not_its_fault  # what took it down brings it back (a Lost event)
            self.host.touched(svc)
        else:
            self.lc._crashed()

    def on_lost(self, why: str) -> None:
        """What ran the process died with it and was started again: so is the service."""
        svc = self.svc
        if not (svc.goal_running and svc.state.active and svc.state != State.STOPPING):
            return
        if svc.pid is not None:
            self.host.unwatch(svc.pid)
            svc.pid = None
        svc.reload = None
        svc.restarts += 1
        if svc.state != State.STARTING:
            self.lc._set_state(State.STARTING, why)
        self.lc._begin_start()

    def on_adopted(self, event: Adopted) -> None:
        """A process a previous daemon left running: ours now, with its history when it is the same one."""
        svc = self.svc
        if svc.pid is not None:
            return
        svc.instance = event.instance
        svc.goal_running = True
        svc.adopted = True
        self.lc._track(event.pid)
        svc.up_since, svc.ready_duration = event.up_since, event.ready_duration
        svc.started_at = self.host.clock.monotonic()
        self.lc._set_state(State.STARTING, "adopted from the previous daemon")
        if event.changed:
            self.host.say(svc.name, "definition changed while the daemon was away: restarting it")
            self.driver.prepare(svc)
            self.lc._begin_stop(then_start=True)
        elif event.ready:
            self.lc._became_ready()
        else:
            self.driver.watch_ready(svc)

    def on_line(self, text: str) -> None:
        """Facts from its output: why it is going down, the exception it reported."""
        svc = self.svc
        for part in text.splitlines():
            failure = self.driver.on_line(svc, part)
            if failure is not None:
                svc.failure_hint = failure.reason
                svc.config_error = not failure.retry_helps
            exc = svc.exceptions.feed(part)
            if exc:
                svc.last_exception = exc

    # -- what it comes after ------------------------------------------------------------------
