"""Which worker pids of a gunicorn board the daemon may believe.

Every worker writes into the board (it maps it to update its own slot), so
a compromised one can write any pid into any slot. The daemon acts on
those pids: readiness counts them, `status` lists them, `wsgictl stack`
runs py-spy on them as root. A pid is believed only while it is a live
descendant of the arbiter the board belongs to (the service's main
process) and runs as the uid the service's tree runs as; the slot of any
other pid is read as a free slot (its counters still count).
"""

from __future__ import annotations

import dataclasses

import psutil

from supervisor.observe.procs import is_descendant, running_as
from supervisor.observe.stats import ServerStats


def is_worker_of(pid: int, arbiter: int, uid: int | None) -> bool:
    """Whether `pid` is a live process below `arbiter` that runs as `uid` (real and effective)."""
    if uid is None:
        return False
    return is_descendant(pid, arbiter) and running_as([pid], uid) == [pid]


def trusted(stats: ServerStats, uid: int | None) -> tuple[ServerStats, list[int]]:
    """The board's stats with every pid that is not a worker of its arbiter taken out; and those of
    them that live (another process's: forged; a worker that has just exited is no news)."""
    forged: list[int] = []
    workers = []
    for worker in stats.workers:
        if worker.pid > 0 and not is_worker_of(worker.pid, stats.pid, uid):
            if psutil.pid_exists(worker.pid):
                forged.append(worker.pid)
            worker = dataclasses.replace(worker, pid=0, accepting=False, status="", apps=0, in_flight=0, serving=())
        workers.append(worker)
    if not forged:
        return stats, []
    return dataclasses.replace(stats, workers=tuple(workers)), forged
