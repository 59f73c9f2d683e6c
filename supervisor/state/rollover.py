"""A new manifest applied in the supervisor's queue: the supervisor's collaborator that changes
which lifecycles there are.

Only the difference is applied (`reconcile.diff`): changed services restart
(APIs on their kept socket), removed ones stop as "retiring" lifecycles
while the new manifest is already the truth, new ones start, the others are
not touched. An API moved to another server keeps serving on its old one
until its successor runs (a hand-over).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.manifest.models import Manifest, runner
from supervisor.state import reconcile
from supervisor.state.events import Reconcile
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.manifest.models import Service
    from supervisor.observe.sampler import Sampler
    from supervisor.state.lifecycle import Lifecycle
    from supervisor.state.service import ServiceRuntime
    from supervisor.state.waiters import Result

log = logging.getLogger("wsgi-supervisor")


class RolloverHost(Protocol):
    """What a rollover needs of the supervisor around it."""

    manifest: Manifest
    lifecycles: dict[str, Lifecycle]
    sampler: Sampler
    state_listeners: list[Any]

    def make_lifecycle(self, name: str, spec: Service) -> Lifecycle: ...
    def say(self, name: str, text: str, priority: int = 6) -> None: ...
    def future(self) -> Result: ...
    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...


class Rollover:
    """Applies a new manifest in the supervisor's queue; owns the lifecycles still stopping after
    it (retiring) and the APIs whose old server serves until their new one runs (hand-overs)."""

    def __init__(self, host: RolloverHost):
        self.host = host
        self.retiring: dict[str, Lifecycle] = {}  # removed or replaced by a new manifest, still stopping
        # APIs moved to another server: the old one serves until its successor is running
        self.handovers: set[str] = set()

    def waits_for_predecessor(self, name: str) -> bool:
        """A replaced service starts once its previous definition has stopped (a hand-over's does not wait)."""
        retired = self.retiring.get(name)
        return retired is not None and retired is not self.host.lifecycles.get(name) and name not in self.handovers

    def state_changed(self, svc: ServiceRuntime, current: bool) -> None:
        """A record changed state: a retiring one that stopped is gone; a hand-over's successor that
        runs (or will not) lets its predecessor stop."""
        if not current:
            retired = self.retiring.get(svc.name)
            if retired is not None and retired.svc is svc and svc.state == State.STOPPED:
                self._retired(svc.name)
        elif svc.name in self.handovers and svc.state in (State.RUNNING, State.FAILED, State.STOPPED):
            self._hand_over(svc.name)

    def apply(self, event: Reconcile) -> None:
        host = self.host
        new = event.manifest.services
        change = reconcile.diff(host.manifest.services, new)
        host.manifest = event.manifest  # the truth from now on: a removed service is unknown at once
        waits: list[tuple[str, Result]] = []  # what each service's change came to
        # a drain is the operator's intent for the service, whatever runs it: a replacement keeps it
        drained = {name for name in change.replaced if self.host.lifecycles[name].svc.drained}
        for name in change.removed + change.replaced:
            lc = self.host.lifecycles.pop(name)
            if name in change.replaced and reconcile.serves_until_replaced(lc, new[name]):
                # another server for the same API: it goes once its successor serves on the same socket
                self.retiring[name] = lc
                self.handovers.add(name)
                self.host.say(name, f"moving to {runner(new[name])}: {runner(lc.svc.spec)} serves until it is running")
                continue
            self.handovers.discard(name)
            waits.append((name, lc.remove()))
            if lc.svc.state == State.STOPPED:
                lc.driver.release(lc.svc)
                if name in change.removed:
                    self.host.sampler.forget(name)
            else:
                self.retiring[name] = lc  # its successor, if any, starts once it has stopped
        for name in change.added + change.replaced:
            self.host.lifecycles[name] = self.host.make_lifecycle(name, new[name])
            self.host.lifecycles[name].svc.drained = name in drained
        for name in self.host.manifest.start_order():
            if name in change.added or name in change.replaced:
                if new[name].enabled:
                    waits.append((name, self.host.lifecycles[name].start()))
            elif name in change.changed:
                waits.append(
                    (name, reconcile.redefine(self.host.lifecycles[name], new[name], self.host.say, self.host.future()))
                )
        log.info(
            "manifest applied: %d changed, %d added, %d removed, %d untouched",
            len(change.changed),
            len(change.added),
            len(change.removed),
            change.unchanged,
        )
        manifest = self.host.manifest
        waits_on = {name: set(manifest.start_order([name])) - {name} for name, _ in waits if name in new}
        lifecycles = self.host.lifecycles

        def record(name: str) -> ServiceRuntime | None:
            lc = lifecycles.get(name)
            return lc.svc if lc is not None else None

        outcome = reconcile.outcome(waits, change.summary(), self.host.state_listeners, waits_on, record)
        task = self.host.spawn_task(outcome, "manifest")
        event.reply.set_result(reconcile.Applied(change.summary(), task, tuple(waits)))

    def _hand_over(self, name: str) -> None:
        """The successor of a moved API is running (or will not be): its old server stops now."""
        self.handovers.discard(name)
        old = self.retiring.get(name)
        if old is None:
            return
        old.remove()
        if old.svc.state == State.STOPPED:
            self._retired(name)

    def _retired(self, name: str) -> None:
        lc = self.retiring.pop(name)
        lc.driver.release(lc.svc)
        successor = self.host.lifecycles.get(name)
        if successor is None:
            self.host.sampler.forget(name)
        else:
            successor.begin_start()
