"""gunicorn as a server of the registry (supervisor/registry.py): one arbiter per service.

Light to import: the driver is imported when the daemon makes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.registry import Parts, Server

if TYPE_CHECKING:
    from supervisor.state.drivers import Driver


def make(parts: Parts) -> Driver:
    from supervisor.gunicorn.driver import GunicornDriver

    return GunicornDriver(parts.context, parts.sampler, parts.sockets, parts.take)


SERVER = Server("gunicorn", make)
