"""The health probe's tokens: one per server instance (a uWSGI vassal, a gunicorn arbiter).

The daemon's own health probe sends a token with its request, so that the
server leaves the request out of the log and the counts (request_marks.py).
A token is made at random when an instance starts and given to that instance
only: a compromised service reads its own token, and with it can hide nothing
of another service's requests, nor of its own next instance's. It lives as
long as its instance: forgotten when the instance is gone, kept in state.json
meanwhile, so that a daemon that adopts the instance still marks its probes.

An instance is named by its server too: while an API moves to the other
server, both run an instance "" of it, and the old one's going must not take
the new one's token along.
"""

from __future__ import annotations

import secrets
from typing import Any

Key = tuple[str, str, str]  # (server, service, instance)


class ProbeTokens:
    def __init__(self, kept: Any = None):
        self.live: dict[Key, str] = {}
        self.kept = _parse(kept)  # what the previous daemon saved, until its instances are adopted

    def issue(self, server: str, name: str, instance: str) -> str:
        """A new token for the instance that starts now (it replaces its predecessor's)."""
        token = self.live[server, name, instance] = secrets.token_hex(16)
        return token

    def adopt(self, server: str, name: str, instance: str) -> None:
        """The instance a previous daemon started serves on: its token carries over."""
        token = self.kept.get((server, name, instance))
        if token is not None:
            self.live[server, name, instance] = token

    def adopted_all(self) -> None:
        """Adoption is over: what was kept and not adopted belonged to instances that are gone."""
        self.kept = {}

    def get(self, server: str, name: str, instance: str) -> str:
        return self.live.get((server, name, instance), "")

    def of(self, name: str) -> tuple[str, ...]:
        """The tokens of the service's live instances (two while it reloads or moves: a probe may reach either)."""
        return tuple(token for (_, service, _), token in sorted(self.live.items()) if service == name)

    def drop(self, server: str, name: str, instance: str) -> None:
        self.live.pop((server, name, instance), None)

    def to_json(self) -> dict[str, dict[str, dict[str, str]]]:
        """{service: {server: {instance: token}}}"""
        saved: dict[str, dict[str, dict[str, str]]] = {}
        for (server, name, instance), token in sorted(self.live.items()):
            saved.setdefault(name, {}).setdefault(server, {})[instance] = token
        return saved


def _parse(kept: Any) -> dict[Key, str]:
    found: dict[Key, str] = {}
    if not isinstance(kept, dict):
        return found
    for name, servers in kept.items():
        for server, instances in servers.items() if isinstance(servers, dict) else ():
            for instance, token in instances.items() if isinstance(instances, dict) else ():
                if isinstance(token, str) and len(token) >= 16:
                    found[str(server), str(name), str(instance)] = token
    return found
