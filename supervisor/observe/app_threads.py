"""Threads a worker runs beyond its server's own: work its app does after it answered.

glance copies an image in a thread after answering its import call with 202; OpenStack
services send notifications and casts from threads too. A server's worker runs a known
number of threads of its own (each server's package says how many); any beyond that
are the app's, and a SIGKILL would cut their work short. Counted from /proc/PID/task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.observe.stats import ServerStats


def app_threads(workers: Iterable[int], own: int) -> dict[int, int]:
    """How many threads beyond the server's `own` each worker runs, for those that run any.

    A worker whose threads cannot be listed counts as running one: the safe side is a
    graceful stop. One that is gone runs none.
    """
    working = {}
    for worker in workers:
        try:
            extra = len(os.listdir(f"/proc/{worker}/task")) - own
        except FileNotFoundError:
            continue
        except OSError:
            extra = 1
        if extra > 0:
            working[worker] = extra
    return working


def describe(working: dict[int, int]) -> str:
    """What `app_threads` found, for the log: "2 threads of the app in 1 worker"."""
    threads, workers = sum(working.values()), len(working)
    return f"{threads} thread{'s' if threads != 1 else ''} of the app in {workers} worker{'s' if workers != 1 else ''}"


def what_a_kill_ends(in_flight: int, working: dict[int, int]) -> str | None:
    """What a SIGKILL past stop_timeout ends, for the log; None when nothing is known to run."""
    ended = [f"{in_flight} request{'s' if in_flight != 1 else ''} still in flight"] if in_flight else []
    if working:
        ended.append(describe(working))
    if not ended:
        return None
    hint = "work after an answer" if working else "long requests"
    return f"{' and '.join(ended)} ended (raise stop_timeout for {hint})"


def before_a_kill(stats: ServerStats | None, pid: int, own: int, why: str) -> tuple[int, str, int]:
    """The requests in flight in the server instance whose master is `pid` (by its last stats, if
    they are that instance's), and the log line of its SIGKILL past stop_timeout with its priority:
    what the kill ends (`what_a_kill_ends`) at warning, a kill that ends nothing known at notice."""
    ours = stats if stats is not None and stats.pid == pid else None
    in_flight = ours.in_flight if ours is not None else 0
    working = app_threads([w.pid for w in ours.workers if w.pid > 0] if ours else [], own)
    what = what_a_kill_ends(in_flight, working)
    return (in_flight, f"{why}: SIGKILL; {what}", 3) if what else (in_flight, f"{why}: SIGKILL", 4)
