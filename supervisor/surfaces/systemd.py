"""The daemon's face to systemd: sd_notify (READY, STATUS, WATCHDOG) and the wsgi@NAME units.

Only active when systemd started the daemon (NOTIFY_SOCKET set). The units
follow the services: when a service starts without its unit (at boot, or by
`wsgictl start`), the daemon starts `wsgi@NAME.service` too, whose watcher
then mirrors the service, so `systemctl` and `wsgictl` never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.state.service import ServiceRuntime

log = logging.getLogger("wsgi-supervisor")


class Systemd:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        units: bool,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
        records: Callable[[], Iterable[ServiceRuntime]],
        undelegated: bool = False,
    ):
        self.loop = loop
        # the unit did not delegate its control group: STATUS= (what `systemctl status` shows) says so
        self.undelegated = undelegated
        self.spawn = spawn
        self.records = records
        self.active = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notify = None
        self._notify_failed = False
        self._status_pending = False
        self._units_pending: set[str] = set()
        self._units_started: set[str] = set()  # services whose wsgi@ unit this daemon started
        self.units_enabled = self.active and units
        if self.active:
            from systemd import daemon

            self._notify = daemon.notify

    def notify(self, message: str) -> None:
        if self._notify is None:
            return
        try:
            self._notify(message)
        except OSError as exc:
            # systemd (or whoever set NOTIFY_SOCKET) stopped listening: that costs
            # the services nothing, so it must not take the daemon down
            if not self._notify_failed:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
            self._notify_failed = True

    # -- lifecycle -------------------------------------------------------------

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=" + self.summary())
        self._start_watchdog()

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping every service")

    def _start_watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not self.active or not usec or (pid and int(pid) != os.getpid()):
            return
        interval = int(usec) / 1e6 / 2

        def ping() -> None:
            self.notify("WATCHDOG=1")
            self.loop.call_later(interval, ping)

        ping()

    # -- status ------------------------------------------------------------------

    def summary(self) -> str:
        counts = Counter(str(svc.state) for svc in self.records())
        order = [str(s) for s in State]
        parts = [f"{counts[s]} {s}" for s in order if counts[s]]
        summary = ", ".join(parts) if parts else "no services"
        if self.undelegated:
            summary += "; control group not delegated: add Delegate=yes (see the journal)"
        return summary

    def changed(self, svc: ServiceRuntime) -> None:
        if not self.active:
            return
        if not self._status_pending:
            self._status_pending = True
            self.loop.call_later(0.1, self._send_status)
        if self.units_enabled and svc.state == State.STARTING and svc.name not in self._units_started:
            self._units_started.add(svc.name)
            self._units_pending.add(svc.name)
            if len(self._units_pending) == 1:
                self.loop.call_later(0.05, self._start_units)
        elif svc.state in (State.STOPPED, State.FAILED):
            self._units_started.discard(svc.name)

    def _send_status(self) -> None:
        self._status_pending = False
        self.notify("STATUS=" + self.summary())

    def _start_units(self) -> None:
        names = sorted(self._units_pending)
        self._units_pending.clear()
        if names:
            self.spawn(self._systemctl_start(names), "units")

    async def _systemctl_start(self, names: list[str]) -> None:
        units = [f"wsgi@{name}.service" for name in names]
        try:
            proc = await asyncio.create_subprocess_exec(
                "systemctl",
                "start",
                "--no-block",
                *units,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
        except OSError as exc:
            log.warning("cannot start the units of %s: %s", ", ".join(names), exc)
            return
        if proc.returncode:
            log.warning("systemctl start %s: %s", " ".join(units), err.decode(errors="replace").strip())
