"""The control socket's wire format, shared by the daemon and `wsgictl`.

One JSON object per line each way. A request names a `cmd`; a reply has
`ok` and, when not ok, `error` (a sentence for a person) and `code` (the
exit status `wsgictl` should use). Standard library only: `wsgictl` imports
this on every run.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REQUEST = 64 * 1024

# exit statuses, as systemctl uses them
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4

COMMANDS = frozenset(
    {"ping", "status", "start", "stop", "restart", "reload", "logs", "watch", "reload-config", "launch", "reexec"}
)


class ProtocolError(ValueError):
    """A request that cannot be understood."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_request(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a request is a JSON object")
    cmd = message.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}")
    names = message.get("services", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= 256 for n in names):
        raise ProtocolError("'services' is a list of names")
    for key in ("timeout", "n"):
        value = message.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise ProtocolError(f"{key!r} is a non-negative number")
    return message


def error(message: str, code: int = EXIT_FAILED, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code, **extra}
