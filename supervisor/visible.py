"""Text a service or a client chose, made safe to print on an operator's terminal.

A worker's STATUS=, a log line, a request line, a process title or an error
that quotes one of them can hold control characters: an escape sequence
would retitle the terminal, clear it, move the cursor to overwrite what the
operator reads, or (on some terminals) answer back as if typed. `wsgictl`
prints every such text through `visible()`, and the daemon's console and log
files every service line through `lines()`, which writes each control
character as an escape the operator can read instead (`\\x1b`, `\\n`):
C0 controls, DEL, C1 controls and the bidirectional overrides and isolates
(which reorder what is shown). JSON output needs none of this: `json.dumps`
escapes them already. Standard library only: `wsgictl` imports it.
"""

from __future__ import annotations

import re

_CONTROLS = "\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _pattern(keep: str) -> re.Pattern[str]:
    pattern = _PATTERNS.get(keep)
    if pattern is None:
        # a class of every control character, but those kept (each one of "\n", "\t")
        kept = "".join(f"(?!{re.escape(c)})" for c in keep)
        pattern = _PATTERNS[keep] = re.compile(f"{kept}[{_CONTROLS}]")
    return pattern


def visible(text: str, keep: str = "") -> str:
    """`text` with every control character but those in `keep` written as a visible escape."""
    return _pattern(keep).sub(_escape, text)


def lines(text: str) -> str:
    """Multi-line text (log lines, stacks, messages): its newlines and tabs stay, nothing else."""
    return visible(text, keep="\n\t")
