"""`${NAME}` in a worker's `command`, an API's `args` or `paste`: the value of NAME in the service's `environment`.

So that a per-host value said once (a config dir, in the file's `[defaults]`
environment, where the APIs read it too) reaches the argv of every service
and the paste file of an API,
as systemd expands `${NAME}` in `ExecStart=` from `Environment=`. Only the
braced form is read; `$${` is a literal `${`; a name the environment does
not have is an error, not an empty string. Done while loading, so what the
daemon runs and `wsgictl check` shows is the expanded argv.
"""

from __future__ import annotations

import re
from typing import Any

REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ARGV_KEYS = ("command", "args")
PATH_KEYS = ("paste",)


class Unknown(ValueError):
    """An item names a variable the service's environment does not set."""


def expand(item: str, environment: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "${"
        if name not in environment:
            raise Unknown(name)
        return environment[name]

    return REFERENCE.sub(value, item)


def expand_argv(table: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The table with `${NAME}` expanded in its command, args or paste, and (key, message) for each item that
    names an unknown variable (the item stays as written, for the model to check the rest)."""
    environment = table.get("environment")
    if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
        environment = {}
    problems: list[tuple[str, str]] = []
    out = dict(table)
    for key in PATH_KEYS:
        value = table.get(key)
        if isinstance(value, str) and "${" in value:
            try:
                out[key] = expand(value, environment)
            except Unknown as exc:
                problems.append((key, _unset(exc)))
    for key in ARGV_KEYS:
        argv = table.get(key)
        if not isinstance(argv, list):
            continue
        items = []
        for index, item in enumerate(argv):
            if isinstance(item, str) and "${" in item:
                try:
                    item = expand(item, environment)
                except Unknown as exc:
                    problems.append((f"{key}.{index}", _unset(exc)))
            items.append(item)
        out[key] = items
    return out, problems


def _unset(name: Unknown) -> str:
    return (
        f"names ${{{name}}}, which the service's environment does not set "
        "(set it in its environment, or in the file's [defaults] environment)"
    )
