"""One service's lifecycle: the only code that changes a service's record.

It turns commands (start, stop, restart, reload) and the events its driver
and timers report into state changes and driver calls. Every change goes
through `_set_state`, which logs it and tells the supervisor. It never asks
what kind of service it drives: that is the driver's business.

The supervisor calls these methods one event at a time from its queue, so
nothing here runs concurrently and nothing here awaits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from supervisor.observe.exceptions import ExceptionReader
from supervisor.state import waiters
from supervisor.state.drivers import Driver
from supervisor.state.events import Event, Timeout
from supervisor.state.host import Host
from supervisor.state.reactions import Reactions
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.state.states import State, allowed
from supervisor.state.waiters import OK_START, STOPPED_ONLY, Result

log = logging.getLogger("wsgi-supervisor")

MIN_UPTIME = 10.0  # a crash after this long up is not a failed start
BACKOFF_BASE = 1.0


def backoff_delay(failures: int, cap: float) -> float:
    """1, 2, 4… seconds between attempts, never more than `cap` (the service's `backoff_max`)."""
    return min(cap, BACKOFF_BASE * 2 ** min(30, max(0, failures - 1)))


class Lifecycle:
    def __init__(self, svc: ServiceRuntime, driver: Driver, host: Host):
        self.svc = svc
        self.driver = driver
        self.host = host
        self._token: object | None = None
        svc.exceptions = ExceptionReader()
        self.reactions = Reactions(self)  # what the driver reports (reactions.py)

    def react(self, event: Event) -> None:
        """One event from the supervisor's queue about this service's processes."""
        self.reactions.react(event)

    def on_line(self, text: str) -> None:
        """A line of the service's output."""
        self.reactions.on_line(text)

    # -- the one place that changes state -----------------------------------------------

    def _set_state(self, state: State, reason: str | None = None) -> None:
        svc = self.svc
        old = svc.state
        if not allowed(old, state):
            log.error("%s: unexpected state change %s -> %s", svc.name, old, state)
        svc.state = state
        svc.since = self.host.clock.time()
        if not state.up:
            svc.healthy, svc.health_reason = None, None  # a new process answers afresh
        svc.ready = state.up and svc.health_ok
        if reason is not None:
            svc.reason = reason
        if old != state:
            text = f"{old} -> {state}" + (f" ({reason})" if reason else "")
            self.host.say(svc.name, text, 3 if state == State.FAILED else 6)
        waiters.resolve(self.svc)
        self.host.state_changed(svc, old)

    def _wait_for(self, ok_states: frozenset[State], settle_in_backoff: bool = False) -> Result:
        return waiters.wait(self.svc, self.host.future(), ok_states, settle_in_backoff)

    def _starting(self, reason: str) -> None:
        """In `starting`, with the reason saying what it waits for now (status shows it)."""
        if self.svc.state != State.STARTING:
            self._set_state(State.STARTING, reason)
        elif self.svc.reason != reason:
            self.svc.reason = reason
            self.host.touched(self.svc)

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, what: str, delay: float) -> None:
        self._cancel_timer()
        self._token = token = object()
        self.svc.timer = self.host.arm(delay, Timeout(self.svc.name, what, token))

    def _cancel_timer(self) -> None:
        self._token = None
        self.svc.cancel_timer()

    def on_timeout(self, event: Timeout) -> None:
        if event.token is not self._token:
            return  # cancelled after it fired
        self._token = None
        self.svc.timer = None
        handler: Callable[[], None] = getattr(self, f"_{event.what}_timed_out")
        handler()

    # -- commands ----------------------------------------------------------------------------

    def start(self, settle_in_backoff: bool = False) -> Result:
        """Start it (and what it comes after); settles once it is ready or `failed` (with
        `settle_in_backoff`, also once an attempt failed: the daemon keeps retrying)."""
        svc = self.svc
        svc.goal_running = True
        if svc.state in (State.FAILED, State.STOPPED):
            svc.failures = 0
        self.host.start_dependencies(svc)
        if svc.state == State.STOPPING:
            svc.restart_pending = True
        elif svc.state in (State.BACKOFF, State.STOPPED, State.FAILED):
            self._begin_start()
        return self._wait_for(OK_START, settle_in_backoff)

    def stop(self) -> Result:
        svc = self.svc
        svc.goal_running = False
        svc.restart_pending = False
        if svc.state in (State.BACKOFF, State.FAILED):
            self._cancel_timer()
            self.driver.disable(svc)
            self.driver.release(svc)
            self._set_state(State.STOPPED)
        elif svc.state == State.STOPPED:
            self._set_state(State.STOPPED)  # fails waiters of a pending start
        elif svc.state != State.STOPPING:
            self._begin_stop()
        return self._wait_for(STOPPED_ONLY)

    def restart(self) -> Result:
        svc = self.svc
        if svc.state in (State.STARTING, State.RUNNING, State.RELOADING) and svc.pid is not None:
            svc.goal_running = True
            self._begin_stop(then_start=True)
            return self._wait_for(OK_START)
        if svc.state == State.STOPPING:
            svc.goal_running = True
            svc.restart_pending = True
            return self._wait_for(OK_START)
        return self.start()

    def reload(self) -> Result:
        """New code without a gap: a second instance that takes over, or the process's own reload."""
        svc = self.svc
        if svc.state in (State.RELOADING, State.STARTING):
            return self._wait_for(OK_START)  # a starting service loads the current code anyway
        if svc.state != State.RUNNING:
            return waiters.done(self.host.future(), False, f"{svc.name} is {svc.state}, not running: nothing to reload")
        svc.failure_hint = None
        svc.last_exception = None
        try:
            attempt = self.driver.reload(svc)
        except (OSError, ValueError) as exc:
            return waiters.done(self.host.future(), False, f"cannot reload: {exc}")
        if attempt is False:
            return waiters.done(self.host.future(), False, f"{svc.name}: the process did not take the reload request")
        svc.reason = None  # what the last reload came to is not this one's
        svc.reload_heard = False
        self._set_state(State.RELOADING)
        if isinstance(attempt, ReloadAttempt):
            svc.reload = attempt
            self.driver.watch_ready(svc)
        elif not self.driver.reports_reload(svc):
            # as systemd counts a Type=notify service's `ExecReload=kill -HUP`: done once the
            # signal is delivered (oslo.service says READY=1 once, at start, and never again)
            self._set_state(State.RUNNING, "reloaded: signal delivered")
            return self._wait_for(OK_START)
        self._arm("reload", svc.spec.start_timeout)
        return self._wait_for(OK_START)

    def drain(self) -> Result:
        """Out of the load balancer's rotation (its /health answers 503); it serves whatever reaches it."""
        return self._set_drained(True)

    def undrain(self) -> Result:
        return self._set_drained(False)

    def _set_drained(self, drained: bool) -> Result:
        svc = self.svc
        if svc.drained != drained:
            svc.drained = drained
            said = "drained: out of rotation, still serving" if drained else "undrained: back in rotation"
            self.host.say(svc.name, said, 5)
            self.host.touched(svc)
        return waiters.done(self.host.future(), True, "drained" if drained else "in rotation")

    def remove(self) -> Result:
        """Taken out of the manifest: stopped for good."""
        return self.stop()

    # -- transitions ---------------------------------------------------------------------------

    def dependency_down(self, name: str, state: State) -> None:
        svc = self.svc
        if svc.waiting_for and name in svc.waiting_for and svc.state == State.STARTING:
            svc.waiting_for = ()
            svc.goal_running = False
            self._set_state(State.STOPPED, f"{name} is {state}")

    def begin_start(self) -> None:
        """Start now if nothing it waits for is pending (the supervisor calls this when one is done)."""
        if self.svc.goal_running and self.svc.waiting_for and self.svc.state == State.STARTING:
            self._begin_start()

    def _begin_start(self) -> None:
        svc = self.svc
        self._cancel_timer()
        svc.next_retry = None
        svc.failure_hint = None
        svc.config_error = False
        svc.last_exception = None
        pending = self.host.pending_for(svc)
        if pending:
            # not started yet: it waits in `starting`, its process not asked for
            svc.waiting_for = tuple(pending)
            self._starting(f"waiting for {', '.join(pending)}")
            return
        svc.waiting_for = ()
        try:
            self.driver.prepare(svc)
        except (OSError, ValueError, KeyError) as exc:
            svc.goal_running = False
            if svc.state != State.STARTING:
                self._set_state(State.STARTING)
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            self._set_state(State.FAILED, f"cannot start: {why}")
            return
        svc.started_at = self.host.clock.monotonic()
        svc.ready_at = None
        self._starting(self.driver.awaiting(svc))
        self._arm("start", svc.spec.start_timeout)
        self.driver.launch(svc)

    def _begin_stop(self, then_start: bool = False) -> None:
        svc = self.svc
        self._cancel_timer()
        svc.restart_pending = then_start
        if then_start:
            svc.reason = None  # a restart begins: why the last start or reload ended is not its reason
        if svc.waiting_for and svc.pid is None:
            svc.waiting_for = ()  # never launched: nothing to stop
            self._set_state(State.STOPPED)
            return
        if not then_start:
            self.driver.disable(svc)
        self._abandon_reload("stopped")
        self._set_state(State.STOPPING)
        if not self.driver.ask_stop(svc) and svc.pid is None:
            # asked for but not launched yet: the launcher will be refused
            self._finish_stop()
            return
        self._arm("stop", svc.spec.stop_timeout)

    def _finish_stop(self) -> None:
        svc = self.svc
        self._cancel_timer()
        if svc.restart_pending and svc.goal_running and not self.host.shutting_down:
            svc.restart_pending = False
            svc.restarts += 1
            self._set_state(State.STARTING)
            self._begin_start()
            return
        self.driver.disable(svc)
        self.driver.release(svc)
        self._set_state(State.STOPPED)

    def _became_ready(self) -> None:
        svc = self.svc
        self._cancel_timer()
        now = self.host.clock.monotonic()
        svc.ready_at = now
        if not svc.adopted or svc.up_since is None:  # an adopted process keeps its own history
            svc.up_since = self.host.clock.time()
            if svc.started_at is not None:
                svc.ready_duration = now - svc.started_at
        svc.adopted = False
        svc.next_retry = None
        svc.reason = None
        svc.failure_hint = None  # up after all: a later crash is not "not ready after…"
        self._set_state(State.RUNNING)
        self._arm("stable", MIN_UPTIME)  # a start that lasts is no longer a failure

    def _crashed(self) -> None:
        svc = self.svc
        self._cancel_timer()
        now = self.host.clock.monotonic()
        uptime = now - (svc.ready_at or svc.started_at or now)
        was_ready = svc.ready_at is not None
        if svc.failure_hint:
            why = svc.failure_hint + (f": {svc.last_exception}" if svc.last_exception else "")
        else:
            why = self.driver.describe_exit(svc)
        svc.ready_at = None
        if was_ready and uptime >= MIN_UPTIME:
            # a healthy service died: bring it back at once, no failure counted
            svc.failures = 0
            svc.restarts += 1
            self.host.say(svc.name, f"died after {uptime:.0f}s up: {why}; starting it again", 4)
            self._set_state(State.STARTING, why)
            self._begin_start()
            return
        svc.failures += 1
        svc.last_failure = why
        self.driver.disable(svc)
        # refuse connections while it cannot serve: the front end answers 502/503 at once
        self.driver.release(svc)
        if svc.config_error:
            # the definition itself is wrong: no number of retries can help
            svc.goal_running = False
            self._set_state(State.FAILED, f"{why}; not retried: fix the manifest, then `wsgictl start`")
            return
        limit = svc.spec.start_limit
        if limit and svc.failures >= limit:
            svc.goal_running = False
            self._set_state(State.FAILED, f"{why}; gave up after {svc.failures} failed starts (start_limit)")
            return
        # what failed may need something that is not there yet (a database
        # after a reboot): keep trying, ever more slowly, up to backoff_max
        delay = backoff_delay(svc.failures, svc.spec.backoff_max)
        svc.next_retry = self.host.clock.time() + delay
        self._set_state(State.BACKOFF, f"{why}; attempt {svc.failures} failed, next in {delay:.0f}s")
        self._arm("retry", delay)

    def _abandon_reload(self, why: str) -> None:
        """The new instance did not come up (or is no longer wanted): the current one goes on."""
        attempt = self.svc.reload
        if attempt is None:
            return
        self.svc.reload = None
        if attempt.pid is not None:
            self.host.unwatch(attempt.pid)
        self.driver.abandon(self.svc, attempt)
        waiters.settle(self.svc, f"reload failed, still serving the previous code: {why}")

    def _finish_reload(self, attempt: ReloadAttempt) -> None:
        svc = self.svc
        assert attempt.pid is not None
        self._cancel_timer()
        old_pid = svc.pid
        svc.reload = None
        svc.instance = attempt.instance
        if old_pid is not None:
            self.host.unwatch(old_pid)
        self._track(attempt.pid)
        svc.up_since = self.host.clock.time()
        self.driver.switch(svc, attempt, old_pid)
        self._set_state(State.RUNNING, "reloaded")

    def _track(self, pid: int) -> None:
        self.svc.pid = pid
        self.host.watch(self.svc, pid)

    # -- timers firing ---------------------------------------------------------------------------

    def _retry_timed_out(self) -> None:
        if self.svc.state == State.BACKOFF and self.svc.goal_running:
            self.svc.restarts += 1
            self._begin_start()

    def _start_timed_out(self) -> None:
        svc = self.svc
        if svc.state != State.STARTING or svc.waiting_for:
            return
        svc.failure_hint = f"not ready after {svc.spec.start_timeout:g}s"
        if svc.pid is not None:
            # the exit is handled as a crash; a last look that finds it serving reports Ready instead
            self.driver.kill_unready(svc, svc.failure_hint)
        else:
            self.host.say(svc.name, svc.failure_hint, 3)
            self._crashed()

    def _stop_timed_out(self) -> None:
        svc = self.svc
        if svc.state == State.STOPPING and svc.pid is not None:
            self.driver.kill(svc, f"still up {svc.spec.stop_timeout:g}s after the stop request")

    def _reload_timed_out(self) -> None:
        svc = self.svc
        if svc.state != State.RELOADING:
            return
        if svc.reload is not None:
            why = f"the new instance was not ready after {svc.spec.start_timeout:g}s"
            self._abandon_reload(why)
            self._set_state(State.RUNNING, f"reload failed: {why}")
        else:
            said = "" if svc.reload_heard else " (it sent no RELOADING=1 after the signal)"
            self.host.say(svc.name, f"reload did not finish in time{said}; counting it as done", 4)
            self._set_state(State.RUNNING, "reload timed out" + said)

    def _stable_timed_out(self) -> None:
        if self.svc.ready_at is not None and self.svc.state.up:
            self.svc.failures = 0

    # -- the daemon stops ---------------------------------------------------------------------

    def shut_down(self) -> Result | None:
        """Stop for the daemon's own stop: every service at once; None when it is down already."""
        svc = self.svc
        svc.goal_running = False
        svc.restart_pending = False
        self._cancel_timer()
        self.driver.disable(svc)
        self._abandon_reload("the daemon stops")
        if svc.state in (State.STARTING, State.RUNNING, State.RELOADING, State.STOPPING):
            if svc.state != State.STOPPING:
                self._set_state(State.STOPPING)
                self.driver.ask_stop(svc)
            future = self._wait_for(STOPPED_ONLY)
            if svc.pid is None:
                self._finish_stop()
            return future
        if svc.state in (State.BACKOFF, State.FAILED):
            self.driver.release(svc)
            self._set_state(State.STOPPED)
        return None

    def kill(self, why: str) -> None:
        if self.svc.pid is not None:
            self.driver.kill(self.svc, why)
