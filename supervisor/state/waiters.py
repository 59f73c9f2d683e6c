"""Commands waiting for an outcome: a future per command, settled by the service's state.

A start waits for `running` (or an end: `failed`, `stopped`); a stop for
`stopped`. Each state change settles what it decides.
"""

from __future__ import annotations

import asyncio

from supervisor.state.service import ServiceRuntime, Waiter
from supervisor.state.states import State

OK_START = frozenset({State.RUNNING})
STOPPED_ONLY = frozenset({State.STOPPED})
END_START = frozenset({State.FAILED, State.STOPPED})

Result = asyncio.Future[tuple[bool, str]]


def resolve(svc: ServiceRuntime) -> None:
    """Settle the waiters the service's new state decides."""
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


def wait(svc: ServiceRuntime, future: Result, ok_states: frozenset[State], settle_in_backoff: bool = False) -> Result:
    """`future`, settled once the service reaches `ok_states` (at once if it is there, or failed already)."""
    if svc.state in ok_states:
        future.set_result((True, str(svc.state)))
    elif ok_states == OK_START and svc.state in END_START:  # it failed at once (cannot start)
        future.set_result((False, svc.reason or str(svc.state)))
    else:
        svc.waiters.append(Waiter(future, ok_states, settle_in_backoff))
    return future


def settle(svc: ServiceRuntime, message: str) -> None:
    """Every waiter fails with `message` (a reload that did not come up)."""
    for waiter in svc.waiters:
        if not waiter.future.done():
            waiter.future.set_result((False, message))
    svc.waiters = []


def done(future: Result, ok: bool, message: str) -> Result:
    future.set_result((ok, message))
    return future
