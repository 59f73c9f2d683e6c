"""Pausing a vassal's workers before a stop, so that no accepted connection is dropped, and telling
whether a paused vassal may go at once or must have a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable

from supervisor.manifest.models import ApiService
from supervisor.observe.app_threads import app_threads
from supervisor.observe.procs import in_pause_loop, stopped
from supervisor.observe.stats import ServerStats

# how long a vassal whose workers all wait in the pause loop may take to deliver their "suspended"
# lines; past it, a line that went missing does not hold up the stop
LOG_GRACE = 0.5


async def wait_paused(
    read_stats: Callable[[], Awaitable[ServerStats | None]],
    pid: int,
    bound: float,
    logged: set[int],
    *,
    own_threads: int,
    working: dict[int, int],
) -> bool:
    """Until every worker of the vassal waits in uWSGI's pause loop, where it accepts nothing.

    True once each is seen there and runs no thread beyond uWSGI's own (`own_threads`):
    no worker holds a request or a connection, nor works on after an answer, so the
    vassal may go at once. False when that could not be seen (within `bound`, or at
    all), or when a paused worker still runs threads of the app (`working` then holds
    how many, by worker pid): the stop has to be a graceful one.

    An app thread is work the app does after it answered (glance's image import, a
    notification sent from a thread): a paused worker's main thread waits in the pause
    loop, but its other threads run on, and a SIGKILL would cut them short and skip the
    `atexit` hooks that wait for them. uWSGI's graceful stop exits the worker through
    Py_Finalize, which waits for non-daemon threads and runs `atexit` (measured: a
    thread writing a file for 3 s finished across a restart, a daemon thread an
    `atexit` hook joins too).

    The stats' `pause` is not enough: it is the master's flag, shown as soon as the
    master has signalled the workers, for every worker that is not in a request. A
    worker that had passed its pause check already (waiting for the accept lock, or
    in epoll_wait) still takes one more connection, and a graceful stop that reaches
    it between that accept and reading the request closes the connection unread
    (issue 13: one request in ~14,000 lost across restarts on a busy machine). So
    each worker is checked where it actually waits (/proc/PID/syscall). One that sits
    idle in epoll_wait, where the pause signal did not reach it, is stopped and
    continued: that makes epoll_wait return (EINTR, signal(7)) and the worker then
    sees the pause; a stop and continue restarts every other call it could be in.

    `logged` fills with the ids of the workers whose "suspended" line has reached the
    daemon. A vassal that goes at once goes with its master's logger thread, and
    what that thread has not yet sent (the last request lines, the workers' own
    last words) would be lost; each worker writes that line after everything else,
    so once every worker's has arrived the log is complete.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    idle_since: dict[int, float] = {}
    all_paused_at: float | None = None
    while loop.time() < deadline:
        stats = await read_stats()
        if stats is None or stats.pid != pid:
            return False
        if stats.paused:
            where = {w.pid: in_pause_loop(w.pid) for w in stats.workers if w.pid > 0}
            if None in where.values():
                return False  # cannot look (no /proc access): the master's word has to do
            waiting = [p for p, paused in where.items() if not paused]
            now = loop.time()
            if not waiting:
                working.update(busy := app_threads(where, own_threads))
                if busy:
                    return False
                all_paused_at = now if all_paused_at is None else all_paused_at
                if {w.id for w in stats.workers if w.pid > 0} <= logged or now - all_paused_at >= LOG_GRACE:
                    return True
            else:
                all_paused_at = None
            for worker in waiting:
                # give a worker that accepted one last connection time to read it
                if now - idle_since.setdefault(worker, now) >= 0.02:
                    idle_since[worker] = now
                    await nudge(worker)
        else:
            idle_since.clear()
        await asyncio.sleep(0.005)
    return False


def own_threads(service: ApiService) -> int:
    """The threads uWSGI itself runs in each worker: its request threads (`threads`), its offload
    threads and the Python tracebacker's (measured in /proc/PID/task of idle workers: 1 alone,
    4 with 2 offload threads and the tracebacker). A thread it starts that is not counted
    here only makes the stop a graceful one."""
    extra = service.uwsgi
    return max(1, service.threads) + _count(extra.get("offload-threads")) + bool(extra.get("py-tracebacker"))


def _count(value: object) -> int:
    if isinstance(value, list):
        value = value[-1] if value else 0
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


async def nudge(worker: int) -> None:
    """Stop and continue a worker: once it has really stopped, so the stop is not discarded."""
    try:
        os.kill(worker, signal.SIGSTOP)
    except OSError:
        return
    try:
        for _ in range(100):
            if stopped(worker):
                break
            await asyncio.sleep(0.001)
    finally:
        with contextlib.suppress(OSError):
            os.kill(worker, signal.SIGCONT)
