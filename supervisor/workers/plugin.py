"""The runner of worker services, in the registry (supervisor/registry.py) beside the servers of APIs.

A manifest never names it: every `kind = "worker"` service runs under it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.registry import Parts, Server

if TYPE_CHECKING:
    from supervisor.state.drivers import Driver


def make(parts: Parts) -> Driver:
    from supervisor.workers.driver import ProcessDriver

    return ProcessDriver(parts.context, parts.take)


SERVER = Server("process", make)
