"""The lifecycle alone: a scripted driver and a fake clock, no process.

Each test replays a history of commands and driver reports and checks the
states, the reasons and the driver calls, as an operator would read them
in `wsgictl status` and the log. Fast: these run first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from supervisor.manifest.models import ApiService, WorkerService
from supervisor.state.drivers import Failure
from supervisor.state.events import Adopted, Timeout
from supervisor.state.lifecycle import MIN_UPTIME, Lifecycle
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.state.states import TRANSITIONS, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@dataclass
class Timer:
    due: float
    event: Timeout
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Host:
    """The supervisor as a lifecycle sees it, with time that moves only when the test says."""

    loop: asyncio.AbstractEventLoop
    clock: Clock = field(default_factory=Clock)
    shutting_down: bool = False
    timers: list[Timer] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    edges: set[tuple[State, State]] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    watched: set[int] = field(default_factory=set)
    lifecycles: list[Lifecycle] = field(default_factory=list)

    def future(self):
        return self.loop.create_future()

    def arm(self, delay, event):
        timer = Timer(self.clock.now + delay, event)
        self.timers.append(timer)
        return timer

    def pending_for(self, svc):
        return list(self.pending)

    def start_dependencies(self, svc):
        pass

    def state_changed(self, svc, old):
        self.edges.add((old, svc.state))

    def touched(self, svc):
        pass

    def say(self, name, text, priority=6):
        self.said.append(text)

    def watch(self, svc, pid):
        self.watched.add(pid)

    def unwatch(self, pid):
        self.watched.discard(pid)

    def advance(self, seconds: float) -> None:
        """Let time pass; timers that come due fire, in order, as the supervisor's queue would."""
        end = self.clock.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t.cancelled and t.due <= end), key=lambda t: t.due)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.clock.now = max(self.clock.now, timer.due)
            for lc in self.lifecycles:
                lc.on_timeout(timer.event)
        self.clock.now = end


@dataclass
class Driver:
    """Does nothing but remember what it was asked, and answers as the test scripts it."""

    calls: list[str] = field(default_factory=list)
    prepare_error: Exception | None = None
    reload_result: object = "attempt"
    reports: bool = True
    exit_cause: str | None = None

    def prepare(self, svc):
        self.calls.append("prepare")
        if self.prepare_error is not None:
            raise self.prepare_error

    def launch(self, svc):
        self.calls.append("launch")

    def awaiting(self, svc):
        return "waiting for the scripted process"

    def watch_ready(self, svc):
        self.calls.append("watch_ready")

    def ask_stop(self, svc):
        self.calls.append("ask_stop")
        return svc.pid is not None

    def kill(self, svc, why):
        self.calls.append(f"kill: {why}")

    def kill_unready(self, svc, why):
        self.kill(svc, why)

    def disable(self, svc):
        self.calls.append("disable")

    def release(self, svc):
        self.calls.append("release")

    def exited(self, svc, pid, status):
        self.calls.append(f"exited {pid}")
        return self.exit_cause

    def describe_exit(self, svc):
        return "exited unexpectedly"

    def reload(self, svc):
        self.calls.append("reload")
        if self.reload_result == "attempt":
            return ReloadAttempt("b")
        return self.reload_result

    def reports_reload(self, svc):
        return self.reports

    def switch(self, svc, attempt, old_pid):
        self.calls.append(f"switch {old_pid}->{attempt.pid}")

    def abandon(self, svc, attempt):
        self.calls.append(f"abandon {attempt.pid}")

    def on_line(self, svc, text):
        if "unknown option" in text:
            return Failure("unknown uWSGI option 'x'", retry_helps=False)
        if "failed to load" in text:
            return Failure("the app failed to load")
        return None

    def endpoint(self, svc):
        return None

    def close(self):
        pass


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make(loop, **spec):
    host = Host(loop)
    driver = Driver()
    service = ApiService(kind="api", app="x.y", **spec)
    lc = Lifecycle(ServiceRuntime("api", service), driver, host)
    host.lifecycles.append(lc)
    return lc, host, driver


