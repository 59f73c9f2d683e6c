"""A service's output cut into records: a traceback or a warning is one entry, at its level.

A record can span several lines (a traceback; a warning with its message and its
source line) and several writes (the reader sees whatever the pipe held at that
moment). `split_entries` groups the lines of one text; `Records` keeps a
service's last entry back for a moment while it could still go on, so a record
cut between two reads is one entry all the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

# oslo.log and Python logging put the level after the timestamp and pid
_LEVEL_WORDS = {
    "CRITICAL": 2,
    "FATAL": 2,
    "ERROR": 3,
    "WARNING": 4,
    "WARN": 4,
    "NOTICE": 5,
    "INFO": 6,
    "DEBUG": 7,
}
TRACEBACK = "Traceback (most recent call last)"
# what warnings.showwarning writes first: `path:lineno: SomeWarning: message`; the message may take
# several lines, and the source line, indented, ends the warning when Python could read it
_WARNING = re.compile(r"^\S[^:]*:\d+: (?:[A-Za-z_][\w.]*)?Warning: ")
WARNING_LINES = 40  # a warning without a source line ends after this many lines at most
HOLD = 0.05  # how long a record that could still go on waits for its next lines (seconds)


def priority_of(text: str, default: int = 6) -> int:
    """The syslog priority a line states, from words like ERROR or WARNING near its start."""
    if _WARNING.match(text):
        return 4
    head = text[:120]
    for word in head.replace("[", " ").replace("]", " ").replace(":", " ").split():
        level = _LEVEL_WORDS.get(word)
        if level is not None:
            return level
    if head.startswith(TRACEBACK):
        return 3
    return default


def split_entries(payload: str) -> list[str]:
    """Lines of one text, with a traceback's or a warning's lines kept as one entry."""
    entries: list[str] = []
    for line in payload.rstrip("\n").split("\n"):
        if entries and _belongs(entries[-1], line):
            entries[-1] += "\n" + line
        elif line.strip():
            entries.append(line)
    return [e.rstrip("\n") for e in entries]


def _belongs(previous: str, line: str) -> bool:
    if _open_warning(previous):
        return True
    if not line.strip():
        # a blank line inside a record stays there only if the record goes on after it: kept
        # for now, and dropped from the end by split_entries if nothing follows
        return _in_traceback(previous)
    if line.startswith((" ", "\t")):
        return True
    return _continues(previous, line)


def _open_warning(entry: str) -> bool:
    """A warning whose source line (indented) has not come yet, and that is not too long to be one."""
    if not _WARNING.match(entry):
        return False
    lines = entry.split("\n")
    return len(lines) < WARNING_LINES and not any(line.startswith((" ", "\t")) for line in lines[1:])


def _in_traceback(entry: str) -> bool:
    return entry.startswith(TRACEBACK) or "\n" + TRACEBACK in entry


def _continues(previous: str, line: str) -> bool:
    """A traceback goes on until its final `SomeError: message` line; it belongs
    to the error message logged just before it (logging.exception)."""
    if line.startswith(TRACEBACK) and priority_of(previous) <= 3:
        return True
    if not _in_traceback(previous):
        return False
    last = previous.rstrip("\n").rsplit("\n", 1)[-1]
    return last.startswith((" ", "\t", "Traceback")) or line.startswith(("During handling", "The above exception"))


def could_go_on(entry: str) -> bool:
    """Whether the lines after `entry` may still belong to it: a traceback not ended, a warning
    without its source line, an error line a traceback may follow."""
    if _open_warning(entry):
        return True
    last = entry.rsplit("\n", 1)[-1]
    if _in_traceback(entry):
        return last.startswith((" ", "\t", "Traceback")) or not last.strip()
    return priority_of(entry) <= 3


class Records:
    """Each service's output into entries, the last held back for `HOLD` while it could go on.

    `emit(service, entry)` receives whole entries in the order they were written.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Callable[[str, str], None], hold: float = HOLD):
        self.loop = loop
        self.emit = emit
        self.hold = hold
        self.held: dict[str, tuple[str, asyncio.TimerHandle]] = {}

    def add(self, service: str, text: str) -> None:
        held = self.held.pop(service, None)
        if held is not None:
            held[1].cancel()
            text = held[0] + "\n" + text
        entries = split_entries(text)
        if not entries:
            return
        last = entries[-1]
        for entry in entries[:-1]:
            self.emit(service, entry)
        if could_go_on(last):
            self.held[service] = (last, self.loop.call_later(self.hold, self.flush, service))
        else:
            self.emit(service, last)

    def flush(self, service: str | None = None) -> None:
        """The held entry of `service` (of every service when None) goes on as it is."""
        for name in [service] if service is not None else list(self.held):
            held = self.held.pop(name, None)
            if held is not None:
                held[1].cancel()
                self.emit(name, held[0])
