"""Filters of the wsgi_supervisor role: inventory variables -> a wsgi-supervisor manifest.

`wsgi_supervisor_toml` renders a TOML document (TOML 1.0) from a mapping of
strings, integers, floats, booleans, lists and tables, as the role's
manifest template uses it: `{{ {'services': wsgi_supervisor_services} |
wsgi_supervisor_toml }}`. It is written here (standard library only, so it
runs on any Ansible control node) rather than taken from tomli-w, which the
control node need not have. Every string is a basic string with TOML's
escapes, so a value can never add a key or a table; a value TOML cannot
hold (None, a date, an object) fails the render, naming where it is.

`wsgi_supervisor_relative_paths` lists the `app`/`paste` values that are
relative file paths: wsgi-supervisor resolves those against the manifest
file's own directory, which is the staging directory while the role checks
a manifest, so the role asks for absolute paths instead.

`wsgi_supervisor_document` puts the role's file together: the services of
`wsgi_supervisor_manifest_source` (a manifest file, e.g. one of
contrib/openstack/, read on the control node) and of `wsgi_supervisor_services`,
and the file's `[defaults]` with this host's `wsgi_supervisor_defaults` over
the source's (environment entries one by one), so that per-host values (venv,
user, config dir) are said once per host.

`wsgi_supervisor_enabled` lists the services that start with the daemon
(`enabled` not false): the ones the role waits for after applying a change.

`wsgi_supervisor_health_base` turns the daemon's --metrics-listen into the
URL to ask on the host itself (an all-interfaces address on loopback).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported on its own (the tests)

    class AnsibleFilterError(Exception):  # type: ignore[no-redef]
        pass


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
INT64 = (-(2**63), 2**63 - 1)
ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
INLINE_WIDTH = 100  # an array longer than this on one line is written one item a line


def _where(path: Sequence[str]) -> str:
    return ".".join(path) or "the document"


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: object, path: Sequence[str]) -> str:
    if not isinstance(key, str):
        raise AnsibleFilterError(f"TOML keys are strings: {_where(path)} has the key {key!r}")
    return key if BARE_KEY.fullmatch(key) else _string(key)


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_array(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _value(value: object, path: list[str]) -> str:
    """One value, inline: a scalar, an array or an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise AnsibleFilterError(f"{_where(path)}: {value} does not fit a TOML integer (64 bits)")
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(value))
    if isinstance(value, str):
        return _string(str(value))
    if _is_table(value):
        items = [f"{_key(k, path)} = {_value(v, [*path, str(k)])}" for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if _is_array(value):
        items = [_value(v, [*path, f"[{i}]"]) for i, v in enumerate(value)]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= INLINE_WIDTH or any("\n" in item for item in items):
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    if value is None:
        raise AnsibleFilterError(f"{_where(path)}: TOML has no null; leave the key out instead")
    raise AnsibleFilterError(
        f"{_where(path)}: a {type(value).__name__} cannot be written as TOML (use strings, numbers, booleans, "
        "lists and tables)"
    )


def _table(table: Mapping, path: list[str], out: list[str]) -> None:
    """A table as `[a.b]` with its keys, then its sub-tables, each under its own header."""
    for key in table:
        _key(key, path)
    plain = [(k, v) for k, v in table.items() if not _is_table(v)]
    nested = [(k, v) for k, v in table.items() if _is_table(v)]
    header = ".".join(_key(p, path[:i]) for i, p in enumerate(path))
    # a table that holds only tables needs no header of its own ([services] before [services.x])
    if path and (plain or not nested):
        if out:
            out.append("")
        out.append(f"[{header}]")
    for key, value in plain:
        out.append(f"{_key(key, path)} = {_value(value, [*path, str(key)])}")
    for key, value in nested:
        _table(value, [*path, str(key)], out)


def wsgi_supervisor_toml(data: Mapping) -> str:
    """A mapping as a TOML document (ends with a newline)."""
    if not _is_table(data):
        raise AnsibleFilterError(f"a TOML document is a table (a dict), not a {type(data).__name__}")
    out: list[str] = []
    _table(data, [], out)
    return "\n".join(out) + "\n"


def _relative_file(value: object, app: bool) -> bool:
    if not isinstance(value, str) or value.startswith("/"):
        return False
    if app:
        return value.endswith(".py") or "/" in value  # else a module path, 'package.module:callable'
    return not value.startswith(("config:", "egg:", "call:"))


def wsgi_supervisor_relative_paths(services: Mapping) -> list[str]:
    """'NAME.KEY = VALUE' for every app or paste value that is a relative file path."""
    found = []
    for name, table in (services or {}).items():
        if not _is_table(table):
            continue
        for key in ("app", "paste"):
            if _relative_file(table.get(key), app=key == "app"):
                found.append(f"{name}.{key} = {table[key]!r}")
    return found


def wsgi_supervisor_document(services: Mapping, defaults: Mapping | None = None, source: str = "") -> dict:
    """{'defaults': ..., 'services': ...} of the role's file (no 'defaults' when there are none)."""
    parsed: Mapping = {}
    if source:
        try:
            import tomllib
        except ImportError:  # Python before 3.11 on the control node
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            parsed = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise AnsibleFilterError(f"wsgi_supervisor_manifest_source is not valid TOML: {exc}") from None
    merged = dict(parsed.get("defaults") or {})
    for key, value in (defaults or {}).items():
        if key == "environment" and _is_table(value) and _is_table(merged.get(key)):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    document: dict = {"defaults": merged} if merged else {}
    document["services"] = {**(parsed.get("services") or {}), **(services or {})}
    return document


def wsgi_supervisor_enabled(services: Mapping) -> list[str]:
    """The names of the services that start with the daemon (`enabled` is not false)."""
    services = services or {}
    return [name for name, table in services.items() if not _is_table(table) or table.get("enabled") is not False]


def wsgi_supervisor_health_base(listen: str) -> str:
    """'HOST:PORT' of --metrics-listen -> 'http://HOST:PORT' to ask on the host; '' when it is off."""
    listen = str(listen or "")
    if ":" not in listen:
        return ""
    host, port = listen.rsplit(":", 1)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class FilterModule:
    def filters(self):
        return {
            "wsgi_supervisor_toml": wsgi_supervisor_toml,
            "wsgi_supervisor_relative_paths": wsgi_supervisor_relative_paths,
            "wsgi_supervisor_enabled": wsgi_supervisor_enabled,
            "wsgi_supervisor_document": wsgi_supervisor_document,
            "wsgi_supervisor_health_base": wsgi_supervisor_health_base,
        }