def running(loop, **spec):
    lc, host, driver = make(loop, **spec)
    lc.start()
    lc.reactions.on_launched(100, "")
    lc.reactions.on_ready(100)
    assert lc.svc.state == State.RUNNING
    driver.calls.clear()
    return lc, host, driver


def test_a_start_launches_then_becomes_ready(loop):
    lc, host, driver = make(loop)
    done = lc.start()
    assert lc.svc.state == State.STARTING and lc.svc.reason == "waiting for the scripted process"
    assert driver.calls == ["prepare", "launch"]
    assert lc.reactions.on_launched(100, "") == (True, "ok")
    assert 100 in host.watched and driver.calls[-1] == "watch_ready"
    host.advance(0.5)
    lc.reactions.on_ready(100)
    assert lc.svc.state == State.RUNNING and lc.svc.ready and lc.svc.reason is None
    assert lc.svc.ready_duration == pytest.approx(0.5)
    assert done.result() == (True, "running")


def test_a_failed_start_backs_off_ever_longer_up_to_the_cap_and_keeps_trying(loop):
    lc, host, _driver = make(loop, backoff_max=5)
    done = lc.start()
    delays = []
    for _ in range(8):
        lc.reactions.on_launched(200, "")
        lc.on_line("unable to load app 0: failed to load")
        lc.on_line("RuntimeError: no database")
        lc.reactions.on_exit(200, None)
        assert lc.svc.state == State.BACKOFF
        delays.append(round(lc.svc.next_retry - host.clock.now))
        host.advance(delays[-1])
        assert lc.svc.state == State.STARTING  # tried again by itself
    assert delays == [1, 2, 4, 5, 5, 5, 5, 5]
    assert lc.svc.failures == 8 and not done.done()  # an operator's start waits through backoff
    assert "the app failed to load: RuntimeError: no database" in lc.svc.last_failure
    lc.reactions.on_launched(201, "")
    lc.reactions.on_ready(201)
    assert done.result() == (True, "running")


def test_a_boot_start_settles_at_the_first_failed_attempt(loop):
    lc, _host, _driver = make(loop)
    done = lc.start(settle_in_backoff=True)
    lc.reactions.on_launched(200, "")
    lc.reactions.on_exit(200, None)
    ok, message = done.result()
    assert not ok and "in backoff, the daemon keeps retrying" in message


def test_start_limit_ends_in_failed_and_a_config_error_is_not_retried(loop):
    lc, host, driver = make(loop, start_limit=2)
    lc.start()
    for pid in (1, 2):
        lc.reactions.on_launched(pid, "")
        lc.reactions.on_exit(pid, None)
        host.advance(60)
    assert lc.svc.state == State.FAILED and "gave up after 2 failed starts (start_limit)" in lc.svc.reason
    assert not lc.svc.goal_running and not [t for t in host.timers if not t.cancelled]

    lc, host, _driver = make(loop)
    lc.start()
    lc.reactions.on_launched(3, "")
    lc.on_line("[strict-mode] unknown option x")
    lc.reactions.on_exit(3, None)
    assert lc.svc.state == State.FAILED and "not retried: fix the manifest" in lc.svc.reason


def test_a_driver_that_cannot_prepare_fails_with_its_reason(loop):
    lc, _host, driver = make(loop)
    driver.prepare_error = ValueError("the user 'nova' does not exist on this host")
    ok, message = lc.start().result()
    assert not ok and lc.svc.state == State.FAILED
    assert message == "cannot start: the user 'nova' does not exist on this host"
    assert "launch" not in driver.calls


def test_a_crash_after_a_long_run_restarts_at_once_and_a_quick_one_backs_off(loop):
    lc, host, driver = running(loop)
    host.advance(MIN_UPTIME + 1)
    lc.reactions.on_exit(100, 9)
    assert lc.svc.state == State.STARTING and lc.svc.failures == 0 and lc.svc.restarts == 1
    assert driver.calls[-1] == "launch"
    lc.reactions.on_launched(101, "")
    lc.reactions.on_ready(101)
    host.advance(1)
    lc.reactions.on_exit(101, 9)
    assert lc.svc.state == State.BACKOFF and lc.svc.failures == 1


