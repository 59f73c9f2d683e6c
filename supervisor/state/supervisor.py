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
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import supervisor.state.statefile as statefile
from supervisor.config import Config
from supervisor.gunicorn.driver import GunicornDriver
from supervisor.layout import DAEMON_NAME, Layout
from supervisor.listeners import HeldSockets
from supervisor.logs.pipeline import Drops, LogIntake
from supervisor.logs.requests import take_request
from supervisor.logs.senders import tree_owner
from supervisor.manifest.models import Manifest, runner
from supervisor.observe.cgroups import ServiceGroups, group_name
from supervisor.observe.health import HealthChecks
from supervisor.observe.sampler import Sampler
from supervisor.observe.watcher import ExitWatcher
from supervisor.state.drivers import Context, Driver
from supervisor.state.events import (
    Command,
    Event,
    Exited,
    Launched,
    Reconcile,
    Timeout,
)
from supervisor.state.lifecycle import Lifecycle
from supervisor.state.probe_tokens import ProbeTokens
from supervisor.state.rollover import ManifestChanges
from supervisor.state.service import TAIL_LINES, LogLine, ServiceRuntime
from supervisor.state.states import State
from supervisor.state.views import describe
from supervisor.state.waiters import Result
from supervisor.surfaces.systemd import Systemd
from supervisor.uwsgi.driver import VassalDriver
from supervisor.uwsgi.emperor import Emperor
from supervisor.workers.driver import ProcessDriver

if TYPE_CHECKING:
    from supervisor.manifest.models import Service

log = logging.getLogger("wsgi-supervisor")

