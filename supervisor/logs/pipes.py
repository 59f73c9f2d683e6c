"""Pipes and FIFOs of service output, read on the event loop into the log intake.

Worker services write into a pipe for as long as they run; a gunicorn arbiter
only until its own log relay takes its output over (see gunicorn/boot.py);
an API server's logger (a vassal's, an arbiter's relay) into a FIFO of its
own for each instance (see logs/fifos.py).
Complete lines go on to the intake; a last line without a newline goes
when the pipe closes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

Take = Callable[[str, str, bytes], None]  # (service, stream, payload): into the log intake

READ_SIZE = 256 * 1024
LONGEST_LINE = 64 * 1024


class OutputPipes:
    def __init__(self, loop: asyncio.AbstractEventLoop, take: Take):
        self.loop = loop
        self.take = take
        self.open: dict[str, tuple[int, str, bytearray]] = {}  # key -> (fd, service, partial line)

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

    def _pass_on(self, entry: tuple[int, str, bytearray], chunk: bytes) -> None:
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
        """Stop reading `key`: what is still in the pipe is read first, and a last line without
        a newline goes too."""
        entry = self.open.pop(key, None)
        if entry is None:
            return
        fd, service, buffer = entry
        self.loop.remove_reader(fd)
        while True:
            try:
                chunk = os.read(fd, READ_SIZE)
            except OSError:  # EAGAIN: a FIFO still open at the other end, with nothing left in it
                break
            if not chunk:
                break
            self._pass_on(entry, chunk)
        os.close(fd)
        if buffer:
            self.take(service, "o", bytes(buffer))

    def close(self) -> None:
        for key in list(self.open):
            self.drop(key)
