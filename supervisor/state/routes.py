"""Where every line of output goes, and what the log intake asks of the daemon about a line.

Every line of every service, and of the daemon, passes through `emit`: into its
service's tail (and its lifecycle, which may learn why it is going down), or
the daemon's own, then to every sink (console, journal, files, `wsgictl logs -f`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.layout import DAEMON_NAME
from supervisor.logs.requests import take_request
from supervisor.logs.senders import tree_owner
from supervisor.state.service import TAIL_LINES, LogLine

if TYPE_CHECKING:
    from supervisor.state.lifecycle import Lifecycle
    from supervisor.state.rollover import Rollover
    from supervisor.state.service import ServiceRuntime


class RoutesHost(Protocol):
    """What the routes need of the supervisor: its lifecycles, the retiring ones, and its drivers' hooks."""

    lifecycles: dict[str, Lifecycle]
    rollover: Rollover

    def records(self) -> Iterable[ServiceRuntime]: ...
    def hooks(self, name: str) -> list[Any]: ...


class LogRoutes:
    def __init__(self, host: RoutesHost):
        self.host = host
        self.daemon_tail: deque[LogLine] = deque(maxlen=TAIL_LINES)
        self.sinks: list[Callable[[LogLine], None]] = []

    def emit(self, line: LogLine) -> None:
        """Every line of every service, and of the daemon, passes through here."""
        lc = self.host.lifecycles.get(line.service)
        if line.request is not None and not take_request(lc.svc if lc is not None else None, line.request):
            return
        if lc is not None:
            lc.svc.tail.append(line)
            if line.stream == "o":
                lc.on_line(line.text)
        elif line.service == DAEMON_NAME:
            self.daemon_tail.append(line)
        for sink in self.sinks:
            sink(line)

    def kind_of(self, name: str) -> str:
        lc = self.host.lifecycles.get(name)
        return lc.svc.kind if lc is not None else "daemon"

    def known(self, name: str) -> bool:
        return name in self.host.lifecycles or name in self.host.rollover.retiring

    def noise(self, name: str, text: str) -> bool:
        """The routine line of a server, as the service's driver knows it (in the daemon's log: any
        driver's that speaks there, such as uWSGI's emperor)."""
        lc = self.host.lifecycles.get(name)
        if lc is not None:
            return lc.driver.noise(text)
        return name == DAEMON_NAME and any(hook(text) for hook in self.host.hooks("daemon_noise"))

    def owner_of(self, pid: int) -> str | None:
        """The service whose process tree holds `pid`: below its main process, the serving one or the
        new one of a reload."""
        mains = {}
        for svc in self.host.records():
            for main in (svc.pid, svc.reload.pid if svc.reload is not None else None):
                if main is not None:
                    mains[main] = svc.name
        return tree_owner(pid, mains)
