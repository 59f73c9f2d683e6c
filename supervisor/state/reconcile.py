"""A new manifest against the running one: what to stop, start, restart, and leave alone.

`diff` is pure; `redefine` applies a changed definition to one service's
lifecycle. The supervisor does the rest in its queue, one event at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor.manifest.models import runner
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.manifest.models import Service
    from supervisor.state.lifecycle import Lifecycle
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
