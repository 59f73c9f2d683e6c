"""uWSGI as a server of the registry (supervisor/registry.py): vassals of one emperor.

Light to import: the driver is imported when the daemon makes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.registry import Parts, Server
from supervisor.uwsgi.emperor import Emperor

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.layout import Layout
    from supervisor.state.drivers import Driver


def start_emperor(config: Config, layout: Layout) -> Emperor:
    """Start the emperor (or adopt the one a previous daemon left) while the manifest is read."""
    emperor = Emperor(layout)
    emperor.start_or_adopt()
    return emperor


def make(parts: Parts) -> Driver:
    from supervisor.uwsgi.driver import VassalDriver

    emperor = parts.early if parts.early is not None else Emperor(parts.context.layout)
    return VassalDriver(parts.context, parts.sampler, emperor, parts.sockets, parts.take)


SERVER = Server("uwsgi", make, early=start_emperor)
