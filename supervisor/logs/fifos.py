"""Log FIFOs: where a server's output and request lines come to the daemon, one FIFO for each instance.

uWSGI's socket logger sent a datagram a line to a socket every vassal
shared, and Linux queues at most net.unix.max_dgram_qlen datagrams there
from all senders together (10 by default). Whenever the daemon's loop looked
away for a moment, a master's logger thread waited in sendmsg, its workers'
non-blocking log pipe filled, and the workers dropped their lines: measured,
one request line in six lost at 12,000 requests a second. A FIFO of its own
holds a MiB for each instance, is read in large chunks, and keeps what is in
it while the daemon restarts (the server holds it open read-write, so it
never sees a closed pipe).

Request lines come through the same FIFO, marked (request_marks.REQUEST_MARK).
Under uWSGI that keeps them in order with the rest: its logger thread serves
a separate request pipe only while the output pipe is empty, so a worker's
last request line could still wait there after the line that says it paused.
A mark anywhere in a line starts a request line: a piece of output without
its newline, written just before by another worker, stays output.

The daemon makes each FIFO before the server starts and keeps it while the
server could start again on its own: uWSGI's file logger opens its path with
O_CREAT, so a FIFO missing when the emperor starts a vassal would become a
plain file (one found is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from supervisor.logs.pipes import OutputPipes, Take
from supervisor.request_marks import LOST_MARK, REQUEST_MARK

log = logging.getLogger("wsgi-supervisor")

PIPE_SIZE = 1024 * 1024  # fs.pipe-max-size's default: what an unprivileged daemon may ask for
_MARK = REQUEST_MARK.encode()
_LOST = LOST_MARK.encode()


class LogFifos:
    def __init__(self, loop: asyncio.AbstractEventLoop, path_of: Callable[[str, str], Path], take: Take):
        self.path_of = path_of  # (service, instance) -> the FIFO's path
        self.take = take
        self.pipes = OutputPipes(loop, self._sort)

    def follow(self, name: str, instance: str) -> None:
        """Make the instance's FIFO (if it is not there yet) and read it into the log intake."""
        key = f"{name}.{instance}"
        if self.pipes.fd(key) is not None:
            return
        path = self.path_of(name, instance)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISFIFO(path.lstat().st_mode):
                path.unlink()  # a plain file a logger made where no FIFO was: from now on, the FIFO
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        # read-write: never an end of file while no server has it open (between a stop and a start)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as exc:
            log.debug("%s: log FIFO %s keeps the kernel's size: %s", name, path.name, exc)
        self.pipes.add(key, fd, name)

    def unfollow(self, name: str, instance: str) -> None:
        """The instance is gone for good: read what its FIFO still holds, then close and remove it."""
        self.pipes.drop(f"{name}.{instance}")
        with contextlib.suppress(FileNotFoundError):
            self.path_of(name, instance).unlink()

    def close(self) -> None:
        """The daemon goes: what is in the FIFOs is read; the FIFOs stay for a server that goes on."""
        self.pipes.close()

    def _sort(self, service: str, stream: str, payload: bytes) -> None:
        """Complete lines of a server's output, in the order written: the marked ones on as request
        lines, the others as output, each in runs (a traceback stays one entry); a server's count of
        the lines it dropped while no daemon ran goes on as stream "l", where it came."""
        if _LOST not in payload:
            self._runs(service, stream, payload)
            return
        before = bytearray()
        for line in payload.splitlines(keepends=True):
            if not line.startswith(_LOST):
                before += line
                continue
            self._runs(service, stream, bytes(before))
            before.clear()
            self.take(service, "l", line[len(_LOST) :].strip())
        self._runs(service, stream, bytes(before))

    def _runs(self, service: str, stream: str, payload: bytes) -> None:
        if not payload:
            return
        if _MARK not in payload:
            self.take(service, stream, payload)
            return
        kind, run = stream, bytearray()
        for line in payload.splitlines(keepends=True):
            output, *requests = line.split(_MARK)
            for piece, is_request in ((output, False), *((r, True) for r in requests)):
                if not piece:
                    continue
                if (kind == "r") != is_request and run:
                    self.take(service, kind, bytes(run))
                    run.clear()
                kind = "r" if is_request else stream
                run += piece
        if run:
            self.take(service, kind, bytes(run))
