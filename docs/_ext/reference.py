"""Reference tables written from the code when the docs are built.

A page names a table with a comment line of its own, e.g.
`<!-- generated: daemon-options -->`; this extension puts the table in its
place before the page is parsed. What a table says is therefore what the
code declares: the daemon's options (supervisor/config.py), the manifest's
keys (the pydantic models of supervisor/manifest/models.py) and every
wsgictl command with its options (supervisor/cli/commands.py's parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


def daemon_options() -> str:
    from supervisor import config

    return config.options_table()


# ---- the manifest's keys -------------------------------------------------------------


def type_text(annotation: Any) -> str:
    """A field's type as an operator writes it in TOML."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = list(dict.fromkeys(type_text(a) for a in args if a is not type(None)))
        if kinds == ["number", "integer"]:  # seconds: 10 or 2.5
            return "number"
        return " or ".join(kinds)
    if origin is typing.Literal:
        return " or ".join(f'`"{a}"`' for a in args)
    if origin is tuple:
        return f"list of {type_text(args[0])}s"
    if origin is dict:
        return "table"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds_text(info: FieldInfo) -> str:
    words = []
    for item in info.metadata:
        for kind, sign, attribute in ((Gt, ">", "gt"), (Ge, "≥", "ge"), (Lt, "<", "lt"), (Le, "≤", "le")):
            if isinstance(item, kind):
                words.append(f"{sign} {getattr(item, attribute)}")
        if isinstance(item, MinLen):
            words.append(f"at least {item.min_length} item")
    return ", ".join(words)


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        return "`{}`" if isinstance(value, dict) else "`[]`"
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "-"
    if isinstance(info.default, bool):
        return f"`{str(info.default).lower()}`"
    if isinstance(info.default, str):
        return f'`"{info.default}"`'
    if isinstance(info.default, tuple):
        return "`[]`" if not info.default else f"`{list(info.default)}`"
    return f"`{info.default:g}`" if isinstance(info.default, float) else f"`{info.default}`"


def manifest_keys() -> str:
    from supervisor.manifest.models import ApiService, WorkerService

    kinds = {"api": ApiService.model_fields, "worker": WorkerService.model_fields}
    rows = [
        "| key | for | type | default | limits | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    keys = list(dict.fromkeys(["kind", *kinds["api"], *kinds["worker"]]))
    for key in keys:
        where = [kind for kind, fields in kinds.items() if key in fields]
        infos = [kinds[kind][key] for kind in where]
        if key == "kind":
            rows.append('| `kind` | both | `"api"` or `"worker"` | required | | what the service is |')
            continue
        texts = list(dict.fromkeys(info.description or "" for info in infos))
        pairs = zip(where, infos, strict=True)
        what = texts[0] if len(texts) == 1 else "; ".join(f"{kind}: {info.description}" for kind, info in pairs)
        cells = [
            f"`{key}`",
            "both" if len(where) == 2 else where[0],
            " / ".join(dict.fromkeys(type_text(i.annotation) for i in infos)),
            " / ".join(dict.fromkeys(default_text(i) for i in infos)),
            " / ".join(dict.fromkeys(bounds_text(i) for i in infos)),
            cell(what),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# ---- wsgictl's commands ---------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command of a parser, nested ones (`units install`) included, in declaration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from subcommands(sub, full + " ")
                else:
                    yield full, sub


def hidden(parser: argparse.ArgumentParser) -> set[str]:
    """Commands without a help text: internal (shell completion's helper)."""
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            shown = {choice.dest for choice in action._choices_actions}
            names |= {name for name in action.choices if name not in shown}
    return names


def option_rows(parser: argparse.ArgumentParser, skip: set[str]) -> list[tuple[str, str]]:
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if any(flag in skip for flag in action.option_strings):
            continue
        if action.option_strings:
            flags = ", ".join(action.option_strings)
            if action.nargs != 0:
                flags += f" {action.metavar or action.dest.upper()}"
        else:
            flags = action.metavar or action.dest
            if action.choices:
                flags = "{" + ",".join(action.choices) + "}"
        text = action.help % {"default": action.default} if action.help else ""
        if not text and action.metavar == "NAME":
            text = "services of the manifest" if action.nargs == "*" else "a service of the manifest"
        rows.append((flags, text))
    return rows


COMMON_USAGE = "[-h] [--runtime-dir DIR] [--conf-dir DIR] "  # every command's: said once


def wsgictl_parser() -> argparse.ArgumentParser:
    """wsgictl's parser as a fresh shell would build it: its help names no directory of this environment."""
    from supervisor.cli.commands import build_parser

    saved = {name: os.environ.pop(name) for name in ("WSGI_RUNTIME_DIR", "WSGI_CONF_DIR") if name in os.environ}
    try:
        return build_parser()
    finally:
        os.environ.update(saved)


def commands(build: Callable[[], argparse.ArgumentParser] | None = None) -> Iterator[tuple[str, str, str, list]]:
    """(name, what, usage, [(option, what)]) for each command of wsgictl, internal ones left out."""
    parser = wsgictl_parser() if build is None else build()
    internal = hidden(parser)
    common = {"-h", "--help", "--runtime-dir", "--conf-dir"}
    for name, sub in subcommands(parser):
        if name in internal:
            continue
        usage = " ".join(sub.format_usage().split())[len("usage: ") :].replace(COMMON_USAGE, "")
        yield name, sub.description or "", usage, option_rows(sub, common)


def wsgictl_commands() -> str:
    out = []
    for name, what, usage, rows in commands():
        out += [f"### `wsgictl {name}`", "", what[:1].upper() + what[1:] + ".", "", "```text", usage, "```", ""]
        if rows:
            out += ["| argument | what |", "| --- | --- |"]
            out += [f"| `{flags}` | {cell(text)} |" for flags, text in rows]
            out.append("")
    return "\n".join(out)


# ---- the driver protocol and the events -----------------------------------------------


def _doc(obj: Any) -> str:
    return " ".join((inspect.getdoc(obj) or "").split())


def driver_protocol() -> str:
    from supervisor.state.drivers import Driver

    rows = ["| method | what the lifecycle asks of it |", "| --- | --- |"]
    for name, member in vars(Driver).items():
        if callable(member) and not name.startswith("_"):
            parameters = ", ".join(list(inspect.signature(member).parameters)[1:])
            rows.append(f"| `{name}({parameters})` | {cell(_doc(member))} |")
    return "\n".join(rows) + "\n"


def events() -> str:
    from supervisor.state import events as module

    rows = ["| event | carries | what it tells |", "| --- | --- | --- |"]
    for name, kind in vars(module).items():
        if not (inspect.isclass(kind) and dataclasses.is_dataclass(kind) and kind.__module__ == module.__name__):
            continue
        fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(kind))
        what = _doc(kind)
        if what.startswith(f"{name}("):  # the text dataclasses make up for a class without its own
            what = ""
        rows.append(f"| `{name}` | {fields} | {cell(what)} |")
    return "\n".join(rows) + "\n"


TABLES: dict[str, Callable[[], str]] = {
    "driver-protocol": driver_protocol,
    "events": events,
    "daemon-options": daemon_options,
    "manifest-keys": manifest_keys,
    "wsgictl-commands": wsgictl_commands,
}


def fill(text: str) -> str:
    """The page's text with every generated table in place."""

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise ValueError(f"unknown generated table {name!r} (known: {', '.join(TABLES)})")
        return TABLES[name]().rstrip("\n")

    return MARKER.sub(table, text)


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    source[0] = fill(source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
