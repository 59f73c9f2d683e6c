"""The supervisor: one queue, one lifecycle per service, the drivers that run them.

Commands from operators, a new manifest, exits, readiness reports and
timers are all events on one queue, handled one at a time by `_handle`:
a command that arrives while another is being applied waits its turn and
never fails for it. Each service's `Lifecycle` is the only code that
changes its state; drivers and observers report events (`events.py`) and
read records. What spans services lives here: dependencies (`after`), a
manifest applied while services of the old one stop, and the daemon's
own start and stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import supervisor.state.statefile as statefile
from supervisor.config import Config
from supervisor.layout import DAEMON_NAME, Layout
from supervisor.logs.pipeline import Drops
from supervisor.manifest.models import Manifest, runner
from supervisor.observe.cgroups import ServiceGroups
from supervisor.state.drivers import Context
from supervisor.state.events import (
    Command,
    Event,
    Launched,
    Reconcile,
    Timeout,
)
from supervisor.state.exits import MainExits
from supervisor.state.lifecycle import Lifecycle
from supervisor.state.probe_tokens import ProbeTokens
from supervisor.state.rollover import Rollover
from supervisor.state.routes import LogRoutes
from supervisor.state.service import LogLine, ServiceRuntime
from supervisor.state.states import State
from supervisor.state.views import describe
from supervisor.state.waiters import Result

if TYPE_CHECKING:
    from supervisor.listeners import HeldSockets
    from supervisor.logs.pipeline import LogIntake
    from supervisor.manifest.models import Service
    from supervisor.observe.health import HealthChecks
    from supervisor.observe.sampler import Sampler
    from supervisor.observe.watcher import ExitWatcher
    from supervisor.state.drivers import Driver
    from supervisor.state.reconcile import Applied
    from supervisor.surfaces.systemd import Systemd

log = logging.getLogger("wsgi-supervisor")

_LEVELS = {3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
VERBS = ("start", "stop", "restart", "reload")


@dataclass(frozen=True)
class Collaborators:
    """What the composition root (main.py, wiring.py) builds around a supervisor, from its callbacks."""

    drivers: dict[str, Driver]  # by what runs a service's processes (manifest.models.runner), in the hooks' order
    sampler: Sampler
    sockets: HeldSockets
    intake: LogIntake
    health: HealthChecks
    systemd: Systemd


class Supervisor:
    def __init__(
        self,
        config: Config,
        manifest: Manifest,
        assemble: Callable[[Supervisor], Collaborators],
        watcher: ExitWatcher,
        groups: ServiceGroups | None = None,
    ):
        """`assemble` is the composition root's: it builds the drivers, the sampler, the log intake,
        the health checks and systemd's surface from the callbacks and `context` of this supervisor.
        `groups` are the services' control groups (main.py opens them before the emperor starts)."""
        self.config = config
        self.layout = Layout(config.runtime_dir)
        self.manifest = manifest
        self.loop = asyncio.get_running_loop()
        self.clock = time  # monotonic() and time(); a test passes its own
        self.queue: asyncio.Queue[Event | Reconcile] = asyncio.Queue()
        self.watcher = watcher
        self.tasks: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.leaving = False  # --stop-drain: the daemon is stopping; every /health answers 503
        self.started_at = time.time()
        self.metrics_address: str | None = None
        self.last_reload_ok: bool | None = None
        self.last_reload_success: float | None = None
        self.logs = LogRoutes(self)  # every line of output, to its tail and the sinks
        self.state_listeners: list[Any] = []
        self.drops = Drops()
        self._save_pending = False
        self.lifecycles: dict[str, Lifecycle] = {}
        self.rollover = Rollover(self)  # a new manifest; the lifecycles still stopping after it
        self.probe_tokens = ProbeTokens(statefile.load(self.layout).get("probe_tokens"))
        wiring = (self.loop, config, self.layout, self.watcher, self.report, self.say, self.spawn_task, self.records)
        self.groups = groups or ServiceGroups.unavailable("not set up")
        self.exits = MainExits(self.watcher, self.groups, self.report, self.say, self.spawn_task)
        self.context = Context(*wiring, tokens=self.probe_tokens, groups=self.groups)
        parts = assemble(self)
        self.drivers = parts.drivers
        self.sampler = parts.sampler
        self.sockets = parts.sockets
        self.intake = parts.intake
        self.health = parts.health
        self.systemd = parts.systemd
        for name, spec in manifest.services.items():
            self.lifecycles[name] = self.make_lifecycle(name, spec)
        self.spawn_task(self.run(), "supervisor")

    def make_lifecycle(self, name: str, spec: Service) -> Lifecycle:
        return Lifecycle(ServiceRuntime(name, spec), self.drivers[runner(spec)], self)

    @property
    def services(self) -> dict[str, ServiceRuntime]:
        return {name: lc.svc for name, lc in self.lifecycles.items()}

    def records(self) -> Iterable[ServiceRuntime]:
        """Every record, a retiring one before its successor (so that by name, the successor's wins)."""
        return [lc.svc for lc in (*self.rollover.retiring.values(), *self.lifecycles.values())]

    # -- plumbing ------------------------------------------------------------------------

    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task %s failed", task.get_name(), exc_info=task.exception())

    def say(self, name: str, text: str, priority: int = 6) -> None:
        """A message of the daemon about one service, in that service's log."""
        log.log(_LEVELS.get(priority, logging.INFO), "%s: %s", name, text)
        self.logs.emit(LogLine(time.time(), name, "d", text, priority))

    # -- what lifecycles need of the supervisor (lifecycle.Host) --------------------------------

    def future(self) -> Result:
        return self.loop.create_future()

    def arm(self, delay: float, event: Timeout) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, self.report, event)

    def watch(self, svc: ServiceRuntime, pid: int) -> None:
        self.exits.watch(svc, pid)

    def unwatch(self, pid: int) -> None:
        self.exits.unwatch(pid)

    def pending_for(self, svc: ServiceRuntime) -> list[str]:
        pending = [d for d in svc.spec.after if d in self.lifecycles and self.lifecycles[d].svc.state != State.RUNNING]
        if self.rollover.waits_for_predecessor(svc.name):
            pending.append("its previous definition to stop")
        return pending

    def start_dependencies(self, svc: ServiceRuntime) -> None:
        for dep in svc.spec.after:
            lc = self.lifecycles.get(dep)
            if lc is not None and not lc.svc.goal_running:
                lc.start()

    def state_changed(self, svc: ServiceRuntime, old: State) -> None:
        current = self.lifecycles.get(svc.name)
        if current is None or current.svc is not svc:
            # a service the manifest no longer has (as it was): nothing depends on it any more
            self.rollover.state_changed(svc, current=False)
            return
        self.health.watch(svc)
        self.rollover.state_changed(svc, current=True)
        dependents = [lc for n in self.manifest.dependents(svc.name) if (lc := self.lifecycles.get(n))]
        if svc.state == State.RUNNING:
            if not any(lc.svc.state == State.STARTING for lc in self.lifecycles.values()):
                # once per wave of starts, when its last one is up: a sample per service coming
                # up took 40% of the daemon's CPU in a cold start of 20 APIs, beside the vassals
                self.sampler.soon()
            for lc in dependents:
                lc.begin_start()
        elif svc.state in (State.FAILED, State.STOPPED):
            for lc in dependents:
                lc.dependency_down(svc.name, svc.state)
        self.touched(svc)

    def touched(self, svc: ServiceRuntime) -> None:
        """Tell the observers of a service's record: systemd, `wsgictl supervise` watchers, the state file."""
        self.systemd.changed(svc)
        self.save_soon()
        for listener in list(self.state_listeners):
            listener(svc)

    # -- the queue -------------------------------------------------------------------------------

    def report(self, event: Event | Reconcile) -> None:
        self.queue.put_nowait(event)

    async def run(self) -> None:
        """The one consumer of the queue: every state change happens in here, one event at a time."""
        while True:
            event = await self.queue.get()
            try:
                self._handle(event)
            except Exception as exc:  # one bad event must not stop the daemon, nor leave its caller waiting
                log.exception("handling %r failed", event)
                reply = getattr(event, "reply", None)
                if reply is not None and not reply.done():
                    reply.set_exception(exc)

    def _handle(self, event: Event | Reconcile) -> None:
        if isinstance(event, Reconcile):
            self.rollover.apply(event)
            return
        if isinstance(event, Command) and event.verb == "shut-down":
            self._shut_down(event.reply)
            return
        if isinstance(event, Timeout):
            for lc in (self.lifecycles.get(event.name), self.rollover.retiring.get(event.name)):
                if lc is not None:
                    lc.on_timeout(event)
            return
        lc = self._target(event)
        if lc is None:
            if isinstance(event, (Command, Launched)):
                event.reply.set_result((False, f"{event.name} is not in the manifest"))
            return
        if isinstance(event, Command):
            self._command(lc, event)
        else:
            lc.react(event)

    def _target(self, event: Event) -> Lifecycle | None:
        """The lifecycle an event is about: a retiring one when the pid is its own."""
        old = self.rollover.retiring.get(event.name)
        pid = getattr(event, "pid", None)
        if old is not None and pid is not None and pid in (old.svc.pid, old.svc.reload and old.svc.reload.pid):
            return old
        return self.lifecycles.get(event.name)

    def _command(self, lc: Lifecycle, event: Command) -> None:
        outcome = lc.start(settle_in_backoff=True) if event.verb == "boot" else getattr(lc, event.verb)()
        if event.verb in ("drain", "undrain"):
            self.save_state()  # operator intent: on disk before the answer, a daemon killed next keeps it
        outcome.add_done_callback(lambda f: event.reply.done() or event.reply.set_result(f.result()))

    # -- commands (the control socket, the boot, signals) ----------------------------------------

    async def take_manifest(self, manifest: Manifest) -> Applied:
        """Apply only the difference: changed services restart (APIs on their kept socket),
        removed ones stop, new ones start; the others are not touched (state/rollover.py).
        Returns once the queue has taken the manifest, with the changes under way."""
        reply: asyncio.Future[Applied] = self.loop.create_future()
        self.report(Reconcile(manifest, reply))
        return await reply

    async def apply_manifest(self, manifest: Manifest) -> dict[str, Any]:
        """`take_manifest`, then wait until every change has its result (reconcile.outcome)."""
        return await (await self.take_manifest(manifest)).outcome

    def command(self, verb: str, name: str) -> Result:
        """Queue an operator's verb; the future settles when it is done (ready, stopped, failed)."""
        reply: Result = self.loop.create_future()
        self.report(Command(name, verb, reply))
        return reply

    async def launched(self, name: str, pid: int, instance: str) -> tuple[bool, str]:
        """A vassal's launcher asks whether its master may run."""
        reply: Result = self.loop.create_future()
        self.report(Launched(name, pid, instance, reply))
        return await reply

    def start_enabled(self) -> list[Result]:
        return [
            self.command("boot", name)
            for name in self.manifest.start_order()
            if self.lifecycles[name].svc.spec.enabled and not self.lifecycles[name].svc.state.active
        ]

    # -- start-up, re-exec and shut-down --------------------------------------------------------------

    async def attach(self) -> None:
        """Take over what a previous daemon (or image, after a re-exec) left running."""
        statefile.restore_counts(self.layout, self.lifecycles, self.sampler)
        kept = statefile.load(self.layout)
        reexec = bool(os.environ.pop("WSGI_SUPERVISOR_REEXEC", None))
        for attach in self.hooks("attach"):
            await attach(kept, reexec)
        self.probe_tokens.adopted_all()

    def save_soon(self) -> None:
        """Write the state file within 0.2 s (one write for every change meanwhile)."""
        if not self._save_pending:
            self._save_pending = True
            self.loop.call_later(0.2, self.save_state)

    def save_state(self, handover: dict[str, Any] | None = None) -> None:
        self._save_pending = False
        statefile.save(self.layout, self.records(), self.sampler, handover, self.probe_tokens.to_json())

    def reexec(self) -> None:
        """Replace this daemon's program with itself (after an upgrade), costing no service anything.

        The pid stays, so the emperor and the workers stay our children and
        systemd keeps its main process; the new image adopts the vassals as
        after any restart, and takes the workers' output pipes over.
        """
        handover: dict[str, Any] = {}
        for hand_over in self.hooks("handover"):
            handover.update(hand_over())
        self.save_state(handover=handover)
        log.info("re-executing %s", " ".join(sys.argv))
        os.environ["WSGI_SUPERVISOR_REEXEC"] = "1"
        os.execv(sys.argv[0], sys.argv)

    async def shut_down(self, timeout: float | None = None) -> None:
        """Stop every service gracefully and at once, then the emperor."""
        reply: asyncio.Future[list[Result]] = self.loop.create_future()
        self.shutting_down = True
        self.report(Command(DAEMON_NAME, "shut-down", reply))  # in its turn, after what is queued
        stops = await reply
        everyone = (*self.lifecycles.values(), *self.rollover.retiring.values())
        bound = timeout if timeout is not None else max((lc.svc.spec.stop_timeout for lc in everyone), default=1)
        if stops:
            _done, pending = await asyncio.wait(stops, timeout=bound)
            if pending:
                for lc in everyone:
                    lc.kill("did not stop in time")
                await asyncio.wait(pending, timeout=2)
        self.health.close()
        for finish in self.hooks("shut_down"):
            await finish()
        self.save_state()  # the last counts, for the next daemon
        for driver in self.drivers.values():
            driver.close()
        self.sockets.close()

    def hooks(self, name: str) -> list[Any]:
        """An optional driver method (state/drivers.py `Hooks`), of every driver that has it, in order."""
        return [hook for driver in self.drivers.values() if (hook := getattr(driver, name, None)) is not None]

    def _shut_down(self, reply: asyncio.Future[list[Result]]) -> None:
        everyone = (*self.lifecycles.values(), *self.rollover.retiring.values())
        reply.set_result([f for lc in everyone if (f := lc.shut_down()) is not None])

    # -- views ----------------------------------------------------------------------------------------

    def status(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = list(names) if names else sorted(self.lifecycles)
        return [self.describe(self.lifecycles[n].svc) for n in chosen]

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        """Where clients reach the service (an API's socket), or None."""
        return self.drivers[runner(svc.spec)].endpoint(svc)

    def describe(self, svc: ServiceRuntime) -> dict[str, Any]:
        return describe(svc, self.drivers[runner(svc.spec)], self.sampler)
