"""Pipes and FIFOs of service output, read on the event loop into the log intake.

Worker services write into a pipe for as long as they run; a gunicorn arbiter
only until its own log relay takes its output over (see gunicorn/boot.py);
an API server's logger (a vassal's, an arbiter's relay) into a FIFO of its
own for each instance (see logs/fifos.py).
Complete lines go on to the intake; a last line without a newline goes
when the pipe closes.

Every read on the event loop is bounded: one read of READ_SIZE a wake-up,
the rest on the next turn, so a service that writes without end (a child
that left its tree and kept a FIFO's write end) gets its share of the loop
and no more. A pipe dropped at a stop is read up to what it held then (a
FIFO holds 1 MiB at most), READ_SIZE a turn; what is written after is not
read, so no writer can keep the stop, or the loop, waiting.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable

Take = Callable[[str, str, bytes], None]  # (service, stream, payload): into the log intake
Entry = tuple[int, str, bytearray]  # (fd, service, partial line)

# What one wake-up of the loop reads of one pipe: some 650 lines, a few ms of the daemon's CPU on a quiet
# host. A /health answer or a control request waits a few turns of the loop, each behind such a read of
# every pipe that has data: at 256 KiB, on a busy host (load 20 on 2 cores) with one service flooding its
# output, /health of another took up to 0.7 s; the cost of more, smaller reads is a syscall each.
READ_SIZE = 64 * 1024
LONGEST_LINE = 64 * 1024


def queued(fd: int) -> int:
    """How many bytes the pipe holds now (FIONREAD); 0 when it cannot say."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class OutputPipes:
    def __init__(self, loop: asyncio.AbstractEventLoop, take: Take):
        self.loop = loop
        self.take = take
        self.open: dict[str, Entry] = {}  # key -> (fd, service, partial line)
        # pipes dropped, still read up to what they held when dropped: fd -> (next read, entry, bytes left)
        self.draining: dict[int, tuple[asyncio.Handle, Entry, int]] = {}

    def add(self, key: str, fd: int, service: str) -> None:
        """Read `fd` (the read end of a pipe, ours now) for `service`'s output, under `key`."""
        self.drop(key)
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        self.open[key] = (fd, service, bytearray())
        self.loop.add_reader(fd, self._read, key, fd)

    def fd(self, key: str) -> int | None:
        entry = self.open.get(key)
        return entry[0] if entry else None

    def open_keys(self) -> list[str]:
        return list(self.open)

    def _read(self, key: str, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        entry = self.open.get(key)
        if entry is None or entry[0] != fd:
            return
        if not chunk:
            self.drop(key)
            return
        self._pass_on(entry, chunk)

    def _pass_on(self, entry: Entry, chunk: bytes) -> None:
        _, service, buffer = entry
        buffer.extend(chunk)
        cut = buffer.rfind(b"\n")
        if cut >= 0:
            complete = bytes(buffer[: cut + 1])
            del buffer[: cut + 1]
            self.take(service, "o", complete)
        elif len(buffer) > LONGEST_LINE:  # a very long line without a newline: pass it on as it is
            self.take(service, "o", bytes(buffer))
            buffer.clear()

    def drop(self, key: str) -> None:
        """Stop reading `key`: what the pipe holds now is still read (READ_SIZE a turn of the loop),
        and a last line without a newline goes too; then the pipe is closed."""
        entry = self.open.pop(key, None)
        if entry is None:
            return
        self.loop.remove_reader(entry[0])
        self._drain(entry, queued(entry[0]))

    def _drain(self, entry: Entry, left: int, at_once: bool = False) -> None:
        fd, service, buffer = entry
        self.draining.pop(fd, None)
        while left > 0:
            try:
                chunk = os.read(fd, min(READ_SIZE, left))
            except OSError:  # EAGAIN: a FIFO still open at the other end, with nothing left in it
                break
            if not chunk:
                break
            self._pass_on(entry, chunk)
            left -= len(chunk)
            if left > 0 and not at_once:
                self.draining[fd] = (self.loop.call_soon(self._drain, entry, left), entry, left)
                return  # the rest on the next turn
        os.close(fd)
        if buffer:
            self.take(service, "o", bytes(buffer))

    def close(self) -> None:
        """The daemon goes: every pipe is read up to what it holds now, at once, and closed."""
        for key in list(self.open):
            self.drop(key)
        for handle, entry, left in list(self.draining.values()):
            handle.cancel()
            self._drain(entry, left, at_once=True)
