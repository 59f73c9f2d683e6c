"""The `toy` server: one process per service, the standard library's wsgiref, on the daemon's socket.

Everything a server plug-in does, in the smallest form: a `Server` spec whose
factory builds a `Driver`, which starts the process with the socket the
daemon holds, reports what it sees as events, and never touches the
service's record. It uses only the plug-in contract (supervisor.registry,
supervisor.state.drivers, supervisor.state.events).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from supervisor.registry import Parts, Server
from supervisor.state.drivers import Failure
from supervisor.state.events import Ready, Spawned, SpawnFailed

SERVE = Path(__file__).with_name("serve.py")


class ToyDriver:
    def __init__(self, parts: Parts):
        self.ctx = parts.context
        self.sockets = parts.sockets
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.probes: dict[str, asyncio.Task[None]] = {}

    def prepare(self, svc) -> None:
        self.sockets.hold(svc.name, self)

    def launch(self, svc) -> None:
        fd = self.sockets.fd(svc.name)
        python = Path(svc.spec.venv or self.ctx.config.default_venv) / "bin" / "python3"
        try:
            proc = subprocess.Popen(
                [str(python), str(SERVE), str(fd), svc.spec.app],
                pass_fds=[fd],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self.ctx.report(SpawnFailed(svc.name, f"cannot run {python}: {exc}"))
            return
        self.procs[svc.name] = proc
        self.ctx.report(Spawned(svc.name, proc.pid))

    def awaiting(self, svc) -> str:
        return "waiting for an answer on its socket"

    def watch_ready(self, svc) -> None:
        old = self.probes.pop(svc.name, None)
        if old is not None:
            old.cancel()
        self.probes[svc.name] = self.ctx.spawn(self._probe(svc.name, svc.pid), f"toy-ready-{svc.name}")

    async def _probe(self, name: str, pid: int) -> None:
        """Ready once the server answers a request on the socket the daemon holds."""
        path = str(self.ctx.layout.api_socket(name))
        while True:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    reader, writer = await asyncio.open_unix_connection(path)
                    writer.write(b"GET / HTTP/1.0\r\nHost: toy\r\n\r\n")
                    writer.write_eof()  # wsgiref gives the app the connection to read: this is its end
                    answer = await reader.read(12)
                    writer.close()
                if answer.startswith(b"HTTP/"):
                    self.ctx.report(Ready(name, pid))
                    return
            await asyncio.sleep(0.1)

    def ask_stop(self, svc) -> bool:
        if svc.pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    def kill(self, svc, why: str) -> None:
        if svc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(svc.pid, signal.SIGKILL)
            self.ctx.say(svc.name, f"{why}: SIGKILL", 4)

    def kill_unready(self, svc, why: str) -> None:
        self.kill(svc, why)

    def disable(self, svc) -> None:
        probe = self.probes.pop(svc.name, None)
        if probe is not None:
            probe.cancel()

    def release(self, svc) -> None:
        self.sockets.release(svc.name, self)

    def exited(self, svc, pid: int, status: int | None) -> str | None:
        self.disable(svc)
        proc = self.procs.pop(svc.name, None)
        if proc is not None and status is not None:
            proc.returncode = os.waitstatus_to_exitcode(status)  # the daemon reaped it
        return None

    def describe_exit(self, svc) -> str:
        return svc.last_exit or "exited"

    def reload(self, svc) -> bool:
        return False  # wsgiref cannot reload: restart instead

    def reports_reload(self, svc) -> bool:
        return False

    def switch(self, svc, attempt, old_pid) -> None:
        """Never asked: no reload."""

    def abandon(self, svc, attempt) -> None:
        """Never asked: no reload."""

    def on_line(self, svc, text: str) -> Failure | None:
        return None

    def noise(self, text: str) -> bool:
        return False

    def endpoint(self, svc) -> str | None:
        return str(self.ctx.layout.api_socket(svc.name))

    def close(self) -> None:
        for probe in self.probes.values():
            probe.cancel()


SERVER = Server("toy", ToyDriver)
