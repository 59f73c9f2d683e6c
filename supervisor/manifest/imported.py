"""What `wsgictl import` makes of one service, whatever it was read from (uWSGI, Apache,
systemd or gunicorn): shared by the importers, so that neither imports the other."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from supervisor.manifest.models import SERVICE_NAME


class ImportProblem(Exception):
    """An input that cannot be imported at all (wsgictl import says why, and writes nothing)."""


@dataclass
class Imported:
    name: str
    source: str
    table: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    socket: str | None = None
    callable: str | None = None


def service_name(stem: str) -> str:
    """`keystone-uwsgi-public` -> `keystone-public`; `nova-api-uwsgi` -> `nova-api`."""
    parts = [p for p in re.split(r"[^a-z0-9]+", stem.lower()) if p and p not in ("uwsgi", "wsgi", "ini")]
    name = "-".join(parts) or "service"
    return name if SERVICE_NAME.fullmatch(name) else f"s-{name}"


def set_paste(svc: Imported, uri: str) -> None:
    """`config:FILE#NAME` (uWSGI's `paste` option) as the `paste` and `paste_app` keys."""
    if not uri.startswith("config:"):
        svc.notes.append(f"paste = {uri}: only config: URIs are carried over; set `paste` by hand")
        return
    path, _, name = uri[len("config:") :].partition("#")
    svc.table["paste"] = path
    if name and name != "main":
        svc.table["paste_app"] = name
