"""The control socket's client, and sd_notify, in the standard library only (units call wsgictl)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import supervisor.control.protocol as protocol
from supervisor.control.protocol import encode


class Unreachable(Exception):
    pass


KEEP = object()  # a request's timeout: the client's own


class Client:
    def __init__(self, runtime_dir: Path, timeout: float | None = 10.0):
        self.path = runtime_dir / "control.sock"
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            raise Unreachable(f"no control socket at {self.path}: is wsgi-supervisor running?") from None
        except PermissionError:
            raise Unreachable(f"permission denied on {self.path}: run as root or join the control group") from None
        except OSError as exc:
            raise Unreachable(f"cannot reach wsgi-supervisor at {self.path}: {exc.strerror or exc}") from None
        self.sock = sock

    def request(self, message: dict[str, Any], timeout: float | object | None = KEEP) -> dict[str, Any]:
        """Send one request (a command of protocol.COMMANDS, with its fields) and read the first reply;
        `timeout` None waits for as long as it takes (a manifest reload, a followed log)."""
        data = encode(protocol.request(**message))
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        if timeout is not KEEP:
            self.sock.settimeout(timeout)  # type: ignore[arg-type]
        try:
            # the daemon may have answered (a refusal) and hung up before we were
            # done sending: read what it said
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.sock.sendall(data)
            return self.receive()
        except TimeoutError:
            raise Unreachable(f"wsgi-supervisor at {self.path} did not answer in time") from None
        except OSError as exc:
            raise Unreachable(f"lost the connection to wsgi-supervisor: {exc.strerror or exc}") from None

    def receive(self) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Unreachable("wsgi-supervisor closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def sd_notify(message: str) -> None:
    """sd_notify(3) with the standard library: a datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.sendto(message.encode(), address)
