"""The FIFO a vassal's logger writes into, one for each instance: its output and its request lines.

uWSGI's socket logger sends a datagram a line to a socket every vassal would
share, and Linux queues at most net.unix.max_dgram_qlen datagrams there from
all senders together (10 by default). Whenever the daemon's loop looks away
for a moment, a master's logger thread then waits in sendmsg, its workers'
non-blocking log pipe fills, and the workers drop their lines: measured, one
request line in six lost at 12,000 requests a second. A FIFO of its own holds
a MiB for each vassal, is read in large chunks, and keeps what is in it while
the daemon restarts (the master holds it open).

Request lines come through the same FIFO, marked (core.REQUEST_MARK): uWSGI's
logger thread serves a separate request pipe only while the output pipe is
empty, so a worker's last request line could still wait there after the line
that says it paused; in one pipe, that line comes after all it wrote before.

The daemon makes each FIFO before the vassal's file exists and keeps it for
as long as that file does: uWSGI's file logger opens its path with O_CREAT, so
a FIFO missing when the emperor starts a vassal would become a plain file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat

from supervisor.layout import Layout
from supervisor.logs.pipes import OutputPipes, Take
from supervisor.uwsgi.core import REQUEST_MARK

log = logging.getLogger("wsgi-supervisor")

PIPE_SIZE = 1024 * 1024  # fs.pipe-max-size's default: what an unprivileged daemon may ask for
_MARK = REQUEST_MARK.encode()


class VassalLogs:
    def __init__(self, loop: asyncio.AbstractEventLoop, layout: Layout, take: Take):
        self.layout = layout
        self.take = take
        self.pipes = OutputPipes(loop, self._sort)

    def follow(self, name: str, instance: str) -> None:
        """Make the instance's FIFO (if it is not there yet) and read it into the log intake."""
        key = self.layout.instance_id(name, instance)
        if self.pipes.fd(key) is not None:
            return
        path = self.layout.vassal_log(name, instance)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISFIFO(path.lstat().st_mode):
                path.unlink()  # a plain file a logger made where no FIFO was: from now on, the FIFO
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        # read-write: never an end of file while no vassal has it open (between its stop and its next start)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as exc:
            log.debug("%s: log FIFO %s keeps the kernel's size: %s", name, path.name, exc)
        self.pipes.add(key, fd, name)

    def unfollow(self, name: str, instance: str) -> None:
        """The instance is gone for good: read what its FIFO still holds, then close and remove it."""
        self.pipes.drop(self.layout.instance_id(name, instance))
        with contextlib.suppress(FileNotFoundError):
            self.layout.vassal_log(name, instance).unlink()

    def close(self) -> None:
        """The daemon goes: what is in the FIFOs is read; the FIFOs stay for a vassal that goes on."""
        self.pipes.close()

    def _sort(self, service: str, stream: str, payload: bytes) -> None:
        """Complete lines of a vassal's output: the marked ones on as request lines, the others as
        output, each in runs (a traceback stays one entry)."""
        if _MARK not in payload:
            self.take(service, stream, payload)
            return
        kind, run = stream, bytearray()
        for line in payload.splitlines(keepends=True):
            is_request = line.startswith(_MARK)
            if (kind == "r") != is_request and run:
                self.take(service, kind, bytes(run))
                run.clear()
            kind = "r" if is_request else stream
            run += line[len(_MARK) :] if is_request else line
        if run:
            self.take(service, kind, bytes(run))