_LEVELS = {3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
VERBS = ("start", "stop", "restart", "reload")
LEFTOVER_GRACE = 5.0  # seconds SIGKILLed processes may take to be gone (a task in D state)


class Supervisor(ManifestChanges):
    def __init__(
        self,
        config: Config,
        manifest: Manifest,
        emperor: Emperor | None = None,
        drivers: dict[str, Driver] | None = None,
        watcher: ExitWatcher | None = None,
        groups: ServiceGroups | None = None,
    ):
        """`drivers` and `watcher` replace the real ones in tests of the supervisor itself; `groups`
        are the services' control groups (main.py opens them before the emperor starts)."""
        self.config = config
        self.layout = Layout(config.runtime_dir)
        self.manifest = manifest
        self.loop = asyncio.get_running_loop()
        self.clock = time  # monotonic() and time(); a test passes its own
        self.queue: asyncio.Queue[Event | Reconcile] = asyncio.Queue()
        self.watcher = watcher or ExitWatcher(self.loop)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.leaving = False  # --stop-drain: the daemon is stopping; every /health answers 503
        self.started_at = time.time()
        self.metrics_address: str | None = None
        self.last_reload_ok: bool | None = None
        self.last_reload_success: float | None = None
        self.daemon_tail: deque[LogLine] = deque(maxlen=TAIL_LINES)
        self.log_sinks: list[Any] = []
        self.state_listeners: list[Any] = []
        self.drops = Drops()
        self._save_pending = False
        self.lifecycles: dict[str, Lifecycle] = {}
        self.retiring: dict[str, Lifecycle] = {}  # removed or replaced by a new manifest, still stopping
        # APIs moved to another server: the old one serves until its successor is running
        self.handovers: set[str] = set()
        self.probe_tokens = ProbeTokens(statefile.load(self.layout).get("probe_tokens"))
        wiring = (self.loop, config, self.layout, self.watcher, self.report, self.say, self.spawn_task, self._records)
        self.groups = groups or ServiceGroups.unavailable("not set up")
        context = Context(*wiring, tokens=self.probe_tokens, groups=self.groups)
        self.sockets = HeldSockets(self.layout, config.socket_mode, config.socket_gid)
        self.sampler = Sampler(context, self.save_soon, self.sockets)
        self.intake = LogIntake(
            self.loop, self.layout, self.emit, self._owner_of, self._known, self._noise, say=self.say
        )
        emperor = emperor or Emperor(self.layout)
        self.vassals = VassalDriver(context, self.sampler, emperor, self.sockets, self.intake.take)
        self.gunicorn = GunicornDriver(context, self.sampler, self.sockets, self.intake.take)
        self.workers = ProcessDriver(context, self.intake.take)
        # by what runs a service's processes (manifest.models.runner)
        self.drivers: dict[str, Driver] = drivers or {
            "uwsgi": self.vassals,
            "gunicorn": self.gunicorn,
            "process": self.workers,
        }
        self.health = HealthChecks(self.report, self.spawn_task, self.layout.api_socket, self.probe_tokens.of)
        self.systemd = Systemd(self.loop, config.units, self.spawn_task, self._records)
        for name, spec in manifest.services.items():
            self.lifecycles[name] = self._lifecycle(name, spec)
        self.spawn_task(self.run(), "supervisor")

    def _lifecycle(self, name: str, spec: Service) -> Lifecycle:
        return Lifecycle(ServiceRuntime(name, spec), self.drivers[runner(spec)], self)

    @property
    def services(self) -> dict[str, ServiceRuntime]:
        return {name: lc.svc for name, lc in self.lifecycles.items()}

    def _records(self) -> Iterable[ServiceRuntime]:
        """Every record, a retiring one before its successor (so that by name, the successor's wins)."""
        return [lc.svc for lc in (*self.retiring.values(), *self.lifecycles.values())]

    @property
    def emperor(self) -> Emperor:
        return self.vassals.emperor

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
        self.emit(LogLine(time.time(), name, "d", text, priority))

    def emit(self, line: LogLine) -> None:
        """Every line of every service, and of the daemon, passes through here."""
        lc = self.lifecycles.get(line.service)
        if line.request is not None and not take_request(lc.svc if lc is not None else None, line.request):
            return
        if lc is not None:
            lc.svc.tail.append(line)
            if line.stream == "o":
                lc.on_line(line.text)
        elif line.service == DAEMON_NAME:
            self.daemon_tail.append(line)
        for sink in self.log_sinks:
            sink(line)

    def kind_of(self, name: str) -> str:
        lc = self.lifecycles.get(name)
        return lc.svc.kind if lc is not None else "daemon"

    def _known(self, name: str) -> bool:
        return name in self.lifecycles or name in self.retiring

    def _noise(self, name: str, text: str) -> bool:
        """The routine line of a server, as the service's driver knows it (the emperor's: uWSGI's)."""
        lc = self.lifecycles.get(name)
        driver = lc.driver if lc is not None else self.vassals if name == DAEMON_NAME else None
        return driver is not None and driver.noise(text)

    def _owner_of(self, pid: int) -> str | None:
        """The service whose process tree holds `pid`: below its main process, the serving one or the
        new one of a reload."""
        mains = {}
        for svc in self._records():
            for main in (svc.pid, svc.reload.pid if svc.reload is not None else None):
                if main is not None:
                    mains[main] = svc.name
        return tree_owner(pid, mains)

    # -- what lifecycles need of the supervisor (lifecycle.Host) --------------------------------

    def future(self) -> Result:
        return self.loop.create_future()

    def arm(self, delay: float, event: Timeout) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, self.report, event)

    def watch(self, svc: ServiceRuntime, pid: int) -> None:
        attempt = svc.reload
        instance = attempt.instance if attempt is not None and attempt.pid == pid else svc.instance
        group = group_name(svc.name, runner(svc.spec), instance)
        self.watcher.watch(pid, lambda p, status: self._main_exited(svc, group, p, status))

    def _main_exited(self, svc: ServiceRuntime, group: str, pid: int, status: int | None) -> None:
        """A main process is gone: its exit counts once nothing is left in its control group, so
        that a stop is over only when every process of the service is, escaped or not.

        What an API leaves behind never got the stop signal (its server's own stop reaches
        the main process only), nor does anything a crash leaves: SIGKILL at once. A worker
        service that stops had the signal in every process: the rest may finish until the
        stop timer SIGKILLs the group."""
        if not self.groups.populated(group):
            self.report(Exited(svc.name, pid, status))
            return
        if not (svc.state == State.STOPPING and svc.kind == "worker") and self.groups.left_behind(group):
            hit = self.groups.kill(group)
            if hit:
                what = f"{hit} process{'es' if hit != 1 else ''}"
                self.say(svc.name, f"its main process (pid {pid}) is gone: SIGKILL to the {what} left in its group", 4)
        self.spawn_task(self._once_empty(svc, group, pid, status), f"empty-{svc.name}")

    async def _once_empty(self, svc: ServiceRuntime, group: str, pid: int, status: int | None) -> None:
        bound = svc.spec.stop_timeout + LEFTOVER_GRACE
        # a vassal's next master may have joined the group meanwhile (the emperor brings it back
        # once the last one is gone): once the service tracks another main process, it is its group
        if not await self.groups.emptied(group, bound) and pid in (svc.pid, svc.reload and svc.reload.pid):
            hit = self.groups.kill(group)
            self.say(svc.name, f"its group still held {hit} process(es) {bound:g}s after pid {pid} ended: SIGKILL", 3)
            await self.groups.emptied(group, LEFTOVER_GRACE)
        self.report(Exited(svc.name, pid, status))

    def unwatch(self, pid: int) -> None:
        self.watcher.unwatch(pid)

    def pending_for(self, svc: ServiceRuntime) -> list[str]:
        pending = [d for d in svc.spec.after if d in self.lifecycles and self.lifecycles[d].svc.state != State.RUNNING]
        retired = self.retiring.get(svc.name)
        if retired is not None and retired is not self.lifecycles.get(svc.name) and svc.name not in self.handovers:
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
            retired = self.retiring.get(svc.name)
            if retired is not None and retired.svc is svc and svc.state == State.STOPPED:
                self._retired(svc.name)
            return
        self.health.watch(svc)
        if svc.name in self.handovers and svc.state in (State.RUNNING, State.FAILED, State.STOPPED):
            self._hand_over(svc.name)
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
            self._reconcile(event)
            return
        if isinstance(event, Command) and event.verb == "shut-down":
            self._shut_down(event.reply)
            return
        if isinstance(event, Timeout):
            for lc in (self.lifecycles.get(event.name), self.retiring.get(event.name)):
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
        old = self.retiring.get(event.name)
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

    def command(self, verb: str, name: str) -> Result:
        """Queue an operator's verb; the future settles when it is done (ready, stopped, failed)."""
        reply: Result = self.loop.create_future()
        self.report(Command(name, verb, reply))
        return reply

    def start(self, name: str) -> Result:
        return self.command("start", name)

    def stop(self, name: str) -> Result:
        return self.command("stop", name)

    def restart(self, name: str) -> Result:
        return self.command("restart", name)

    def reload(self, name: str) -> Result:
        return self.command("reload", name)

    def drain(self, name: str) -> Result:
        return self.command("drain", name)

    def undrain(self, name: str) -> Result:
        return self.command("undrain", name)

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

    async def attach_emperor(self) -> None:
        """Take over what a previous daemon (or image, after a re-exec) left running."""
        statefile.restore_counts(self.layout, self.lifecycles, self.sampler)
        kept = statefile.load(self.layout)
        await self.vassals.attach(kept)
        await self.gunicorn.attach(kept)
        self.probe_tokens.adopted_all()
        self.workers.attach(kept, reexec=bool(os.environ.pop("WSGI_SUPERVISOR_REEXEC", None)))

    def save_soon(self) -> None:
        """Write the state file within 0.2 s (one write for every change meanwhile)."""
        if not self._save_pending:
            self._save_pending = True
            self.loop.call_later(0.2, self.save_state)

    def save_state(self, handover: dict[str, Any] | None = None) -> None:
        self._save_pending = False
        statefile.save(self.layout, self._records(), self.sampler, handover, self.probe_tokens.to_json())

    def reexec(self) -> None:
        """Replace this daemon's program with itself (after an upgrade), costing no service anything.

        The pid stays, so the emperor and the workers stay our children and
        systemd keeps its main process; the new image adopts the vassals as
        after any restart, and takes the workers' output pipes over.
        """
        self.save_state(handover=self.workers.handover())
        log.info("re-executing %s", " ".join(sys.argv))
        os.environ["WSGI_SUPERVISOR_REEXEC"] = "1"
        os.execv(sys.argv[0], sys.argv)

    async def shut_down(self, timeout: float | None = None) -> None:
        """Stop every service gracefully and at once, then the emperor."""
        reply: asyncio.Future[list[Result]] = self.loop.create_future()
        self.shutting_down = True
        self.report(Command(DAEMON_NAME, "shut-down", reply))  # in its turn, after what is queued
        stops = await reply
        everyone = (*self.lifecycles.values(), *self.retiring.values())
        bound = timeout if timeout is not None else max((lc.svc.spec.stop_timeout for lc in everyone), default=1)
        if stops:
            _done, pending = await asyncio.wait(stops, timeout=bound)
            if pending:
                for lc in everyone:
                    lc.kill("did not stop in time")
                await asyncio.wait(pending, timeout=2)
        self.health.close()
        await self.vassals.stop_emperor()
        self.save_state()  # the last counts, for the next daemon
        self.vassals.close()
        self.gunicorn.close()
        self.workers.close()
        self.sockets.close()

    def _shut_down(self, reply: asyncio.Future[list[Result]]) -> None:
        everyone = (*self.lifecycles.values(), *self.retiring.values())
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