def test_stop_is_graceful_then_killed_after_stop_timeout(loop):
    lc, host, driver = running(loop, stop_timeout=3)
    done = lc.stop()
    assert lc.svc.state == State.STOPPING and driver.calls == ["disable", "ask_stop"]
    host.advance(3)
    assert driver.calls[-1] == "kill: still up 3s after the stop request"
    lc.reactions.on_exit(100, 9)
    assert lc.svc.state == State.STOPPED and done.result() == (True, "stopped")
    assert driver.calls[-2:] == ["disable", "release"]


def test_restart_stops_then_starts_on_the_kept_socket(loop):
    lc, _host, driver = running(loop)
    done = lc.restart()
    assert lc.svc.state == State.STOPPING and "disable" not in driver.calls  # the vassal file stays
    lc.reactions.on_exit(100, 0)
    assert lc.svc.state == State.STARTING and lc.svc.restarts == 1
    lc.reactions.on_launched(102, "")
    lc.reactions.on_ready(102)
    assert done.result() == (True, "running")


def test_a_reload_switches_to_the_new_instance_once_it_serves(loop):
    lc, _host, driver = running(loop)
    done = lc.reload()
    assert lc.svc.state == State.RELOADING and lc.svc.reload == ReloadAttempt("b")
    assert lc.reactions.on_launched(300, "b") == (True, "ok")
    assert lc.reactions.on_launched(301, "x") == (False, "api: instance x is not wanted")
    lc.reactions.on_ready(100)  # the old instance is still fine: nothing happens
    assert lc.svc.state == State.RELOADING
    lc.reactions.on_ready(300)
    assert lc.svc.state == State.RUNNING and lc.svc.pid == 300 and lc.svc.instance == "b"
    assert driver.calls[-1] == "switch 100->300" and lc.svc.reload is None
    assert done.result() == (True, "running")


def test_a_reload_whose_new_code_fails_leaves_the_old_serving(loop):
    lc, host, driver = running(loop)
    done = lc.reload()
    lc.reactions.on_launched(300, "b")
    lc.on_line("RuntimeError: broken new code")
    lc.reactions.on_exit(300, None)
    assert lc.svc.state == State.RUNNING and lc.svc.pid == 100
    assert done.result()[0] is False and "still serving the previous code" in done.result()[1]
    assert "RuntimeError: broken new code" in lc.svc.reason
    assert driver.calls[-1] == "abandon 300"

    done = lc.reload()
    host.advance(lc.svc.spec.start_timeout)
    assert lc.svc.state == State.RUNNING and "was not ready after" in lc.svc.reason
    assert done.result()[0] is False


def test_an_in_place_reload_waits_for_ready_only_when_the_service_can_say_so(loop):
    lc, _host, driver = running(loop)
    driver.reload_result, driver.reports = True, False
    assert lc.reload().result() == (True, "running")
    assert lc.svc.reason == "reloaded: signal delivered"

    # the reload protocol (systemd's Type=notify-reload): RELOADING=1, then READY=1
    driver.reports = True
    done = lc.reload()
    assert lc.svc.state == State.RELOADING and not done.done()
    lc.reactions.on_ready(100)  # a READY=1 before RELOADING=1 is not this reload's end
    assert lc.svc.state == State.RELOADING and not done.done()
    lc.reactions.on_reloading()
    assert lc.svc.state == State.RELOADING and not done.done()
    lc.reactions.on_ready(100)
    assert done.result() == (True, "running") and lc.svc.reason == "reloaded"

    driver.reload_result = False
    assert lc.reload().result() == (False, "api: the process did not take the reload request")


