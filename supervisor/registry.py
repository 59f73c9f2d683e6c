"""The servers the daemon can run services under, by the name a manifest gives them.

A server is a `Server` spec: its name, the plug-in API version it was written
for, and a factory that makes its `Driver` (state/drivers.py). The built-ins
(uwsgi, gunicorn, and `process`, which runs worker services) come from a
static table, so that they work whether or not this distribution's metadata
is installed; a third server is a separate distribution that declares an
entry point in the group `wsgi_supervisor.servers`:

    [project.entry-points."wsgi_supervisor.servers"]
    toy = "toy_server:SERVER"

Only main.py fills a registry (the composition root); the core never imports
this module. Importing it is cheap: a spec is imported only when loaded, and
the names of installed servers are read from metadata without importing any.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from supervisor.config import Config
    from supervisor.layout import Layout
    from supervisor.listeners import HeldSockets
    from supervisor.logs.pipes import Take
    from supervisor.observe.sampler import Sampler
    from supervisor.state.drivers import Context, Driver

log = logging.getLogger("wsgi-supervisor")

GROUP = "wsgi_supervisor.servers"
# the version of the plug-in contract (Server, Parts, Driver); it grows compatibly (new Parts
# fields with defaults, new optional driver methods found by their presence): a server written
# for an older version keeps working, one written for a newer one is refused
API_VERSION = 1
# by name: where each built-in's spec lives ("process" runs worker services: no manifest names it)
BUILTIN = {
    "uwsgi": "supervisor.uwsgi.plugin:SERVER",
    "gunicorn": "supervisor.gunicorn.plugin:SERVER",
    "process": "supervisor.workers.plugin:SERVER",
}
NOT_A_SERVER = ("process",)


@dataclass(frozen=True)
class Parts:
    """What a server's factory is given (registry.Server.make): the daemon's parts that drivers share."""

    context: Context
    sampler: Sampler  # a driver adds its own sources of numbers (sampler.sources)
    sockets: HeldSockets  # the APIs' listening sockets, held by the daemon across restarts of a service
    take: Take  # (service, stream, payload): a service's output into the log intake
    early: Any = None  # what the server's `early` step returned, if it has one


@dataclass(frozen=True)
class Server:
    """What a server plug-in declares. `make` builds its driver once per daemon, from the parts
    the daemon shares with drivers (state/drivers.py `Parts`).

    `early`, when set, runs before the manifest is read (the daemon's start-up does both at once:
    uWSGI's emperor comes up meanwhile); what it returns is `Parts.early` for `make`, and it must
    clean up after itself when it raises."""

    name: str
    make: Callable[[Parts], Driver]
    api_version: int = API_VERSION
    early: Callable[[Config, Layout], Any] | None = None


class PluginError(Exception):
    """A server that is installed but cannot be used; says which distribution and why."""


@dataclass
class Registry:
    """The loaded servers by name, each with the distribution (and its version) it came from."""

    servers: dict[str, Server] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # name: why it could not be loaded

    @classmethod
    def builtin(cls) -> Registry:
        registry = cls()
        for where in BUILTIN.values():
            registry.add(_resolve(where), "wsgi-supervisor (built in)")
        return registry

    def add(self, server: Server, origin: str) -> None:
        """A server by its name; a name taken by another server is refused (nothing overrides a server)."""
        if not isinstance(server, Server):
            raise PluginError(f"{origin}: {server!r} is not a supervisor.registry.Server")
        if server.api_version > API_VERSION:
            raise PluginError(
                f"{origin}: server {server.name!r} needs plug-in API version {server.api_version}; "
                f"this wsgi-supervisor offers {API_VERSION}: upgrade wsgi-supervisor"
            )
        taken = self.servers.get(server.name)
        if taken is not None and taken is not server:
            raise PluginError(f"{origin}: server {server.name!r} is already registered by {self.origins[server.name]}")
        self.servers[server.name] = server
        self.origins.setdefault(server.name, origin)

    def discover(self, points: Iterable[EntryPoint] | None = None) -> None:
        """Load every server installed through the entry point group; one that fails is logged
        and kept in `broken`, so that a manifest using it says why (`problem`)."""
        for point in _server_points() if points is None else points:
            if BUILTIN.get(point.name) == point.value:
                continue  # this distribution's own entry point for a built-in
            origin = _origin(point)
            try:
                server = point.load()
                if not isinstance(server, Server) or server.name != point.name:
                    raise PluginError(f"{origin}: {point.value} is not a Server named {point.name!r}")
                self.add(server, origin)
            except Exception as exc:  # a plug-in's import may raise anything: it must not stop the daemon
                why = str(exc) if isinstance(exc, PluginError) else f"{origin}: {point.value}: {exc!r}"
                log.error("server plug-in %r not loaded: %s", point.name, why)
                self.broken[point.name] = why

    def names(self) -> list[str]:
        """What a manifest's `server =` may name."""
        return sorted(n for n in self.servers if n not in NOT_A_SERVER)

    def problem(self, name: str) -> str | None:
        """Why a manifest cannot use server `name`, or None when it can."""
        if name in self.servers and name not in NOT_A_SERVER:
            return None
        if name in self.broken:
            return f"server {name!r} is installed but could not be loaded: {self.broken[name]}"
        return unknown(name, self.names())


def unknown(name: str, installed: Iterable[str]) -> str:
    return f"{name!r} is not an installed server; installed: {', '.join(sorted(installed))}"


def installed_names() -> list[str]:
    """The servers a manifest may name here, without importing any: the built-ins and every entry point."""
    names = {n for n in BUILTIN if n not in NOT_A_SERVER}
    names.update(point.name for point in _server_points())
    return sorted(names)


def _server_points() -> list[EntryPoint]:
    from importlib.metadata import entry_points  # ~40 ms of imports: not before the emperor starts

    return list(entry_points(group=GROUP))


def _origin(point: EntryPoint) -> str:
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else point.value


def _resolve(where: str) -> Server:
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)
