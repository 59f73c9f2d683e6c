"""The health probe's tokens: one per server instance (a uWSGI vassal, a gunicorn arbiter).

The daemon's own health probe sends a token with its request, so that the
server leaves the request out of the log and the counts (request_marks.py).
A token is made at random when an instance starts and given to that instance
only: a compromised service reads its own token, and with it can hide nothing
of another service's requests, nor of its own next instance's. It lives as
long as its instance: forgotten when the instance is gone, kept in state.json
meanwhile, so that a daemon that adopts the instance still marks its probes.
"""

from __future__ import annotations

import secrets
from typing import Any

Key = tuple[str, str]  # (service, instance)


class ProbeTokens:
    def __init__(self, kept: Any = None):
        self.live: dict[Key, str] = {}
        self.kept = _parse(kept)  # what the previous daemon saved, until its instances are adopted

    def issue(self, name: str, instance: str) -> str:
        """A new token for the instance that starts now (it replaces its predecessor's)."""
        token = self.live[name, instance] = secrets.token_hex(16)
        return token

    def adopt(self, name: str, instance: str) -> None:
        """The instance a previous daemon started serves on: its token carries over."""
        token = self.kept.get((name, instance))
        if token is not None:
            self.live[name, instance] = token

    def adopted_all(self) -> None:
        """Adoption is over: what was kept and not adopted belonged to instances that are gone."""
        self.kept = {}

    def get(self, name: str, instance: str) -> str:
        return self.live.get((name, instance), "")

    def of(self, name: str) -> tuple[str, ...]:
        """The tokens of the service's live instances (two while a reload runs: a probe may reach either)."""
        return tuple(token for (service, _), token in sorted(self.live.items()) if service == name)

    def drop(self, name: str, instance: str) -> None:
        self.live.pop((name, instance), None)

    def to_json(self) -> dict[str, dict[str, str]]:
        saved: dict[str, dict[str, str]] = {}
        for (name, instance), token in sorted(self.live.items()):
            saved.setdefault(name, {})[instance] = token
        return saved


def _parse(kept: Any) -> dict[Key, str]:
    if not isinstance(kept, dict):
        return {}
    found = {}
    for name, instances in kept.items():
        if isinstance(instances, dict):
            for instance, token in instances.items():
                if isinstance(token, str) and len(token) >= 16:
                    found[str(name), str(instance)] = token
    return found