def test_a_new_reload_does_not_show_the_last_ones_outcome(loop):
    lc, host, driver = running(loop)
    driver.reload_result = True
    lc.reload()
    lc.reactions.on_reloading()
    host.advance(lc.svc.spec.start_timeout)
    assert lc.svc.state == State.RUNNING and lc.svc.reason == "reload timed out"
    lc.reload()
    assert lc.svc.state == State.RELOADING and lc.svc.reason is None
    lc.reactions.on_reloading()
    lc.reactions.on_ready(100)
    assert lc.svc.state == State.RUNNING and lc.svc.reason == "reloaded"

    driver.reload_result = "attempt"  # a second instance's reload that fails, then the next one
    lc.reload()
    host.advance(lc.svc.spec.start_timeout)
    assert "was not ready after" in lc.svc.reason
    lc.reload()
    assert lc.svc.state == State.RELOADING and lc.svc.reason is None
    lc.svc.reason = "reload failed: the last one"
    lc.restart()
    assert lc.svc.state == State.STOPPING and lc.svc.reason is None


def test_dependencies_hold_a_start_and_a_failed_dependency_stops_it(loop):
    lc, host, driver = make(loop)
    host.pending = ["keystone"]
    done = lc.start()
    assert lc.svc.state == State.STARTING and lc.svc.reason == "waiting for keystone"
    assert driver.calls == []
    assert lc.reactions.on_launched(5, "") == (False, "api waits for keystone")
    host.pending = []
    lc.begin_start()
    assert driver.calls == ["prepare", "launch"] and lc.svc.reason == "waiting for the scripted process"

    lc, host, driver = make(loop)
    host.pending = ["keystone"]
    done = lc.start()
    lc.dependency_down("keystone", State.FAILED)
    assert lc.svc.state == State.STOPPED and done.result() == (False, "keystone is failed")


def test_stop_and_start_from_backoff_and_failed(loop):
    lc, host, driver = make(loop, start_limit=1)
    lc.start()
    lc.reactions.on_launched(1, "")
    lc.reactions.on_exit(1, None)
    assert lc.svc.state == State.FAILED
    lc.start()
    assert lc.svc.state == State.STARTING and lc.svc.failures == 0
    lc.stop()
    assert lc.svc.state == State.STOPPED  # never launched: nothing to wait for

    lc, host, _driver = make(loop)
    lc.start()
    lc.reactions.on_launched(1, "")
    lc.reactions.on_exit(1, None)
    assert lc.svc.state == State.BACKOFF
    assert lc.stop().result() == (True, "stopped")
    host.advance(60)
    assert lc.svc.state == State.STOPPED  # the retry timer is gone


def test_adoption_keeps_history_and_a_changed_definition_restarts(loop):
    lc, host, driver = make(loop)
    lc.reactions.on_adopted(Adopted("api", 400, "b", up_since=50.0, ready_duration=0.3))
    assert lc.svc.state == State.STARTING and lc.svc.instance == "b" and lc.svc.goal_running
    lc.reactions.on_ready(400)
    assert lc.svc.state == State.RUNNING and lc.svc.up_since == 50.0 and lc.svc.ready_duration == 0.3

    lc, host, _driver = make(loop)
    lc.reactions.on_adopted(Adopted("api", 401, "", changed=True))
    assert lc.svc.state == State.STOPPING and lc.svc.restart_pending
    assert "definition changed while the daemon was away" in host.said[-2]


def test_lost_with_the_emperor_starts_again_and_is_no_crash(loop):
    lc, _host, driver = running(loop)
    driver.exit_cause = "the emperor died"
    lc.reactions.on_exit(100, None)
    assert lc.svc.state == State.RUNNING and lc.svc.reason == "the emperor died" and lc.svc.failures == 0
    lc.reactions.on_lost("the emperor died and was started again")
    assert lc.svc.state == State.STARTING and lc.svc.restarts == 1 and driver.calls[-1] == "launch"


