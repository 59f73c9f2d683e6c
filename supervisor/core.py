"""The supervisor: one owner of every service's state.

Control requests, exits, launches, readiness observations and timers all
end up in the synchronous handlers below, which run one at a time on the
event loop. They decide, change state through `_set_state` (the one place
that does), and ask a driver to act. Drivers and observers never change
state themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

from . import uwsgi
from .config import Config
from .emperor import Emperor
from .layout import Layout
from .logs import DAEMON_NAME, Drops, LogIntake
from .manifest import Manifest
from .procs import alive, describe_wait_status, signal_tree
from .sampler import Sampler
from .service import TAIL_LINES, LogLine, ServiceRuntime, Waiter
from .states import State, allowed
from .systemd import Systemd
from .vassals import VassalDriver
from .watcher import ExitWatcher
from .workers import ProcessDriver

log = logging.getLogger("wsgi-supervisor")

MIN_UPTIME = 10.0  # a crash after this long up is not a failed start
BACKOFF_BASE = 1.0
# readiness probes while starting or reloading: woken by the log line that says a
# worker loaded the app; this is only the fallback, so 100 services starting at
# once do not keep the daemon busy reading stats
PROBE_INTERVAL = 1.0
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL

OK_START = frozenset({State.RUNNING})
STOPPED_ONLY = frozenset({State.STOPPED})
END_START = frozenset({State.FAILED, State.STOPPED})


def backoff_delay(failures: int, cap: float) -> float:
    """1, 2, 4… seconds between attempts, never more than `cap` (the service's `backoff_max`)."""
    return min(cap, BACKOFF_BASE * 2 ** min(30, max(0, failures - 1)))


class Supervisor:
    def __init__(self, config: Config, manifest: Manifest, emperor: Emperor | None = None):
        self.config = config
        self.layout = Layout(config.runtime_dir)
        self.manifest = manifest
        self.services: dict[str, ServiceRuntime] = {
            name: ServiceRuntime(name, spec) for name, spec in manifest.services.items()
        }
        self.loop = asyncio.get_running_loop()
        self.watcher = ExitWatcher(self.loop)
        self.emperor = emperor or Emperor(self.layout)
        self.vassals = VassalDriver(self)
        self.workers = ProcessDriver(self)
        self.intake = LogIntake(self)
        self.daemon_tail: deque[LogLine] = deque(maxlen=TAIL_LINES)
        self.drops = Drops()
        self.systemd = Systemd(self)
        self.sampler = Sampler(self, config.sample_interval)
        self.started_at = time.time()
        self.metrics_address: str | None = None
        self._state_pending = False
        self.state_listeners: list[Any] = []
        self.config_reloads = 0
        self.last_reload_ok: bool | None = None
        self.last_reload_success: float | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.probe_wakeups: dict[str, asyncio.Event] = {}
        self.log_sinks: list[Any] = []
        self.emperor_restarts = 0

    # -- plumbing ----------------------------------------------------------------

    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task %s failed", task.get_name(), exc_info=task.exception())

    def driver(self, svc: ServiceRuntime) -> VassalDriver | ProcessDriver:
        return self.vassals if svc.kind == "api" else self.workers

    def say(self, svc: ServiceRuntime, text: str, priority: int = 6) -> None:
        """A message of the daemon about one service, in that service's log."""
        log.log(_LEVELS.get(priority, logging.INFO), "%s: %s", svc.name, text)
        self.emit(LogLine(time.time(), svc.name, "d", text, priority))

    def emit(self, line: LogLine) -> None:
        """Every line of every service, and of the daemon, passes through here."""
        svc = self.services.get(line.service)
        if svc is not None:
            svc.tail.append(line)
            if line.stream == "o":
                self._learn_from_line(svc, line.text)
        elif line.service == DAEMON_NAME:
            self.daemon_tail.append(line)
        for sink in self.log_sinks:
            sink(line)

    def kind_of(self, name: str) -> str:
        svc = self.services.get(name)
        return svc.kind if svc is not None else "daemon"

    def _learn_from_line(self, svc: ServiceRuntime, text: str) -> None:
        for part in text.splitlines():
            hint = uwsgi.failure_hint(part)
            if hint:
                svc.failure_hint = hint
                svc.config_error = hint.startswith("unknown uWSGI option")
            exc = svc.extra.setdefault("exceptions", uwsgi.ExceptionReader()).feed(part)
            if exc:
                svc.last_exception = exc
            if uwsgi.app_loaded(part):
                wake = self.probe_wakeups.get(svc.name)
                if wake is not None:
                    wake.set()

    # -- state -------------------------------------------------------------------

    def _set_state(self, svc: ServiceRuntime, state: State, reason: str | None = None) -> None:
        old = svc.state
        if not allowed(old, state):
            log.error("%s: unexpected state change %s -> %s", svc.name, old, state)
        svc.state = state
        svc.since = time.time()
        svc.ready = state in (State.RUNNING, State.RELOADING)
        if reason is not None:
            svc.reason = reason
        if old != state:
            text = f"{old} -> {state}" + (f" ({reason})" if reason else "")
            self.say(svc, text, priority=3 if state == State.FAILED else 6)
        if state in (State.STARTING, State.RELOADING) and svc.kind == "api":
            self._ensure_probe(svc)
        self._resolve_waiters(svc)
        if state == State.RUNNING:
            self._start_waiting_dependents(svc)
        elif state in (State.FAILED, State.STOPPED):
            self._fail_waiting_dependents(svc)
        self.on_change(svc)

    def on_change(self, svc: ServiceRuntime) -> None:
        """Tell the observers of state changes: systemd, `wsgictl supervise` watchers, the state file."""
        self.systemd.changed(svc)
        self.save_soon()
        for listener in list(self.state_listeners):
            listener(svc)

    def save_soon(self) -> None:
        """Write the state file within 0.2 s (one write for every change meanwhile)."""
        if not self._state_pending:
            self._state_pending = True
            self.loop.call_later(0.2, self.save_state)

    def _resolve_waiters(self, svc: ServiceRuntime) -> None:
        keep = []
        for waiter in svc.waiters:
            future, ok_states = waiter.future, waiter.ok_states
            if future.done():
                continue
            if svc.state in ok_states:
                future.set_result((True, str(svc.state)))
            elif ok_states == OK_START and svc.state in END_START:
                future.set_result((False, svc.reason or str(svc.state)))
            elif ok_states == OK_START and svc.state == State.BACKOFF and waiter.settle_in_backoff:
                future.set_result((False, f"in backoff, the daemon keeps retrying: {svc.reason}"))
            elif ok_states == STOPPED_ONLY and svc.goal_running and svc.state == State.STARTING:
                future.set_result((False, "started again by another request"))
            else:
                keep.append(waiter)
        svc.waiters = keep

    def _wait(
        self, svc: ServiceRuntime, ok_states: frozenset[State], settle_in_backoff: bool = False
    ) -> asyncio.Future[tuple[bool, str]]:
        future: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
        if svc.state in ok_states:
            future.set_result((True, str(svc.state)))
        else:
            svc.waiters.append(Waiter(future, ok_states, settle_in_backoff))
        return future

    # -- commands ------------------------------------------------------------------

    def start(self, name: str, settle_in_backoff: bool = False) -> asyncio.Future[tuple[bool, str]]:
        """Start `name` (and what it comes after); resolves once it is ready or `failed`
        (with `settle_in_backoff`, also once an attempt failed: the daemon keeps retrying)."""
        svc = self.services[name]
        svc.goal_running = True
        if svc.state in (State.FAILED, State.STOPPED):
            svc.failures = 0
        for dep in svc.spec.after:
            dep_svc = self.services.get(dep)
            if dep_svc is not None and not dep_svc.goal_running:
                self.start(dep)
        if svc.state == State.STOPPING:
            svc.restart_pending = True
        elif svc.state == State.BACKOFF:
            svc.cancel_timer()
            self._begin_start(svc)
        elif svc.state in (State.STOPPED, State.FAILED):
            self._begin_start(svc)
        return self._wait(svc, OK_START, settle_in_backoff)

    def stop(self, name: str) -> asyncio.Future[tuple[bool, str]]:
        svc = self.services[name]
        svc.goal_running = False
        svc.restart_pending = False
        if svc.state in (State.BACKOFF, State.FAILED):
            svc.cancel_timer()
            self.driver(svc).disable(svc)
            self.driver(svc).release(svc)
            self._set_state(svc, State.STOPPED)
        elif svc.state == State.STOPPED:
            self._set_state(svc, State.STOPPED)  # fails waiters of a pending start
        elif svc.state != State.STOPPING:
            self._begin_stop(svc)
        return self._wait(svc, STOPPED_ONLY)

    def restart(self, name: str) -> asyncio.Future[tuple[bool, str]]:
        svc = self.services[name]
        if svc.state in (State.STARTING, State.RUNNING, State.RELOADING) and svc.pid is not None:
            svc.goal_running = True
            self._begin_stop(svc, then_start=True)
            return self._wait(svc, OK_START)
        if svc.state == State.STOPPING:
            svc.goal_running = True
            svc.restart_pending = True
            return self._wait(svc, OK_START)
        return self.start(name)

    def reload(self, name: str) -> asyncio.Future[tuple[bool, str]]:
        """Graceful reload: new workers with new code, the socket never closed."""
        svc = self.services[name]
        if svc.state in (State.RELOADING, State.STARTING):
            # a starting service loads the current code anyway
            return self._wait(svc, OK_START)
        if svc.state != State.RUNNING:
            future: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
            future.set_result((False, f"{name} is {svc.state}, not running: nothing to reload"))
            return future
        return self._begin_reload(svc)

    # -- transitions -----------------------------------------------------------------

    def _deps_pending(self, svc: ServiceRuntime) -> list[str]:
        return [d for d in svc.spec.after if d in self.services and self.services[d].state != State.RUNNING]

    def _begin_start(self, svc: ServiceRuntime) -> None:
        svc.cancel_timer()
        svc.next_retry = None
        pending = self._deps_pending(svc)
        svc.failure_hint = None
        svc.config_error = False
        svc.last_exception = None
        if pending:
            # not started yet: it waits in `starting`, its process not asked for
            svc.extra["waiting_for"] = pending
            self._starting(svc, f"waiting for {', '.join(pending)}")
            return
        svc.extra.pop("waiting_for", None)
        drv = self.driver(svc)
        try:
            drv.prepare(svc)
        except (OSError, ValueError) as exc:
            svc.goal_running = False
            if svc.state != State.STARTING:
                self._set_state(svc, State.STARTING)
            self._set_state(svc, State.FAILED, f"cannot start: {exc}")
            return
        svc.started_at = time.monotonic()
        svc.ready_at = None
        self._starting(svc, drv.awaiting(svc))
        svc.timer = self.loop.call_later(svc.spec.start_timeout, self._start_timed_out, svc.name, svc.started_at)
        drv.launch(svc)

    def _starting(self, svc: ServiceRuntime, reason: str) -> None:
        """In `starting`, with the reason saying what it waits for now (status shows it)."""
        if svc.state != State.STARTING:
            self._set_state(svc, State.STARTING, reason)
        elif svc.reason != reason:
            svc.reason = reason
            self.on_change(svc)

    def _begin_stop(self, svc: ServiceRuntime, then_start: bool = False) -> None:
        svc.cancel_timer()
        svc.restart_pending = then_start
        drv = self.driver(svc)
        if svc.extra.pop("waiting_for", None) is not None and svc.pid is None:
            # never launched: nothing to stop
            self._set_state(svc, State.STOPPED)
            return
        if not then_start:
            drv.disable(svc)
        self._set_state(svc, State.STOPPING)
        if not drv.ask_stop(svc) and svc.pid is None:
            # asked for but not launched yet: the launcher will be refused
            self._finish_stop(svc)
            return
        svc.timer = self.loop.call_later(svc.spec.stop_timeout, self._stop_timed_out, svc.name, svc.pid)

    def _begin_reload(self, svc: ServiceRuntime) -> asyncio.Future[tuple[bool, str]]:
        if svc.kind == "api":
            return self._begin_vassal_reload(svc)
        if not self.workers.ask_reload(svc):
            future: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
            future.set_result((False, f"{svc.name}: the process did not take the reload request"))
            return future
        self._set_state(svc, State.RELOADING)
        if svc.kind == "worker" and not getattr(svc.spec, "notify", False):
            # it said nothing when it started, it will say nothing now: the signal is the reload
            self._set_state(svc, State.RUNNING, "reload signal sent")
            return self._wait(svc, OK_START)
        svc.timer = self.loop.call_later(svc.spec.start_timeout, self._reload_timed_out, svc.name)
        return self._wait(svc, OK_START)

    def _begin_vassal_reload(self, svc: ServiceRuntime) -> asyncio.Future[tuple[bool, str]]:
        """A second vassal on the same socket; the old one retires once the new one serves.

        No request waits (the old workers serve until the new ones accept) and
        none is lost (the old ones are paused before they stop). New code
        that cannot start leaves the old vassal serving.
        """
        other = "" if svc.instance else "b"
        svc.extra["reload"] = other
        svc.extra.pop("reload_pid", None)
        svc.failure_hint = None
        svc.last_exception = None
        try:
            self.vassals.start_second(svc, other)
        except (OSError, ValueError) as exc:
            svc.extra.pop("reload", None)
            future: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
            future.set_result((False, f"cannot reload: {exc}"))
            return future
        self._set_state(svc, State.RELOADING)
        svc.timer = self.loop.call_later(svc.spec.start_timeout, self._reload_timed_out, svc.name)
        return self._wait(svc, OK_START)

    def _reload_launched(self, svc: ServiceRuntime, pid: int) -> None:
        svc.extra["reload_pid"] = pid
        self.watcher.watch(pid, lambda p, status, name=svc.name: self._reload_vassal_exited(name, p))

    def _reload_vassal_exited(self, name: str, pid: int) -> None:
        svc = self.services.get(name)
        if svc is None or svc.extra.get("reload_pid") != pid or svc.state != State.RELOADING:
            return
        why = svc.failure_hint or "the new vassal exited before it was ready"
        if svc.last_exception:
            why += f": {svc.last_exception}"
        self._abandon_reload(svc, why)

    def _abandon_reload(self, svc: ServiceRuntime, why: str) -> None:
        """The new vassal did not come up: the old one goes on serving."""
        svc.cancel_timer()
        instance = svc.extra.pop("reload", None)
        pid = svc.extra.pop("reload_pid", None)
        if instance is not None:
            self.vassals.remove_file(svc.name, instance)
        if pid is not None:
            self.watcher.unwatch(pid)
            signal_tree(pid, signal.SIGKILL)
            self.sampler.master_gone(svc.name, pid)
        for waiter in svc.waiters:
            if not waiter.future.done():
                waiter.future.set_result((False, f"reload failed, still serving the previous code: {why}"))
        svc.waiters = []
        self._set_state(svc, State.RUNNING, f"reload failed: {why}")

    def _finish_vassal_reload(self, svc: ServiceRuntime, stats: uwsgi.VassalStats) -> None:
        svc.cancel_timer()
        old_pid, old_instance = svc.pid, svc.instance
        new_pid = svc.extra.pop("reload_pid")
        svc.instance = svc.extra.pop("reload")
        self.watcher.unwatch(new_pid)
        if old_pid is not None:
            self.watcher.unwatch(old_pid)
        self._track(svc, new_pid)
        svc.extra["stats"] = stats
        svc.up_since = time.time()
        if old_pid is not None:
            self.vassals.retire(svc, old_instance, old_pid)
        self._set_state(svc, State.RUNNING, "reloaded")

    def _finish_stop(self, svc: ServiceRuntime) -> None:
        svc.cancel_timer()
        drv = self.driver(svc)
        if svc.restart_pending and svc.goal_running and not self.shutting_down:
            svc.restart_pending = False
            svc.restarts += 1
            self._set_state(svc, State.STARTING)
            self._begin_start(svc)
            return
        drv.disable(svc)
        drv.release(svc)
        self._set_state(svc, State.STOPPED)

    # -- events ----------------------------------------------------------------------

    def on_launched(self, name: str, pid: int, instance: str = "") -> tuple[bool, str]:
        """A vassal's launcher called in: `pid` is the new master. May it run?"""
        svc = self.services.get(name)
        if svc is None:
            return False, f"{name} is not in the manifest"
        if instance != svc.instance:
            if svc.state == State.RELOADING and svc.extra.get("reload") == instance:
                self._reload_launched(svc, pid)
                return True, "ok"
            return False, f"{name}: vassal {instance or 'a'} is not wanted"
        restarting = svc.state == State.STOPPING and svc.restart_pending
        if not svc.goal_running or (
            svc.state not in (State.STARTING, State.RUNNING, State.RELOADING) and not restarting
        ):
            return False, f"{name} is {svc.state}"
        if svc.extra.get("waiting_for"):
            return False, f"{name} waits for {', '.join(svc.extra['waiting_for'])}"
        if svc.state == State.STOPPING and svc.restart_pending and svc.goal_running:
            # the emperor brought the new master before we saw the old one exit
            if svc.pid is not None:
                self.watcher.unwatch(svc.pid)
                svc.pid = None
            self._finish_stop(svc)
        if svc.pid is not None and svc.pid != pid:
            # the emperor replaced a master we had not seen die yet
            self.watcher.unwatch(svc.pid)
        self._track(svc, pid)
        if svc.state != State.STARTING:
            svc.restarts += 1
            svc.started_at = time.monotonic()
            self._set_state(svc, State.STARTING, "the emperor started a new master")
        return True, "ok"

    def on_spawned(self, svc: ServiceRuntime, pid: int) -> None:
        """A worker's process is up (not ready yet)."""
        self._track(svc, pid)
        spec = svc.spec
        if not getattr(spec, "notify", False):
            delay = getattr(spec, "ready_after", 0.0)
            svc.extra["ready_timer"] = self.loop.call_later(delay, self._ready_by_timer, svc.name, pid)

    def on_spawn_failed(self, svc: ServiceRuntime, why: str) -> None:
        if svc.state != State.STARTING:
            return
        svc.failure_hint = why
        self._crashed(svc)

    def _ready_by_timer(self, name: str, pid: int) -> None:
        svc = self.services[name]
        svc.extra.pop("ready_timer", None)
        if svc.pid == pid and svc.state == State.STARTING:
            self._became_ready(svc)

    def on_notify(self, svc: ServiceRuntime, fields: dict[str, str]) -> None:
        """sd_notify fields from a worker's NOTIFY_SOCKET."""
        if "STATUS" in fields:
            svc.status_text = fields["STATUS"]
            self.on_change(svc)
        if fields.get("RELOADING") == "1" and svc.state == State.RUNNING:
            self._set_state(svc, State.RELOADING, "the worker reloads")
        if fields.get("READY") == "1":
            if svc.state == State.STARTING and svc.pid is not None:
                self._became_ready(svc)
            elif svc.state == State.RELOADING:
                svc.cancel_timer()
                self._set_state(svc, State.RUNNING, "reloaded")

    def _track(self, svc: ServiceRuntime, pid: int) -> None:
        svc.pid = pid
        self.watcher.watch(pid, lambda p, status, name=svc.name: self.on_exit(name, p, status))

    def on_exit(self, name: str, pid: int, status: int | None) -> None:
        svc = self.services.get(name)
        if svc is None or svc.pid != pid:
            return
        svc.pid = None
        svc.extra.pop("stats", None)
        timer = svc.extra.pop("ready_timer", None)
        if timer is not None:
            timer.cancel()
        svc.last_exit = describe_wait_status(status) if status is not None else None
        if svc.kind == "worker":
            self.workers.reaped(svc, status)
        else:
            self.sampler.master_gone(name, pid)
        if svc.state == State.STOPPING:
            self._finish_stop(svc)
            return
        if self.shutting_down:
            return
        if svc.kind == "api" and not self.emperor_alive():
            # not the app's fault: the emperor's death took the vassal along
            svc.reason = "the emperor died"
            return
        self._crashed(svc)

    def _crashed(self, svc: ServiceRuntime) -> None:
        svc.cancel_timer()
        uptime = time.monotonic() - (svc.ready_at or svc.started_at or time.monotonic())
        was_ready = svc.ready_at is not None
        why = svc.failure_hint or (svc.last_exit if svc.kind == "worker" and svc.last_exit else "exited unexpectedly")
        if svc.last_exception and (svc.failure_hint or svc.kind == "worker"):
            why += f": {svc.last_exception}"
        elif svc.last_exit and svc.kind == "api":
            why += f" ({svc.last_exit})"
        svc.ready_at = None
        if was_ready and uptime >= MIN_UPTIME:
            # a healthy service died: bring it back at once, no failure counted
            svc.failures = 0
            svc.restarts += 1
            self.say(svc, f"died after {uptime:.0f}s up: {why}; starting it again", priority=4)
            self._set_state(svc, State.STARTING, why)
            self._begin_start(svc)
            return
        svc.failures += 1
        svc.last_failure = why
        drv = self.driver(svc)
        drv.disable(svc)
        # refuse connections while it cannot serve: the front end answers 502/503 at once
        drv.release(svc)
        limit = svc.spec.start_limit
        if svc.config_error:
            # the manifest itself is wrong: no number of retries can help
            svc.goal_running = False
            self._set_state(svc, State.FAILED, f"{why}; not retried: fix the manifest, then `wsgictl start`")
            return
        if limit and svc.failures >= limit:
            svc.goal_running = False
            self._set_state(svc, State.FAILED, f"{why}; gave up after {svc.failures} failed starts (start_limit)")
            return
        # what failed may need something that is not there yet (a database
        # after a reboot): keep trying, ever more slowly, up to backoff_max
        delay = backoff_delay(svc.failures, svc.spec.backoff_max)
        svc.next_retry = time.time() + delay
        self._set_state(svc, State.BACKOFF, f"{why}; attempt {svc.failures} failed, next in {delay:.0f}s")
        svc.timer = self.loop.call_later(delay, self._retry, svc.name)

    def _retry(self, name: str) -> None:
        svc = self.services[name]
        svc.timer = None
        if svc.state == State.BACKOFF and svc.goal_running:
            svc.restarts += 1
            self._begin_start(svc)

    def _start_timed_out(self, name: str, started_at: float) -> None:
        svc = self.services[name]
        svc.timer = None
        if svc.state != State.STARTING or svc.started_at != started_at or svc.extra.get("waiting_for"):
            return
        svc.failure_hint = f"not ready after {svc.spec.start_timeout:g}s"
        if svc.pid is not None:
            self.driver(svc).kill(svc, svc.failure_hint)  # the exit is handled as a crash
        else:
            self.say(svc, svc.failure_hint, priority=3)
            self._crashed(svc)

    def _stop_timed_out(self, name: str, pid: int | None) -> None:
        svc = self.services[name]
        svc.timer = None
        if svc.state == State.STOPPING and svc.pid is not None and svc.pid == pid:
            self.driver(svc).kill(svc, f"still up {svc.spec.stop_timeout:g}s after the stop request")

    def _reload_timed_out(self, name: str) -> None:
        svc = self.services[name]
        svc.timer = None
        if svc.state != State.RELOADING:
            return
        if svc.kind == "api":
            self._abandon_reload(svc, f"the new vassal was not ready after {svc.spec.start_timeout:g}s")
        else:
            self.say(svc, "reload did not finish in time; counting it as done", priority=4)
            self._set_state(svc, State.RUNNING, "reload timed out")

    def on_observed(self, svc: ServiceRuntime, stats: uwsgi.VassalStats) -> None:
        """A stats sample of an API's vassal (the serving one, or the one a reload starts)."""
        if svc.state == State.RELOADING and stats.pid == svc.extra.get("reload_pid") and stats.pid:
            if stats.serving:
                self._finish_vassal_reload(svc, stats)
            return
        if stats.pid != svc.pid:
            return
        svc.extra["stats"] = stats
        self.sampler.observe_vassal(svc, stats)
        if svc.state == State.STARTING and stats.serving:
            self._became_ready(svc)

    def _became_ready(self, svc: ServiceRuntime) -> None:
        svc.cancel_timer()
        now = time.monotonic()
        svc.ready_at = now
        adopted = svc.extra.pop("adopted", False)
        if not adopted or svc.up_since is None:  # an adopted vassal keeps its own history
            svc.up_since = time.time()
            if svc.started_at is not None:
                svc.ready_duration = now - svc.started_at
        svc.next_retry = None
        svc.reason = None
        self._set_state(svc, State.RUNNING)
        # a start that lasts is no longer a failure
        svc.timer = self.loop.call_later(MIN_UPTIME, self._stable, svc.name, now)

    def _stable(self, name: str, ready_at: float) -> None:
        svc = self.services[name]
        svc.timer = None
        if svc.ready_at == ready_at and svc.state.up:
            svc.failures = 0

    # -- dependencies --------------------------------------------------------------------

    def _start_waiting_dependents(self, svc: ServiceRuntime) -> None:
        for name in self.manifest.dependents(svc.name):
            dep = self.services[name]
            if dep.goal_running and dep.extra.get("waiting_for") and not self._deps_pending(dep):
                self._begin_start(dep)

    def _fail_waiting_dependents(self, svc: ServiceRuntime) -> None:
        for name in self.manifest.dependents(svc.name):
            dep = self.services[name]
            if dep.extra.get("waiting_for") and svc.name in dep.extra["waiting_for"] and dep.state == State.STARTING:
                dep.extra.pop("waiting_for", None)
                dep.goal_running = False
                self._set_state(dep, State.STOPPED, f"{svc.name} is {svc.state}")

    # -- readiness probes ------------------------------------------------------------------

    def _ensure_probe(self, svc: ServiceRuntime) -> None:
        if svc.name in self.probe_wakeups:
            return
        self.probe_wakeups[svc.name] = asyncio.Event()
        self.spawn_task(self._probe(svc), f"probe-{svc.name}")

    async def _probe(self, svc: ServiceRuntime) -> None:
        """Sample a vassal's stats while it starts or reloads.

        Woken early by the log line that says a worker loaded the app, then
        sampled in a short burst, since the worker accepts a moment later.
        """
        wake = self.probe_wakeups[svc.name]
        try:
            while svc.state in (State.STARTING, State.RELOADING) and not self.shutting_down:
                woke = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_INTERVAL):
                        await wake.wait()
                        woke = True
                wake.clear()
                for pause in (0.0, 0.01, 0.03, 0.06) if woke else (0.0,):
                    await asyncio.sleep(pause)
                    if svc.pid is None or svc.extra.get("waiting_for"):
                        break
                    reloading = svc.state == State.RELOADING
                    instance = svc.extra.get("reload", svc.instance) if reloading else svc.instance
                    stats = await self.vassals.stats(svc.name, instance)
                    if stats is not None:
                        self.on_observed(svc, stats)
                    if svc.state not in (State.STARTING, State.RELOADING):
                        break
        finally:
            self.probe_wakeups.pop(svc.name, None)

    # -- emperor -------------------------------------------------------------------------------

    def emperor_alive(self) -> bool:
        pid = self.emperor.pid
        return pid is not None and alive(pid)

    def _watch_emperor(self) -> None:
        assert self.emperor.pid is not None
        self.watcher.watch(self.emperor.pid, self._emperor_exited)

    def _emperor_exited(self, pid: int, status: int | None) -> None:
        if self.shutting_down or pid != self.emperor.pid:
            return
        how = describe_wait_status(status) if status is not None else "gone"
        log.error("the uWSGI emperor (pid %d) died (%s): starting a new one", pid, how)
        self.emperor_restarts += 1
        self.emperor.spawn()
        log.info("emperor started (pid %d)", self.emperor.pid)
        self._watch_emperor()
        for svc in self.services.values():
            if svc.kind == "api" and svc.goal_running and svc.state.active and svc.state != State.STOPPING:
                if svc.pid is not None:
                    self.watcher.unwatch(svc.pid)
                    svc.pid = None
                svc.restarts += 1
                if svc.state != State.STARTING:
                    self._set_state(svc, State.STARTING, "the emperor died and was started again")
                self._begin_start(svc)

    # -- what a next daemon should know ---------------------------------------------------------

    def save_state(self, workers: dict[str, dict[str, int]] | None = None) -> None:
        """Counts that should outlive this daemon (kept in the runtime dir, atomically);
        with `workers`, what a re-exec hands over to the next image."""
        self._state_pending = False
        state = {
            name: {
                "restarts": svc.restarts,
                "up_since": svc.up_since,
                "ready_duration": svc.ready_duration,
                "pid": svc.pid,
                "instance": svc.instance,
                "totals": self.sampler.totals[name].to_json() if name in self.sampler.totals else None,
            }
            for name, svc in self.services.items()
        }
        from .vassals import write_atomic

        try:
            body = {"services": state, "workers": workers or {}, "reexec": workers is not None}
            write_atomic(self.layout.state_file, json.dumps(body), mode=0o600)
        except OSError as exc:
            log.warning("cannot save the state file: %s", exc)

    def load_state(self) -> dict[str, dict[str, Any]]:
        return self._state_file().get("services", {})

    def _state_file(self) -> dict[str, Any]:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def reexec(self) -> None:
        """Replace this daemon's program with itself (after an upgrade), costing no service anything.

        The pid stays, so the emperor and the workers stay our children and
        systemd keeps its main process; the new image adopts the vassals as
        after any restart, and takes the workers' output pipes over.
        """
        self.save_state(workers=self.workers.handover())
        log.info("re-executing %s", " ".join(sys.argv))
        os.environ["WSGI_SUPERVISOR_REEXEC"] = "1"
        os.execv(sys.argv[0], sys.argv)

    def _adopt_workers(self) -> None:
        state = self._state_file()
        if not state.get("reexec") or not os.environ.pop("WSGI_SUPERVISOR_REEXEC", None):
            return
        for name, kept in state.get("workers", {}).items():
            svc = self.services.get(name)
            pid, fd = int(kept["pid"]), int(kept["fd"])
            if svc is None or svc.kind != "worker" or not alive(pid):
                with contextlib.suppress(OSError):
                    os.close(fd)
                continue
            svc.goal_running = True
            self.workers.adopt(svc, pid, fd)
            self._track(svc, pid)
            svc.extra["adopted"] = True
            svc.up_since = state.get("services", {}).get(name, {}).get("up_since")
            self._set_state(svc, State.STARTING, "adopted after a re-exec")
            self._became_ready(svc)
            log.info("%s: adopted worker (pid %d)", name, pid)

    # -- start-up and shut-down ------------------------------------------------------------------

    def check_socket_paths(self) -> None:
        longest = max((len(str(self.layout.stats_socket(n, "b"))) for n in self.services), default=0)
        if longest > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"the runtime dir {self.layout.runtime_dir} is too long: unix socket paths under it "
                f"would pass {MAX_SOCKET_PATH} bytes; use a shorter --runtime-dir"
            )

    async def attach_emperor(self) -> None:
        """Watch the emperor started (or adopted) before the manifest was read; adopt what runs."""
        how = "adopted the running emperor" if self.emperor.adopted else "emperor started"
        log.info("%s (pid %d)", how, self.emperor.pid)
        self._watch_emperor()
        self._restore_counts()
        if self.emperor.adopted:
            await self._adopt_vassals()
            self._adopt_workers()

    def _restore_counts(self) -> None:
        """Counters carry on from what the previous daemon saved (a re-exec, a crash, a restart):
        they never go down while the runtime dir lives."""
        from .sampler import Totals

        for name, kept in self.load_state().items():
            svc = self.services.get(name)
            if svc is None or not isinstance(kept, dict):
                continue
            svc.restarts = int(kept.get("restarts") or 0)
            if svc.kind == "api" and isinstance(kept.get("totals"), dict):
                self.sampler.totals[name] = Totals.from_json(kept["totals"])

    async def _adopt_vassals(self) -> None:
        """Take over the vassals a previous daemon left serving."""
        seen = await self.emperor.stats(timeout=5.0)
        vassals = seen[1] if seen else {}
        previous = self.load_state()
        files = {f.stem: f for f in self.layout.vassal_dir.glob("*.ini")}
        for ident, file in files.items():
            await asyncio.sleep(0)  # control requests are answered meanwhile, one vassal at a time
            name, _, instance = ident.partition(".")
            svc = self.services.get(name)
            vassal = vassals.get(ident)
            if svc is None or svc.kind != "api" or vassal is None or vassal.pid <= 0:
                # not ours any more, or not running: the normal start decides
                file.unlink()
                continue
            if svc.pid is not None:
                # both vassals of a reload that the previous daemon did not finish:
                # keep the one it had switched to, retire the other
                keep_new = previous.get(name, {}).get("instance") == instance
                if not keep_new:
                    self.vassals.retire(svc, instance, vassal.pid)
                    continue
                self.vassals.retire(svc, svc.instance, svc.pid)
                self.watcher.unwatch(svc.pid)
                svc.pid = None
            svc.instance = instance
            svc.goal_running = True
            self.vassals.install_launcher(svc)  # the emperor may start it again: with this version's launcher
            self.vassals.take_over_socket(name, vassal.pid)
            self._track(svc, vassal.pid)
            known = previous.get(name, {})
            svc.extra["adopted"] = True
            if known.get("pid") == vassal.pid:
                svc.up_since = known.get("up_since")
                svc.ready_duration = known.get("ready_duration")
            svc.started_at = time.monotonic()
            self._set_state(svc, State.STARTING, "adopted from the previous daemon")
            if svc.state == State.STARTING and self.vassals.render(svc) != file.read_text():
                # the manifest changed while no daemon ran: apply it
                self.say(svc, "definition changed while the daemon was away: restarting it")
                self.vassals.prepare(svc)
                self._begin_stop(svc, then_start=True)
            log.info("%s: adopted vassal (master pid %d)", name, vassal.pid)

    def start_enabled(self) -> list[asyncio.Future[tuple[bool, str]]]:
        return [
            self.start(name, settle_in_backoff=True)
            for name in self.manifest.start_order()
            if self.services[name].spec.enabled and not self.services[name].state.active
        ]

    async def shut_down(self, timeout: float | None = None) -> None:
        """Stop every service gracefully and at once, then the emperor."""
        self.shutting_down = True
        for svc in self.services.values():
            svc.goal_running = False
            svc.restart_pending = False
            svc.cancel_timer()
            self.driver(svc).disable(svc)
        stops = []
        for svc in self.services.values():
            if svc.extra.get("reload_pid"):
                self.vassals.retire(svc, svc.extra.pop("reload"), svc.extra.pop("reload_pid"))
            if svc.state in (State.STARTING, State.RUNNING, State.RELOADING, State.STOPPING):
                if svc.state != State.STOPPING:
                    self._set_state(svc, State.STOPPING)
                    self.driver(svc).ask_stop(svc)
                stops.append(self._wait(svc, STOPPED_ONLY))
                if svc.pid is None:
                    self._finish_stop(svc)
            elif svc.state in (State.BACKOFF, State.FAILED):
                self.driver(svc).release(svc)
                self._set_state(svc, State.STOPPED)
        bound = (
            timeout if timeout is not None else max((s.spec.stop_timeout for s in self.services.values()), default=1)
        )
        if stops:
            _done, pending = await asyncio.wait(stops, timeout=bound)
            if pending:
                for svc in self.services.values():
                    if svc.pid is not None:
                        self.driver(svc).kill(svc, "did not stop in time")
                await asyncio.wait(pending, timeout=2)
        await self._stop_emperor()
        self.save_state()  # the last counts, for the next daemon
        self.vassals.close()
        self.workers.close()

    async def _stop_emperor(self) -> None:
        pid = self.emperor.pid
        if pid is None:
            return
        # no vassal is left, so nothing is lost by not waiting for its slow
        # shutdown loop (a second per pass)
        gone = self.loop.create_future()
        self.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(s))
        self.emperor.signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone, 5)
        self.watcher.unwatch(pid)
        with contextlib.suppress(FileNotFoundError):
            self.layout.emperor_pidfile.unlink()
        self.emperor.pid = None

    # -- a new manifest ------------------------------------------------------------------------

    async def apply_manifest(self, manifest: Manifest) -> dict[str, Any]:
        """Apply only the difference: changed services restart (APIs on their kept
        socket), removed ones stop, new ones start; the others are not touched."""
        old, new = self.manifest.services, manifest.services
        removed = sorted(set(old) - set(new))
        added = sorted(set(new) - set(old))
        changed = sorted(n for n in set(old) & set(new) if old[n] != new[n])
        replaced = [n for n in changed if old[n].kind != new[n].kind]
        self.manifest = manifest
        waits: list[asyncio.Future[tuple[bool, str]]] = []
        for name in removed + replaced:
            waits.append(self.stop(name))
        if removed or replaced:
            await asyncio.wait(waits)
            waits = []
        for name in removed:
            self.driver(self.services[name]).release(self.services[name])
            del self.services[name]
            self.sampler.forget(name)
        for name in added + replaced:
            self.services[name] = ServiceRuntime(name, new[name])
            if new[name].enabled:
                waits.append(self.start(name))
        for name in changed:
            if name in replaced:
                continue
            svc = self.services[name]
            svc.spec = new[name]
            if svc.state in (State.STARTING, State.RUNNING, State.RELOADING) and svc.goal_running:
                self.say(svc, "definition changed: restarting it")
                waits.append(self.restart(name))
            elif svc.state == State.BACKOFF:
                waits.append(self.start(name))
        results = [await w for w in waits] if waits else []
        unchanged = len(set(old) & set(new)) - len(changed)
        log.info(
            "manifest applied: %d changed, %d added, %d removed, %d untouched",
            len(changed),
            len(added),
            len(removed),
            unchanged,
        )
        ok = all(r[0] for r in results)
        return {"ok": ok, "changed": changed, "added": added, "removed": removed, "unchanged": unchanged}

    # -- views --------------------------------------------------------------------------------

    def status(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = list(names) if names else sorted(self.services)
        return [self.describe(self.services[n]) for n in chosen]

    def describe(self, svc: ServiceRuntime) -> dict[str, Any]:
        spec = svc.spec
        info: dict[str, Any] = {
            "name": svc.name,
            "kind": svc.kind,
            "state": str(svc.state),
            "ready": svc.ready,
            "pid": svc.pid,
            "restarts": svc.restarts,
            "socket": str(self.layout.api_socket(svc.name)) if svc.kind == "api" else None,
            "mount": getattr(spec, "mount", None),
            "since": svc.since,
            "uptime": svc.uptime(),
            "reason": svc.reason,
            "last_exit": svc.last_exit,
            "failures": svc.failures,
            "next_retry": svc.next_retry,
            "status_text": svc.status_text,
            "ready_duration": svc.ready_duration,
        }
        stats = svc.extra.get("stats")
        if stats is not None:
            info["workers"] = [{"pid": w.pid, "status": w.status, "requests": w.requests} for w in stats.workers]
        sample = self.sampler.samples.get(svc.name)
        if sample is not None and svc.pid is not None:
            info["rss_bytes"] = sample.rss_bytes
            if svc.kind == "api":
                info["listen_queue"] = sample.listen_queue
        if svc.kind == "api":
            totals = self.sampler.totals_of(svc.name)
            info["requests"] = totals.value("requests")
            info["harakiri"] = totals.value("harakiri")
            info["worker_respawns"] = totals.respawns
            info["requests_killed"] = totals.killed
        return info


_LEVELS = {3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
