"""When a service's main process is gone: its exit counts once nothing is left in its control group."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from supervisor.manifest.models import runner
from supervisor.observe.cgroups import ServiceGroups, group_name
from supervisor.state.events import Event, Exited
from supervisor.state.states import State

if TYPE_CHECKING:
    import asyncio

    from supervisor.observe.watcher import ExitWatcher
    from supervisor.state.service import ServiceRuntime

LEFTOVER_GRACE = 5.0  # seconds SIGKILLed processes may take to be gone (a task in D state)


class MainExits:
    """Watches the main processes the lifecycles track, and reports each one's Exited when its
    whole group is gone."""

    def __init__(
        self,
        watcher: ExitWatcher,
        groups: ServiceGroups,
        report: Callable[[Event], None],
        say: Callable[[str, str, int], None],
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
    ):
        self.watcher = watcher
        self.groups = groups
        self.report = report
        self.say = say
        self.spawn = spawn

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
        self.spawn(self._once_empty(svc, group, pid, status), f"empty-{svc.name}")

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
