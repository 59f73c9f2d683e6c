"""A new manifest applied in the supervisor's queue: the part of the supervisor (a mixin) that
changes which lifecycles there are.

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
from typing import TYPE_CHECKING, Any

from supervisor.manifest.models import Manifest, runner
from supervisor.state import reconcile
from supervisor.state.events import Event, Reconcile
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.manifest.models import Service
    from supervisor.observe.sampler import Sampler
    from supervisor.state.lifecycle import Lifecycle
    from supervisor.state.waiters import Result

log = logging.getLogger("wsgi-supervisor")


class ManifestChanges:
    # the supervisor's own, in supervisor.py
    loop: asyncio.AbstractEventLoop
    manifest: Manifest
    lifecycles: dict[str, Lifecycle]
    retiring: dict[str, Lifecycle]
    handovers: set[str]
    sampler: Sampler
    state_listeners: list[Any]

    def _lifecycle(self, name: str, spec: Service) -> Lifecycle: ...
    def report(self, event: Event | Reconcile) -> None: ...
    def say(self, name: str, text: str, priority: int = 6) -> None: ...
    def future(self) -> Result: ...
    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...

    async def apply_manifest(self, manifest: Manifest) -> dict[str, Any]:
        """Apply only the difference: changed services restart (APIs on their kept socket),
        removed ones stop, new ones start; the others are not touched."""
        reply: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.report(Reconcile(manifest, reply))
        return await (await reply)

    def _reconcile(self, event: Reconcile) -> None:
        new = event.manifest.services
        change = reconcile.diff(self.manifest.services, new)
        self.manifest = event.manifest  # the truth from now on: a removed service is unknown at once
        waits: list[tuple[str, Result]] = []  # what each service's change came to
        # a drain is the operator's intent for the service, whatever runs it: a replacement keeps it
        drained = {name for name in change.replaced if self.lifecycles[name].svc.drained}
        for name in change.removed + change.replaced:
            lc = self.lifecycles.pop(name)
            if name in change.replaced and reconcile.serves_until_replaced(lc, new[name]):
                # another server for the same API: it goes once its successor serves on the same socket
                self.retiring[name] = lc
                self.handovers.add(name)
                self.say(name, f"moving to {runner(new[name])}: {runner(lc.svc.spec)} serves until it is running")
                continue
            self.handovers.discard(name)
            waits.append((name, lc.remove()))
            if lc.svc.state == State.STOPPED:
                lc.driver.release(lc.svc)
                if name in change.removed:
                    self.sampler.forget(name)
            else:
                self.retiring[name] = lc  # its successor, if any, starts once it has stopped
        for name in change.added + change.replaced:
            self.lifecycles[name] = self._lifecycle(name, new[name])
            self.lifecycles[name].svc.drained = name in drained
        for name in self.manifest.start_order():
            if name in change.added or name in change.replaced:
                if new[name].enabled:
                    waits.append((name, self.lifecycles[name].start()))
            elif name in change.changed:
                waits.append((name, reconcile.redefine(self.lifecycles[name], new[name], self.say, self.future())))
        log.info(
            "manifest applied: %d changed, %d added, %d removed, %d untouched",
            len(change.changed),
            len(change.added),
            len(change.removed),
            change.unchanged,
        )
        outcome = reconcile.outcome(waits, change.summary(), self.state_listeners)
        event.reply.set_result(self.spawn_task(outcome, "manifest"))

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
        successor = self.lifecycles.get(name)
        if successor is None:
            self.sampler.forget(name)
        else:
            successor.begin_start()
