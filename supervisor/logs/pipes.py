"""Output pipes of the processes the daemon starts itself, read on the event loop into the log intake.

Worker services write into one for as long as they run; a gunicorn arbiter
only until its own log relay takes its output over (see gunicorn/boot.py).
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
        _, service, buffer = entry
        if not chunk:
            self.drop(key)
            if buffer:
                self.take(service, "o", bytes(buffer))
            return
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
        entry = self.open.pop(key, None)
        if entry is not None:
            self.loop.remove_reader(entry[0])
            os.close(entry[0])

    def close(self) -> None:
        for key in list(self.open):
            self.drop(key)
