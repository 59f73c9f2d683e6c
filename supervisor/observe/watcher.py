"""Exit notifications for any process, child or not, through pidfds.

Where the daemon reaps the processes it supervises (the emperor, the
workers' main processes): a pidfd becomes readable when its process exits;
if the process is our child it is reaped here and its wait status passed
on, otherwise (a vassal master, whose parent is the emperor; an adopted
emperor) the status is None. Two other waits exist, each on a child nobody
watches: `Emperor.kill_if_ours` after a start that went no further, and
asyncio's own for the `systemctl start` that `surfaces/systemd.py` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from supervisor.observe.procs import pidfd_open

ExitCallback = Callable[[int, int | None], None]


class ExitWatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._fds: dict[int, int] = {}

    def watch(self, pid: int, callback: ExitCallback) -> bool:
        """Call `callback(pid, wait_status_or_None)` once `pid` exits.

        Returns False (and calls back at once, soon) if it is already gone.
        """
        self.unwatch(pid)
        fd = pidfd_open(pid)
        if fd is None:
            self._loop.call_soon(callback, pid, self._reap(pid))
            return False
        self._fds[pid] = fd
        self._loop.add_reader(fd, self._fired, pid, callback)
        return True

    def unwatch(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    def _fired(self, pid: int, callback: ExitCallback) -> None:
        self.unwatch(pid)
        callback(pid, self._reap(pid))

    @staticmethod
    def _reap(pid: int) -> int | None:
        with contextlib.suppress(ChildProcessError):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return status
        return None

    def close(self) -> None:
        for pid in list(self._fds):
            self.unwatch(pid)
