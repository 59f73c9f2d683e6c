"""Log intake: every line of every service passes through here.

Each vassal and each gunicorn arbiter writes its output and request lines
into a log FIFO of its own instance, read by its driver (logs/fifos.py);
workers' pipes are read by the worker driver; the emperor writes into a
FIFO read here under the daemon's name. A line's service is the one whose
FIFO or pipe it came through, never what the line says.
`<runtime>/daemon/log.sock` still takes datagrams from servers an earlier
daemon started, each checked against its sender's pid (logs/senders.py).
All become `LogLine`s handed to `Supervisor.emit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import supervisor.uwsgi.core as uwsgi
from supervisor.layout import DAEMON_NAME
from supervisor.listeners import bind_datagram
from supervisor.logs.fields import STREAMS, journal_fields, json_line
from supervisor.logs.pipes import LONGEST_LINE, READ_SIZE
from supervisor.logs.records import Records, priority_of
from supervisor.logs.safe_files import LogAccess, UnsafeLogFile, open_log, prepare_dir
from supervisor.logs.senders import Rejections
from supervisor.state.service import LogLine
from supervisor.visible import lines

if TYPE_CHECKING:
    from supervisor.layout import Layout

log = logging.getLogger("wsgi-supervisor")

MAX_DATAGRAM = 256 * 1024
READ_BUDGET = READ_SIZE  # what one wake-up reads of the log socket, as of a pipe (logs/pipes.py)
_CREDS = struct.calcsize("3i")


def format_request(text: str, req: uwsgi.Request | None) -> str:
    """The line as the log shows it: `req` (the line parsed), else the text as it came."""
    if req is None:
        return text.rstrip("\n")
    text = f"{req.method} {req.path} {req.status} {req.duration_s * 1000:.1f}ms {req.size}B {req.addr}"
    return text if req.request_id is None else f"{text} {req.request_id}"


class LogIntake:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        layout: Layout,
        emit: Callable[[LogLine], None],
        owner_of: Callable[[int], str | None],
        known: Callable[[str], bool],
        noise: Callable[[str, str], bool] = lambda service, text: False,
        say: Callable[[str, str, int], None] = lambda service, text, priority: None,
    ):
        self.loop = loop
        self.noise = noise  # (service, text): the server's routine line, asked of the service's driver
        self.layout = layout
        self.emit = emit
        self.owner_of = owner_of  # the service whose process tree holds this pid
        self.known = known
        self.rejected = Rejections(say)  # datagrams whose sender is not a process of the service they name
        self.say = say
        self.lost: Counter[str] = Counter()  # lines a server dropped while no daemon ran, by service
        self.sock: socket.socket | None = None
        self.fifo_fd: int | None = None
        self.fifo_buffer = b""
        self.records = Records(loop, lambda name, entry: self.emit(self._output(time.time(), name, entry, entry)))

    def open(self) -> None:
        self.sock = bind_datagram(self.layout.log_socket, 0o660)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._read_datagrams)

    def open_emperor_fifo(self) -> None:
        path = self.layout.emperor_log
        if not path.exists():
            os.mkfifo(path, 0o600)
        # read-write so that the FIFO never reports EOF while the emperor restarts
        self.fifo_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.loop.add_reader(self.fifo_fd, self._read_fifo)

    def _read_datagrams(self) -> None:
        assert self.sock is not None
        budget = READ_BUDGET  # bytes a wake-up takes, so one chatty sender cannot starve the loop
        for _ in range(256):
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("log intake: %s", exc)
                return
            pid = None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= _CREDS:
                    pid = struct.unpack("3i", cdata[:_CREDS])[0]
            claimed, stream, payload = uwsgi.split_datagram(data)
            sender = self.owner_of(pid) if pid else None
            if sender is None or not self.known(sender) or claimed not in (None, sender):
                self.rejected.add(sender, claimed, pid)
            else:
                self.take(sender, stream, payload)
            budget -= len(data)
            if budget <= 0:
                return  # the rest on the next turn of the loop

    def take(self, name: str, stream: str, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace")
        now = time.time()
        if stream == "l":
            self._lost(name, text)
            return
        if stream == "r":
            for line in text.splitlines():
                if line.strip():
                    req = uwsgi.parse_request(line)
                    priority = 6 if req is None or req.status < 500 else 4
                    self.emit(LogLine(now, name, "r", format_request(line, req), priority, req))
            return
        self.records.add(name, text)

    def _lost(self, name: str, count: str) -> None:
        """A server's word that it dropped `count` lines while no daemon ran (gunicorn/relay.py)."""
        try:
            lost = int(count.strip())
        except ValueError:
            return
        if lost > 0:
            self.lost[name] += lost
            self.say(name, f"{lost} lines of its output were lost while no daemon read its log", 4)

    def _read_fifo(self) -> None:
        assert self.fifo_fd is not None
        try:
            chunk = os.read(self.fifo_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        self.fifo_buffer += chunk
        *lines, self.fifo_buffer = self.fifo_buffer.split(b"\n")
        if len(self.fifo_buffer) > LONGEST_LINE:  # no newline in sight: pass it on as it is
            lines.append(self.fifo_buffer)
            self.fifo_buffer = b""
        now = time.time()
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip()
            if text:
                self.emit(self._output(now, DAEMON_NAME, text, f"emperor: {text}"))

    def _output(self, now: float, name: str, raw: str, shown: str) -> LogLine:
        if self.noise(name, raw):
            return LogLine(now, name, "o", shown, 7, noise=True)
        return LogLine(now, name, "o", shown, priority_of(raw))

    def close(self) -> None:
        self.records.flush()
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        if self.fifo_fd is not None:
            self.loop.remove_reader(self.fifo_fd)
            os.close(self.fifo_fd)
            self.fifo_fd = None


# --- sinks -----------------------------------------------------------------------------


class Drops:
    """Lines a sink could not deliver, counted, and said once a minute at most."""

    def __init__(self) -> None:
        self.count = 0
        self._last_said = 0.0
        self.saying = False

    def add(self, sink: str, error: BaseException | str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last_said >= 60 and not self.saying:
            self._last_said = now
            self.saying = True
            try:
                log.error("log %s: dropped lines (%d so far): %s", sink, self.count, error)
            finally:
                self.saying = False

    def refused(self, sink: str, error: BaseException) -> None:
        """A line dropped for a reason an operator must act on (a log file refused): said at once.
        The caller says each such reason once, not once a line."""
        self.count += 1
        if not self.saying:
            self.saying = True
            try:
                log.error("log %s: %s; its lines are dropped until it is fixed", sink, error)
            finally:
                self.saying = False


class JournalSink:
    """To journald, with fields that let `journalctl -u wsgi@NAME` find each service's lines."""

    def __init__(self, kind_of, drops: Drops):
        from systemd import journal  # only the daemon needs systemd-python

        self._sendv = journal.sendv
        self.kind_of = kind_of
        self.drops = drops

    def __call__(self, line: LogLine) -> None:
        if self.drops.saying and line.service == DAEMON_NAME:
            return
        try:
            self._sendv(*(f"{key}={value}" for key, value in journal_fields(line, self.kind_of).items()))
        except OSError as exc:
            self.drops.add("journal", exc)


_LEVEL_NAMES = {0: "EMERG", 1: "ALERT", 2: "CRIT", 3: "ERROR", 4: "WARNING", 5: "NOTICE", 6: "INFO", 7: "DEBUG"}


# What a line of text may not carry raw onto the console or into a file, where every service's lines follow
# one another: C0 controls (a carriage return or an escape sequence draws over the line's `NAME |` head, and
# journald ends a line of the daemon's stdout at a NUL as at a newline), DEL, C1 controls, and the
# bidirectional overrides and isolates that reorder what is shown. Each is written as an escape to read.
# Tabs stay, and newlines (each sink indents a continuation line).
def format_line(line: LogLine) -> str:
    """The one line format of the log files: time, service, stream, level, text."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(line.ts)) + f".{int(line.ts % 1 * 1000):03d}"
    text = lines(line.text).replace("\n", "\n    ")
    stream = STREAMS.get(line.stream, line.stream)
    return f"{stamp} {line.service} {stream} {_LEVEL_NAMES.get(line.priority, '?')} {text}\n"


class _ServiceFile(logging.handlers.RotatingFileHandler):
    """One service's file. A failed write is kept for the sink to count, not printed to stderr.
    Opened, at first and after each rotation, by `safe_files.open_log`: never through a symbolic link."""

    terminator = ""  # format_line ends every entry

    def __init__(self, path: Path, max_bytes: int, keep: int, access: LogAccess):
        self.access = access
        self.failure: BaseException | None = None
        super().__init__(path, maxBytes=max_bytes, backupCount=keep, encoding="utf-8", errors="replace")

    def _open(self) -> TextIO:
        return open(self.baseFilename, "a", encoding=self.encoding, errors=self.errors, opener=self._opener)

    def _opener(self, path: str, _flags: int) -> int:
        return open_log(path, self.access)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failure = sys.exception()


class FileSink:
    """`<log-dir>/NAME.log` per service, rotated by size (NAME.log.1 … NAME.log.N).

    Rotation is the standard library's RotatingFileHandler: a file is rotated
    before a line would take it past `max_bytes`, and `keep` rotated files are
    kept. A line that cannot be written (a full disk, a file refused by
    `safe_files`) is counted in `drops`, and the file is opened again for the
    next one. Who may read the files is `access` (0750 dir, 0640 files).
    """

    def __init__(
        self,
        directory: Path,
        drops: Drops,
        max_bytes: int,
        keep: int,
        form: Callable[[LogLine], str] = format_line,
        access: LogAccess | None = None,
    ):
        self.directory = Path(directory)
        self.form = form  # one entry, newline included
        self.max_bytes = max_bytes
        self.keep = keep
        self.drops = drops
        self.access = access or LogAccess()
        self.dir_ready = False
        self.files: dict[str, _ServiceFile] = {}
        self.refused: set[str] = set()  # services whose file safe_files refused, said once

    def _file(self, name: str) -> _ServiceFile:
        handler = self.files.get(name)
        if handler is None:
            if not self.dir_ready:
                prepare_dir(self.directory, self.access)
                self.dir_ready = True
            path = self.directory / f"{name}.log"
            handler = self.files[name] = _ServiceFile(path, self.max_bytes, self.keep, self.access)
        return handler

    def __call__(self, line: LogLine) -> None:
        if self.drops.saying and line.service == DAEMON_NAME:
            return
        try:
            handler = self._file(line.service)
        except OSError as exc:
            self._failed(line.service, exc)
            return
        handler.emit(logging.makeLogRecord({"msg": self.form(line), "args": None}))
        if handler.failure is not None:
            failure, handler.failure = handler.failure, None
            self._forget(line.service)
            self._failed(line.service, failure)
        else:
            self.refused.discard(line.service)

    def _failed(self, name: str, error: BaseException) -> None:
        """A line not written: a refused file is said at once (once until it is fixed), the rest counted."""
        if not isinstance(error, UnsafeLogFile):
            self.drops.add("files", error)
        elif name in self.refused:
            self.drops.count += 1
        else:
            self.refused.add(name)
            self.drops.refused("files", error)

    def _forget(self, name: str) -> None:
        handler = self.files.pop(name, None)
        if handler is not None:
            with contextlib.suppress(Exception):
                handler.close()

    def close(self) -> None:
        for name in list(self.files):
            self._forget(name)


class DaemonLogHandler(logging.Handler):
    """The daemon's own messages, into the same pipeline, under its own name."""

    def __init__(self, emit):
        super().__init__()
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            priority = 3 if record.levelno >= logging.ERROR else 4 if record.levelno >= logging.WARNING else 6
            self._emit(LogLine(record.created, DAEMON_NAME, "o", text, priority))
        except Exception:
            self.handleError(record)


def json_lines(kind_of: Callable[[str], str]) -> Callable[[LogLine], str]:
    """`--log-format json`: an entry as one JSON object a line."""
    return lambda line: json_line(line, kind_of) + "\n"


class ConsoleSink:
    """Lines to a terminal, `NAME | text`: the foreground view of `make run` (or `form`'s, JSON)."""

    def __init__(self, stream: TextIO = sys.stdout, width: int = 12, form: Callable[[LogLine], str] | None = None):
        self.stream = stream
        self.width = width
        self.form = form or self._plain

    def _plain(self, line: LogLine) -> str:
        prefix = f"{line.service:<{self.width}} | "
        return prefix + lines(line.text).replace("\n", "\n" + " " * len(prefix)) + "\n"

    def __call__(self, line: LogLine) -> None:
        if line.stream == "d" or line.noise:
            return  # the daemon's own line about it says the same; the server's routine lines stay in the log
        try:
            self.stream.write(self.form(line))
            self.stream.flush()
        except (OSError, ValueError):
            pass
