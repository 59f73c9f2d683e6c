"""A file's `[defaults]` table: keys that every `[services.NAME]` of the same file takes unless it sets them.

Per-host values (venv, user, config dir) are then said once per file. The
rules, which README states:

- a default applies only to the services it fits: an api key (`processes`,
  `health`, `protocol`…) to the APIs, a worker key (`notify`, `ready_after`…)
  to the workers, a `uwsgi` or `gunicorn` table to the APIs that server runs;
  a default that fits no service of its file is an error (it would do nothing);
- the tables (`environment`, `uwsgi`, `gunicorn`) merge, the service's entries
  winning one by one; every other value, lists included, is replaced whole;
- what names one service and no other (`kind`, `app`, `paste`, `paste_app`,
  `command`, `mount`) cannot be a default.

Pure functions; `loading.py` validates the values with the models and locates the problems.
"""

from __future__ import annotations

from typing import Any

from supervisor.manifest.models import ApiService, WorkerService

SECTION = "defaults"

PER_SERVICE = {
    "kind": "each service says what it is",
    "app": "each API names its own app",
    "paste": "each API names its own app",
    "paste_app": "each API names its own app",
    "command": "each worker names its own command",
    "mount": "each API has its own URL prefix (two APIs cannot share one)",
}
MERGED = ("environment", "uwsgi", "gunicorn")
SERVER_TABLES = ("uwsgi", "gunicorn")

API_KEYS = frozenset(ApiService.model_fields) - PER_SERVICE.keys()
WORKER_KEYS = frozenset(WorkerService.model_fields) - PER_SERVICE.keys()


def server_of(table: dict[str, Any], defaults: dict[str, Any]) -> Any:
    """The server an API table will run under once its defaults apply."""
    return table.get("server", defaults.get("server", "uwsgi"))


def fits(key: str, kind: Any, server: Any) -> bool:
    """Whether a default `key` applies to a service of this kind (and, for an API, server)."""
    if key in SERVER_TABLES:
        return kind == "api" and server == key
    return key in (API_KEYS if kind == "api" else WORKER_KEYS if kind == "worker" else ())


def where_it_fits(key: str) -> str:
    """Which services a default can apply to, for the message of one that applies to none."""
    if key in SERVER_TABLES:
        return f"it applies to APIs with server = {key!r} only"
    if key in API_KEYS and key in WORKER_KEYS:
        return "it applies to every service"
    return "it applies to api services only" if key in API_KEYS else "it applies to worker services only"


def apply(defaults: dict[str, Any], table: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The service's table with the defaults that fit it, and the keys whose value came from the defaults.

    A merged table counts as defaulted only when the service has none of its own.
    """
    kind = table.get("kind")
    server = server_of(table, defaults)
    merged = dict(table)
    taken = set()
    for key, value in defaults.items():
        if not fits(key, kind, server):
            continue
        if key not in table:
            merged[key] = value
            taken.add(key)
        elif key in MERGED and isinstance(value, dict) and isinstance(table[key], dict):
            merged[key] = {**value, **table[key]}
    return merged, frozenset(taken)
