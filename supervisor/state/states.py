"""The one state model shared by APIs and workers.

    stopped ──start──▶ starting ──ready──▶ running ──reload──▶ reloading
       ▲                  │  ▲                │  ▲                │
       │            crash │  │ retry     crash│  └────reloaded────┘
       │                  ▼  │                ▼
       │               backoff ◀──────── (counted failure)
       │
       └───stop───── failed ◀── start_limit reached, or a start that cannot work

    any running state ──stop──▶ stopping ──exited──▶ stopped

`restart` is stopping followed by starting. A crash after a long, healthy
run is not a failure: the service goes straight back to starting. A
service in backoff is retried for as long as it takes, unless its
`start_limit` says otherwise.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"
    BACKOFF = "backoff"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """A process is (or is about to be) up for this service."""
        return self in (State.STARTING, State.RUNNING, State.RELOADING, State.STOPPING)

    @property
    def up(self) -> bool:
        """Serving, as `wsgictl status` and systemd count it."""
        return self in (State.RUNNING, State.RELOADING)


# every edge the supervisor may take; anything else is a bug worth a loud log
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.FAILED, State.STOPPING, State.STOPPED}),
    State.RUNNING: frozenset({State.RELOADING, State.STOPPING, State.STARTING, State.BACKOFF, State.FAILED}),
    State.RELOADING: frozenset({State.RUNNING, State.STOPPING, State.STARTING, State.BACKOFF, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.STARTING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    State.FAILED: frozenset({State.STARTING, State.STOPPED}),
}


def allowed(old: State, new: State) -> bool:
    return old == new or new in TRANSITIONS[old]
