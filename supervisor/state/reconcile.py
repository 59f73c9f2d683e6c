"""A new manifest against the running one: what to stop, start, restart, and leave alone.

`diff` is pure; `redefine` applies a changed definition to one service's
lifecycle; `outcome` is what `reload-config` answers, and `Applied` what the
supervisor hands back once it has taken a manifest (before the changes are
done). The supervisor does the rest in its queue, one event at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor.manifest.models import runner
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.manifest.models import Service
    from supervisor.state.lifecycle import Lifecycle
    from supervisor.state.service import ServiceRuntime
    from supervisor.state.waiters import Result


@dataclass(frozen=True)
class Diff:
    removed: list[str]
    added: list[str]
    changed: list[str]  # a definition that differs (replaced ones included)
    replaced: list[str]  # changed kind or server: a new lifecycle, with another driver
    unchanged: int

    def summary(self) -> dict[str, Any]:
        return {"changed": self.changed, "added": self.added, "removed": self.removed, "unchanged": self.unchanged}


@dataclass(frozen=True)
class Applied:
    """A manifest the supervisor has taken: it is the truth from now on, and its changes are under
    way. `outcome` ends once every change has its result; a caller that stops waiting for it
    cancels nothing (`reload-config --timeout`, `--no-block`)."""

    summary: dict[str, Any]  # Diff.summary()
    outcome: asyncio.Task[dict[str, Any]]
    changes: tuple[tuple[str, Result], ...]  # each change's own result, by service

    def unfinished(self) -> list[str]:
        """The services whose change has no result yet, once each."""
        return list(dict.fromkeys(name for name, result in self.changes if not result.done()))


def diff(old: Mapping[str, Service], new: Mapping[str, Service]) -> Diff:
    changed = sorted(n for n in set(old) & set(new) if old[n] != new[n])
    return Diff(
        removed=sorted(set(old) - set(new)),
        added=sorted(set(new) - set(old)),
        changed=changed,
        replaced=[n for n in changed if runner(old[n]) != runner(new[n])],
        unchanged=len(set(old) & set(new)) - len(changed),
    )


def redefine(lc: Lifecycle, spec: Service, say: Any, result: Result) -> Result:
    """The same service with a new definition: restarted if it runs (an API on its kept socket)."""
    svc = lc.svc
    svc.spec = spec
    if svc.state in (State.STARTING, State.RUNNING, State.RELOADING) and svc.goal_running:
        say(svc.name, "definition changed: restarting it")
        return lc.restart()
    if svc.state == State.BACKOFF:
        return lc.start()
    result.set_result((True, "not running"))
    return result


def serves_until_replaced(lc: Lifecycle, spec: Service) -> bool:
    """An API that serves and is to run under another server: both can share its socket."""
    running = lc.svc.state in (State.RUNNING, State.RELOADING) and lc.svc.goal_running
    return running and lc.svc.kind == "api" and spec.kind == "api" and spec.enabled


async def outcome(
    waits: list[tuple[str, Result]],
    summary: dict[str, Any],
    listeners: list[Callable[[ServiceRuntime], None]],
    waits_on: dict[str, set[str]] | None = None,
    records: Callable[[str], ServiceRuntime | None] | None = None,
) -> dict[str, Any]:
    """What `reload-config` answers once every change has its result. A service that goes into
    backoff has it then (a failed start; the daemon keeps trying), not when a start succeeds,
    which may be never; so has one that waits (`after`, `waits_on`: every service it needs, all the
    way down) for a service in backoff or failed, then or already. `listeners`: the supervisor's,
    told of every change to a record; `records`: a service's record by name."""
    loop = asyncio.get_running_loop()
    settled = {name: loop.create_future() for name, _ in waits}
    waits_on = waits_on or {}

    def settle(name: str, message: str) -> None:
        future = settled.get(name)
        if future is not None and not future.done():
            future.set_result((False, message))

    def blocked(svc: ServiceRuntime) -> None:
        """What waits for `svc` (directly or through others), now that it is in backoff or failed."""
        why = f"waits for {svc.name}, which is {svc.state}: {svc.reason}; it starts once {svc.name} is up"
        for name, needs in waits_on.items():
            if svc.name in needs:
                settle(name, why)

    def on_change(svc: ServiceRuntime) -> None:
        if svc.state == State.BACKOFF:
            settle(svc.name, f"in backoff, the daemon keeps trying: {svc.reason}")
        if svc.state in (State.BACKOFF, State.FAILED):
            blocked(svc)

    listeners.append(on_change)
    for name in {need for needs in waits_on.values() for need in needs}:
        svc = records(name) if records is not None else None
        if svc is not None and svc.state in (State.BACKOFF, State.FAILED):
            blocked(svc)
    try:
        results = []
        for name, result in waits:
            done, _ = await asyncio.wait({result, settled[name]}, return_when=asyncio.FIRST_COMPLETED)
            results.append((name, result.result() if result in done else settled[name].result()))
    finally:
        listeners.remove(on_change)
    failed = [f"{name}: {message}" for name, (ok, message) in results if not ok]
    if failed:
        error = "the manifest is applied, but not every change succeeded: " + "; ".join(failed)
        return {"ok": False, "error": error, **summary}
    return {"ok": True, **summary}
