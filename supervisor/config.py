"""The daemon's settings, each declared once: name, type, default and help.

`Config`'s fields are the declaration. The daemon's command line
(`parser`, `add_arguments`), the `Config` it builds (`from_arguments`), the
table of options in the documentation (`options_table`, put into
docs/daemon.md when the docs are built) and the man page wsgi-supervisor(8)
are derived from them, so a default is written in one place. Light (standard
library only): read before the heavy imports, and by the docs' build.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.layout import DEFAULT_CONF_DIR, DEFAULT_RUNTIME_DIR

# The PATH a worker runs with (after its venv's bin/; manifest.worker_path), so the one
# `wsgictl check` looks its command up on, and the emperor's and so the vassals' when the
# daemon has none. launcher.py, which imports nothing of ours, keeps a copy; a test checks
# that the two agree.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Option:
    """How a setting appears on the command line."""

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None  # the command line's text -> the value; None: a switch
    metavar: str | None = None
    shown: str | None = None  # the default as one would write it on the command line


def option(
    flag: str,
    help: str,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    shown: str | None = None,
) -> dict[str, Option]:
    """A setting's field metadata: `field(default=…, metadata=option(…))`."""
    return {"option": Option(flag, help, parse, metavar, shown)}


def _directory(value: str) -> Path:
    return Path(value).resolve()


def _group(value: str) -> int | None:
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such group {value!r}") from None


def _mode(value: str) -> int:
    """A file mode in octal, as chmod takes it: 0640 or 640."""
    try:
        mode = int(value, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an octal mode like 0640") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{value!r} is not a mode: permission bits only (0 to 0777)")
    return mode


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: at least 1")
    return number


def _auto_yes_no(value: str) -> bool | None:
    try:
        return {"auto": None, "yes": True, "no": False}[value]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of auto, yes, no") from None


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"{value!r} is not one of text, json")
    return value


def _address(value: str) -> str | None:
    return value or None


