"""The app's own health check, asked over the service's socket, in its protocol, with no front end.

An API with `health = "/healthcheck"` is probed every `health_interval`
seconds while it serves (more often until it first passes, or while it
fails): a 2xx is healthy; anything else, `health_threshold` times in a row,
is not, with a reason a person can act on. Only changes are reported (as
`Health` events), and they change readiness alone: liveness stays the
master and its workers, so a busy service failing its checks is never
restarted for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.manifest.models import ApiService
from supervisor.request_marks import PROBE_AGENT, PROBE_ENVIRON, PROBE_HEADER
from supervisor.state.events import Health

if TYPE_CHECKING:
    from supervisor.state.events import Event
    from supervisor.state.service import ServiceRuntime

USER_AGENT = PROBE_AGENT  # marks its request lines, which the daemon drops (request_marks.py)
RETRY_INTERVAL = 1.0  # until the first pass, and while failing: recovery is seen within a second
MAX_HEAD = 16 * 1024


def probe_path(service: ApiService) -> str:
    """The full path of the check: the app's health path under its mount (the server splits it off)."""
    assert service.health is not None
    mount = service.mount if service.mount and service.mount != "/" else ""
    return mount + service.health


def uwsgi_packet(path: str, token: str = "") -> bytes:
    """A GET in the uwsgi protocol: a header, then each variable as length-prefixed key and value."""
    fields = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": USER_AGENT,
    }
    if token:
        fields[PROBE_ENVIRON] = token
    body = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((key.encode(), value.encode("latin-1")) for key, value in fields.items())
    )
    return struct.pack("<BHB", 0, len(body), 0) + body


def http_request(path: str, token: str = "") -> bytes:
    mark = f"{PROBE_HEADER}: {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: {USER_AGENT}\r\n{mark}\r\n".encode("latin-1")


async def check(socket_path: Path, service: ApiService, tokens: Sequence[str] = ()) -> str | None:
    """One health check: None when it passes, else why not. `tokens`, those of the service's live
    instances (whichever instance answers knows its own), mark its request line (request_marks.py)."""
    token = " ".join(tokens)
    path = probe_path(service)
    shown = service.health
    request = uwsgi_packet(path, token) if service.protocol == "uwsgi" else http_request(path, token)
    writer = None
    closed = f"health check: the app closed the connection without answering {shown}"
    try:
        async with asyncio.timeout(service.health_timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(str(socket_path))
            except OSError as exc:
                return f"health check: cannot reach the socket {socket_path}: {exc.strerror or exc}"
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            except (ConnectionError, OSError):
                return closed
    except TimeoutError:
        return f"health check: no answer from {shown} within {service.health_timeout:g}s"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if not status_line:
        return closed
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return f"health check: {shown} did not answer in HTTP ({status_line[:60]!r})"
    code = int(parts[1])
    if 200 <= code < 300:
        return None
    if code == 404 or 300 <= code < 400:
        return f"health check: {code} from {shown} — is the path right?"
    return f"health check: {code} from {shown}"


async def answers(socket_path: Path, service: ApiService, token: str = "", timeout: float = 10.0) -> bool:
    """Whether the app answers a real request on its socket at all (any HTTP status): the last look
    before a start that was not reported ready in time is killed. Its health path when it has one."""
    path = probe_path(service) if service.health is not None else (service.mount or "/")
    request = uwsgi_packet(path, token) if service.protocol == "uwsgi" else http_request(path, token)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return status_line.startswith(b"HTTP/")


class HealthChecks:
    """One probing task per API that has a health path, for as long as it serves."""

    def __init__(
        self,
        report: Callable[[Event], None],
        spawn: Callable[..., asyncio.Task[None]],
        socket_of: Callable[[str], Path],
        tokens_of: Callable[[str], Sequence[str]] = lambda name: (),
    ):
        self.report = report
        self.spawn = spawn
        self.socket_of = socket_of
        self.tokens_of = tokens_of  # a service's probe tokens (state/probe_tokens.py)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, svc: ServiceRuntime) -> None:
        """The service serves: probe it until it does not (called at every state change)."""
        wanted = isinstance(svc.spec, ApiService) and svc.spec.health is not None and svc.state.up
        task = self.tasks.pop(svc.name, None)
        if task is not None and not task.done():
            if wanted and svc.healthy is not None:
                self.tasks[svc.name] = task  # running -> reloading -> running: the same checks go on
                return
            task.cancel()
        if wanted:
            self.tasks[svc.name] = self.spawn(self._probe(svc), f"health-{svc.name}")

    async def _probe(self, svc: ServiceRuntime) -> None:
        failures = 0
        healthy: bool | None = None
        record = svc
        while record.state.up:
            spec = record.spec
            assert isinstance(spec, ApiService)
            why = await check(self.socket_of(record.name), spec, self.tokens_of(record.name))
            if not record.state.up:
                return
            if why is None:
                failures = 0
                if healthy is not True or record.healthy is not True:
                    healthy = True
                    self.report(Health(record.name, True))
            else:
                failures += 1
                if failures >= spec.health_threshold and (healthy is not False or record.healthy is not False):
                    healthy = False
                    self.report(Health(record.name, False, why))
            await asyncio.sleep(spec.health_interval if healthy else min(spec.health_interval, RETRY_INTERVAL))

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
