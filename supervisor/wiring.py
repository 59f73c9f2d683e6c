"""The daemon's parts, built in one place: what a supervisor is given (the composition root's half
that main.py calls). Only here and in main.py are the servers' packages and the registry named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervisor.listeners import HeldSockets
from supervisor.logs.pipeline import LogIntake
from supervisor.observe.health import HealthChecks
from supervisor.observe.sampler import Sampler
from supervisor.registry import Parts, Registry
from supervisor.state.supervisor import Collaborators, Supervisor
from supervisor.surfaces.systemd import Systemd


def assemble(registry: Registry, early: dict[str, Any] | None = None) -> Callable[[Supervisor], Collaborators]:
    """What builds a supervisor's collaborators from its callbacks: one driver per server of
    `registry` (in its order), each given what its `early` step returned."""
    started = early or {}

    def build(sup: Supervisor) -> Collaborators:
        context = sup.context
        sockets = HeldSockets(sup.layout, sup.config.socket_mode, sup.config.socket_gid)
        sampler = Sampler(context, sup.save_soon, sockets)
        routes = sup.logs
        intake = LogIntake(sup.loop, sup.layout, routes.emit, routes.owner_of, routes.known, routes.noise, say=sup.say)
        drivers = {
            name: server.make(Parts(context, sampler, sockets, intake.take, started.get(name)))
            for name, server in registry.servers.items()
        }
        health = HealthChecks(sup.report, sup.spawn_task, sup.layout.api_socket, sup.probe_tokens.of)
        systemd = Systemd(sup.loop, sup.config.units, sup.spawn_task, sup.records, bool(sup.groups.undelegated))
        return Collaborators(drivers, sampler, sockets, intake, health, systemd)

    return build