@dataclass(frozen=True)
class Config:
    conf_dir: Path = field(
        default=DEFAULT_CONF_DIR,
        metadata=option("--conf-dir", "the manifest: every .toml file in DIR", _directory, metavar="DIR"),
    )
    runtime_dir: Path = field(
        default=DEFAULT_RUNTIME_DIR,
        metadata=option("--runtime-dir", "sockets and state", _directory, metavar="DIR"),
    )
    socket_gid: int | None = field(
        default=None,
        metadata=option(
            "--socket-group", "group that may use the API sockets (the front end's, e.g. www-data)", _group, "GROUP"
        ),
    )
    control_gid: int | None = field(
        default=None,
        metadata=option("--control-group", "group that may use the control socket besides root", _group, "GROUP"),
    )
    log_dir: Path | None = field(
        default=None,
        metadata=option("--log-dir", "write each service's log to DIR/NAME.log (rotated by size)", Path, "DIR"),
    )
    log_dir_mode: int = field(
        default=0o750,
        metadata=option(
            "--log-dir-mode",
            "mode of the log dir (octal; set at start, with its owner and group, unless it holds other files)",
            _mode,
            "MODE",
            shown="0750",
        ),
    )
    log_file_mode: int = field(
        default=0o640,
        metadata=option(
            "--log-file-mode",
            "mode of each log file (octal; set as it is opened: an older, wider file is tightened)",
            _mode,
            "MODE",
            shown="0640",
        ),
    )
    log_gid: int | None = field(
        default=None,
        metadata=option(
            "--log-group", "group of the log dir and files, who may read them (default: the daemon's)", _group, "GROUP"
        ),
    )
    log_max_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=option("--log-max-bytes", "rotate a service's log file before it passes this size", int, "BYTES"),
    )
    log_keep: int = field(
        default=5,
        metadata=option("--log-keep", "rotated files kept per service (NAME.log.1 … NAME.log.N)", int, "N"),
    )
    journal: bool | None = field(
        default=None,
        metadata=option(
            "--journal",
            "send every line to journald (auto: when its socket is there)",
            _auto_yes_no,
            "{auto,yes,no}",
            shown="auto",
        ),
    )
    log_format: str = field(
        default="text",
        metadata=option(
            "--log-format",
            "text, or json: one JSON object a line with journald's field names, in the files and on the console",
            _log_format,
            "{text,json}",
        ),
    )
    quiet: bool = field(
        default=False, metadata=option("--quiet", "do not echo service lines (and the summary) on stdout")
    )
    metrics_listen: str | None = field(
        default="127.0.0.1:9180",
        metadata=option(
            "--metrics-listen",
            "HOST:PORT of the Prometheus endpoint, /metrics, and of /health (empty: off)",
            _address,
            "HOST:PORT",
        ),
    )
    metrics_max_connections: int = field(
        default=256,
        metadata=option(
            "--metrics-max-connections",
            "connections the metrics listener keeps open at once; past it the oldest idle one is closed "
            "(one that sent no request within 5 s is closed anyway)",
            _positive,
            "N",
        ),
    )
    sample_interval: float = field(
        default=5.0,
        metadata=option(
            "--sample-interval", "seconds between samples of the services (metrics, status)", float, "SECONDS"
        ),
    )
    stop_drain: float = field(
        default=0.0,
        metadata=option(
            "--stop-drain",
            "a stop by systemd (systemctl stop wsgi@NAME or wsgi-supervisor, a host shutdown) or SIGTERM first "
            "takes what it stops out of rotation (/health answers 503) for SECONDS, still serving",
            float,
            "SECONDS",
        ),
    )
    units: bool = field(
        default=True,
        metadata=option(
            "--no-units",
            "under systemd, do not mirror each service into a wsgi@NAME unit (for hosts without units/wsgi@.service)",
        ),
    )
    # not on the command line
    socket_mode: int = 0o660
    control_mode: int = 0o660
    default_venv: Path = field(default_factory=lambda: Path(sys.prefix))


def options() -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(Config) if "option" in f.metadata]


def shown_default(f: dataclasses.Field[Any], o: Option) -> str | None:
    """The default as written on the command line; None for a switch or a setting that is off by default."""
    if o.shown is not None:
        return o.shown
    if o.parse is None or f.default is None:
        return None
    return str(f.default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f, o in options():
        shown = shown_default(f, o)
        text = o.help if shown is None else f"{o.help} (default: {shown})"
        if o.parse is None:
            action = "store_false" if f.default else "store_true"
            parser.add_argument(o.flag, dest=f.name, action=action, help=text)
        else:
            # a text default goes through `parse` like a value given on the command line
            default = shown if shown is not None else f.default
            parser.add_argument(o.flag, dest=f.name, type=o.parse, default=default, metavar=o.metavar, help=text)


def from_arguments(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f, _ in options()})


def parser() -> argparse.ArgumentParser:
    """The daemon's command line (also what its man page is written from)."""
    from supervisor import __version__

    p = argparse.ArgumentParser(
        prog="wsgi-supervisor",
        description="one daemon per host for OpenStack-style WSGI APIs and the worker services beside them",
    )
    add_arguments(p)  # every setting, as Config declares it
    p.add_argument("--version", action="version", version=f"wsgi-supervisor {__version__}")
    return p


def options_table() -> str:
    """The daemon's options as a markdown table, for docs/daemon.md."""
    rows = ["| option | default | what |", "| --- | --- | --- |"]
    for f, o in options():
        usage = f"`{o.flag} {o.metavar}`" if o.metavar else f"`{o.flag}`"
        shown = shown_default(f, o)
        rows.append(f"| {usage} | {f'`{shown}`' if shown is not None else '-'} | {o.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit("the options table is written into docs/daemon.md as the docs are built (make docs): nothing to do")
    print(options_table(), end="")