def test_every_edge_of_the_state_model_is_taken(loop):
    """Together the histories above take every transition states.py allows (a missing one is untested)."""
    seen: set[tuple[State, State]] = set()
    for history in (
        test_a_start_launches_then_becomes_ready,
        test_a_failed_start_backs_off_ever_longer_up_to_the_cap_and_keeps_trying,
        test_start_limit_ends_in_failed_and_a_config_error_is_not_retried,
        test_a_driver_that_cannot_prepare_fails_with_its_reason,
        test_a_crash_after_a_long_run_restarts_at_once_and_a_quick_one_backs_off,
        test_stop_is_graceful_then_killed_after_stop_timeout,
        test_restart_stops_then_starts_on_the_kept_socket,
        test_a_reload_switches_to_the_new_instance_once_it_serves,
        test_a_reload_whose_new_code_fails_leaves_the_old_serving,
        test_dependencies_hold_a_start_and_a_failed_dependency_stops_it,
        test_stop_and_start_from_backoff_and_failed,
        test_adoption_keeps_history_and_a_changed_definition_restarts,
        test_lost_with_the_emperor_starts_again_and_is_no_crash,
        _more_edges,
    ):
        hosts: list[Host] = []
        original = Host.__init__

        def recording(self, *args, _original=original, _hosts=hosts, **kwargs):
            _original(self, *args, **kwargs)
            _hosts.append(self)

        Host.__init__ = recording  # type: ignore[method-assign]
        try:
            history(loop)
        finally:
            Host.__init__ = original  # type: ignore[method-assign]
        for host in hosts:
            seen |= host.edges
    allowed = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert allowed - seen == set()


def _more_edges(loop):
    """The edges no story above needs: a crash while reloading, a stop while starting, a worker's own reload."""
    lc, host, driver = running(loop)
    lc.reload()
    host.advance(MIN_UPTIME + 1)
    lc.reactions.on_exit(100, 9)  # the serving instance died during the reload
    assert lc.svc.state == State.STARTING
    lc.reactions.on_launched(101, "")
    lc.reactions.on_exit(101, 9)
    assert lc.svc.state == State.BACKOFF

    lc, host, driver = running(loop)
    lc.reload()
    host.advance(1)
    lc.reactions.on_exit(100, 9)
    assert lc.svc.state == State.BACKOFF  # from reloading, soon after ready
    lc, host, driver = running(loop, start_limit=1)
    lc.reload()
    lc.reactions.on_exit(100, 9)
    assert lc.svc.state == State.FAILED  # from reloading
    lc, host, driver = running(loop, start_limit=1)
    lc.reactions.on_exit(100, 9)
    assert lc.svc.state == State.FAILED  # from running
    assert lc.stop().result() == (True, "stopped")  # from failed

    lc, host, driver = make(loop)
    lc.start()
    lc.reactions.on_launched(7, "")
    lc.stop()
    assert lc.svc.state == State.STOPPING
    lc.reactions.on_exit(7, 0)
    lc, host, driver = running(loop)
    lc.reload()
    lc.stop()
    assert lc.svc.state == State.STOPPING and driver.calls[-2:] == ["abandon None", "ask_stop"]

    lc, host, driver = make(loop)
    lc.start()
    lc.reactions.on_launched(8, "")
    lc.reactions.on_ready(8)
    lc.reactions.on_reloading()  # a worker that reloads by itself (RELOADING=1)
    assert lc.svc.state == State.RELOADING
    lc.reactions.on_lost("the emperor died and was started again")
    assert lc.svc.state == State.STARTING  # from reloading
    lc.reactions.on_ready(8)
    lc.reactions.on_lost("again")
    assert lc.svc.state == State.STARTING  # from running


def test_a_worker_spec_goes_through_the_same_lifecycle(loop):
    host = Host(loop)
    driver = Driver()
    lc = Lifecycle(ServiceRuntime("w", WorkerService(kind="worker", command=("x",))), driver, host)
    lc.start()
    lc.reactions.on_spawned(55)
    assert 55 in host.watched and driver.calls[-1] == "watch_ready"
    lc.reactions.on_ready(55)
    assert lc.svc.state == State.RUNNING
