"""The daemon's wire format and its one table of commands, shared by the daemon and `wsgictl`.

One JSON object per line each way. A request names a `cmd`; a reply has
`ok` and, when not ok, `error` (a sentence for a person) and `code` (the
exit status `wsgictl` should use). Standard library only: `wsgictl` imports
this on every run.

`COMMANDS` is the one list of what the daemon answers: for each command,
the method of `control.ControlServer` that handles it, the socket it is
accepted on, and the fields a request carries. The server binds its
handlers from it; `wsgictl` builds its requests with `request()`, which
refuses a command or a field that is not in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_REQUEST = 64 * 1024

# exit statuses besides 0, as systemctl uses them
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4

# the sockets that take requests
CONTROL = "control"  # <runtime>/control.sock: wsgictl and wsgi@.service (root, the daemon's user, the control group)
LAUNCH = "launch"  # <runtime>/daemon/launch.sock: the launchers of vassals that the daemon's emperor started


@dataclass(frozen=True)
class Command:
    name: str
    handler: str  # the ControlServer method that answers it
    fields: tuple[str, ...] = ()  # what a request carries besides `cmd`
    socket: str = CONTROL


# by_unit: the request comes from a wsgi@NAME unit stopping (systemd), for --stop-drain
_VERB = ("services", "all", "wait", "timeout", "drain", "by_unit")
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("ping", "ping"),
        Command("status", "status", ("services", "lines", "fresh")),
        Command("start", "verb", _VERB),
        Command("stop", "verb", _VERB),
        Command("restart", "verb", _VERB),
        Command("reload", "verb", _VERB),
        Command("drain", "verb", ("services", "all")),
        Command("undrain", "verb", ("services", "all")),
        Command("logs", "logs", ("services", "n", "follow", "verbose")),
        Command("watch", "watch", ("services",)),
        Command("stack", "stack", ("service",)),
        Command("reload-config", "reload_config", ("wait", "timeout")),
        Command("reexec", "reexec"),
        # sent by launcher.py (which imports nothing of ours: it writes this request by hand)
        Command("launch", "launch", ("service", "instance"), socket=LAUNCH),
    )
}


class ProtocolError(ValueError):
    """A request that cannot be understood."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(cmd: str, **fields: Any) -> dict[str, Any]:
    """A request of the control socket, as `wsgictl` sends it: only a command and fields of the table."""
    command = COMMANDS.get(cmd)
    if command is None or command.socket != CONTROL:
        raise ValueError(f"{cmd!r} is not a command of the control socket")
    unknown = set(fields) - set(command.fields)
    if unknown:
        raise ValueError(f"{cmd!r} takes no {', '.join(sorted(unknown))}")
    return {"cmd": cmd, **fields}


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
    for key in ("timeout", "n", "drain"):
        value = message.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise ProtocolError(f"{key!r} is a non-negative number")
    return message


def error(message: str, code: int = EXIT_FAILED, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code, **extra}
