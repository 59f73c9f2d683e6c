"""Shell completion: what may come at the word being typed, for the shells' scripts in completion/.

The shells run `wsgictl complete INDEX WORD…` (the words of the line, wsgictl's
own first, INDEX the one being typed) and offer what it prints, one a line:
commands, the options of the command (or wsgictl's own), a positional's choices,
and service names, from the running daemon, or from the manifest when no daemon
answers. Nothing printed lets the shell fall back to file names. It must be quick
(every Tab runs it) and quiet (its errors would land on the operator's line).
"""

from __future__ import annotations

import argparse
import contextlib
import tomllib
from pathlib import Path

from supervisor.cli.client import Client, Unreachable

ASK_TIMEOUT = 1.0  # seconds a Tab waits for the daemon before the manifest answers instead


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands a parser offers, those without a help text (internal, like this one) left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            shown = {choice.dest for choice in action._choices_actions}
            return {name: sub for name, sub in action.choices.items() if name in shown}
    return {}


def takes_value(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    action = parser._option_string_actions.get(word)
    return action if action is not None and action.nargs != 0 else None


def service_names(runtime_dir: Path, conf_dir: Path) -> list[str]:
    """The services the daemon knows; the manifest's when no daemon answers."""
    with contextlib.suppress(Unreachable, OSError, ValueError, KeyError):
        reply = Client(runtime_dir, timeout=ASK_TIMEOUT).request({"cmd": "status", "services": [], "lines": 0})
        if reply.get("ok"):
            return sorted(s["name"] for s in reply["services"])
    names: set[str] = set()
    with contextlib.suppress(OSError):
        for path in sorted(conf_dir.glob("*.toml")):
            with contextlib.suppress(OSError, tomllib.TOMLDecodeError, AttributeError):
                names.update(tomllib.loads(path.read_text()).get("services", {}))
    return sorted(names)


def typed_path(word: str) -> Path:
    """A directory as typed on the line: a leading `~` or `~user` is that home (bash passes it as typed,
    and zsh expands it only at the start of a word, not after --option=)."""
    return Path(word).expanduser()


def candidates(root: argparse.ArgumentParser, words: list[str], index: int) -> list[str]:
    """What may come at words[index], given the words before it (words[0] is the program)."""
    current = words[index] if index < len(words) else ""
    parser = root
    paths = {"--runtime-dir": root.get_default("runtime_dir"), "--conf-dir": root.get_default("conf_dir")}
    given: list[str] = []  # positionals of the command, as typed
    expecting: argparse.Action | None = None
    for word in words[1:index]:
        if expecting is not None and word == "=":  # bash splits --option=VALUE at the `=` (COMP_WORDBREAKS)
            continue
        if expecting is not None:
            if expecting.option_strings[0] in paths:
                paths[expecting.option_strings[0]] = typed_path(word)
            expecting = None
            continue
        if word.startswith("--") and "=" in word:  # --option=VALUE, one word
            option, _, value = word.partition("=")
            if option in paths and takes_value(parser, option):
                paths[option] = typed_path(value)
            continue
        if word.startswith("-"):
            expecting = takes_value(parser, word)
            continue
        commands = subcommands(parser)
        if word in commands:
            parser, given = commands[word], []
        else:
            given.append(word)
    if expecting is not None:  # the value of an option: its choices, else (a path, a number) the shell's files
        return [c for c in map(str, expecting.choices or ()) if c.startswith(current)]
    if current.startswith("-"):
        flags = [flag for flag in parser._option_string_actions if flag.startswith("--") or len(flag) == 2]
        return sorted(flag for flag in flags if flag.startswith(current))
    commands = subcommands(parser)
    if commands:
        return [name for name in commands if name.startswith(current)]
    positionals = [a for a in parser._actions if not a.option_strings]
    for action in positionals:
        if action.choices and not given:
            return [str(c) for c in action.choices if str(c).startswith(current)]
        if action.metavar == "NAME" and (action.nargs == "*" or not given):
            names = service_names(paths["--runtime-dir"], paths["--conf-dir"])
            return [n for n in names if n.startswith(current) and n not in given]
    return []


def cmd_complete(root: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[:1] == ["--"]:
        words = words[1:]
    with contextlib.suppress(Exception):  # a Tab never prints a traceback onto the command line
        for candidate in candidates(root, words, args.index):
            print(candidate)
    return 0
