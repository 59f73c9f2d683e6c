"""Python's own exceptions as a service's output reports them: the reason a start failed.

Only real exception lines count, never a `word: value` line of a server's
banner (uWSGI's `machine: x86_64`): the line that ends a traceback, a
known exception class with its message, and the same as Python logging
and oslo.log prefix it (oslo.log's excepthook writes `… CRITICAL aodh [-]
Unhandled error: TypeError: …`). Any server that runs Python apps needs
this, so it belongs to no driver.
"""

from __future__ import annotations

import re

# an exception class as Python prints it: `KeyError`, `oslo_config.cfg.ConfigFilesNotFoundError`
_CLASS = r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*"
_KNOWN_CLASS = (
    r"(?:(?:[A-Za-z_]\w*\.)*(?:[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)"
    r"|Exception|BaseException|StopIteration|StopAsyncIteration))"
)
# `SomeError: message` (or a bare `SomeError`) by its class name alone
_KNOWN_EXCEPTION = re.compile(rf"{_KNOWN_CLASS}(?::\s.*\S.*)?")
# an ERROR/CRITICAL message that names an exception: oslo.log's excepthook writes "Unhandled error: TypeError: …"
_NAMED_EXCEPTION = re.compile(rf"(?:^|:\s)({_KNOWN_CLASS}:\s.*\S.*)")
# whatever class ends a traceback, once its frames are past
_TRACEBACK_END = re.compile(rf"{_CLASS}(?::(?:\s.*)?)?")
# Python logging and oslo.log: `2026-11-30 12:00:01.123 4242 CRITICAL aodh [-] message`; the logger name is
# followed by one space, so the indentation of traceback lines it prefixes is kept
_LOG_PREFIX = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s+(?:\d+\s+)?"
    r"(?P<level>CRITICAL|ERROR|WARNING|INFO|DEBUG|TRACE)\s+(?P<logger>\S+) (?:\[[^\]]*\] )?"
)


def _unprefixed(line: str) -> tuple[str | None, str]:
    """(level, message) of a line that Python logging or oslo.log prefixed; (None, line) otherwise."""
    match = _LOG_PREFIX.match(line)
    if match:
        return match.group("level"), line[match.end() :].rstrip()
    return None, line.rstrip()


def exception_line(line: str, after_frames: bool = False) -> str | None:
    """The exception a line reports, as `SomeError: message`, or None.

    Only real exception lines count, never a `word: value` line of uWSGI's
    banner (`machine: x86_64`): the line that ends a traceback
    (`after_frames`: any class name), a known exception class with its
    message (`TypeError: …`), and the same as oslo.log prefixes it, or
    names it in an ERROR/CRITICAL message (`… CRITICAL aodh [-] Unhandled
    error: TypeError: …`).
    """
    level, text = _unprefixed(line)
    if after_frames and _TRACEBACK_END.fullmatch(text):
        return text
    if _KNOWN_EXCEPTION.fullmatch(text):
        return text
    if level in ("ERROR", "CRITICAL"):
        match = _NAMED_EXCEPTION.search(text)
        if match:
            return match.group(1)
    return None


class ExceptionReader:
    """Follows one service's output line by line and keeps the exception it last reported."""

    def __init__(self) -> None:
        self.in_frames = False

    def feed(self, line: str) -> str | None:
        _, text = _unprefixed(line)
        if text.startswith("Traceback (most recent call last)"):
            self.in_frames = True
            return None
        if self.in_frames:
            if text[:1] in (" ", "\t"):
                return None  # a frame, its code, or its ^^^ marks
            self.in_frames = False
            return exception_line(line, after_frames=True)
        return exception_line(line)
