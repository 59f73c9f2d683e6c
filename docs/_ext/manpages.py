"""wsgictl(1) and wsgi-supervisor(8), written from the programs' argument parsers.

`python docs/_ext/manpages.py man` (`make man`) writes them into man/, from
where the wheel carries them to share/man/; tests/test_docs.py checks that
the pages in man/ are what this writes from today's code, and that groff
reads them without a warning. Standard library only, besides the parsers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(1, str(HERE.parent.parent))

import reference  # noqa: E402

from supervisor import __version__  # noqa: E402


def text(words: str) -> str:
    """Running text for roff: backslashes, dashes and non-ASCII escaped, no request at a line's start."""
    out = []
    for ch in words:
        if ch == "\\":
            out.append("\\e")
        elif ch == "-":
            out.append("\\-")
        elif ord(ch) > 127:
            out.append(f"\\[u{ord(ch):04X}]")
        else:
            out.append(ch)
    line = "".join(out)
    return "\\&" + line if line[:1] in (".", "'") else line


def bold(words: str) -> str:
    return f"\\fB{text(words)}\\fR"


def paragraphs(*blocks: str) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        lines += [".PP", text(" ".join(block.split()))]
    return lines


def options(rows: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for flags, what in rows:
        lines += [".TP", bold(flags), text(what or "")]
    return lines


def page(name: str, section: int, manual: str, summary: str, body: list[str]) -> str:
    head = [
        f'.TH {text(name.upper())} {section} "" "wsgi-supervisor {__version__}" "{manual}"',
        '.\\" written by docs/_ext/manpages.py from the argument parser: edit that, not this',
        ".SH NAME",
        f"{text(name)} \\- {text(summary)}",
    ]
    return "\n".join(head + body) + "\n"


def parser_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return reference.option_rows(parser, skip=set())


def wsgictl() -> str:
    parser = reference.wsgictl_parser()
    body = [
        ".SH SYNOPSIS",
        f"{bold('wsgictl')} [{bold('--runtime-dir')} \\fIDIR\\fR] "
        f"[{bold('--conf-dir')} \\fIDIR\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
    ]
    body += [".SH DESCRIPTION"]
    body += paragraphs(
        "wsgictl asks wsgi-supervisor(8), the daemon that runs a host's WSGI APIs and worker services, what its "
        "services do, and tells it what to do with them: start, stop, restart, reload, drain. It talks to the daemon "
        "on the control socket in the runtime dir (root, the daemon's user and the daemon's --control-group may). "
        "Some commands need no daemon: check, units, proxy-config, import and serve read the manifest themselves.",
        "Services are named as in the manifest; the names are the same for the socket, the logs, the metrics and "
        "the systemd units wsgi@NAME.service.",
    )
    body += [".SH OPTIONS"]
    body += options([r for r in parser_rows(parser) if r[0] != "COMMAND"])
    body += [".SH COMMANDS"]
    for name, what, usage, rows in reference.commands():
        body += [".SS " + text(name), text(usage), ".PP", text(what[:1].upper() + what[1:] + ".")]
        body += options(rows)
    body += [".SH EXIT STATUS"]
    body += paragraphs(
        "As systemctl: 0 when every named service is running or the action succeeded; 3 when a named service is "
        "not running; 4 for a name the manifest does not have; 1 when the daemon cannot be reached or an action "
        "failed. A command whose output goes into a pipe that closes exits quietly with 0."
    )
    body += [
        ".SH ENVIRONMENT",
        ".TP",
        bold("WSGI_RUNTIME_DIR"),
        text("the default of --runtime-dir"),
        ".TP",
        bold("WSGI_CONF_DIR"),
        text("the default of --conf-dir"),
    ]
    body += [
        ".SH FILES",
        ".TP",
        bold("/etc/wsgi-supervisor/conf.d/*.toml"),
        text("the manifest"),
        ".TP",
        bold("/run/wsgi-supervisor/control.sock"),
        text("the daemon's control socket"),
    ]
    body += [
        ".SH SEE ALSO",
        text(
            "wsgi-supervisor(8), systemctl(1), journalctl(1); the documentation in the source tree's docs/ (make docs)"
        ),
    ]
    return page("wsgictl", 1, "User Commands", "control wsgi-supervisor and its services", body)


def daemon() -> str:
    from supervisor import config

    parser = config.parser()
    body = [".SH SYNOPSIS", f"{bold('wsgi-supervisor')} [\\fIOPTIONS\\fR]"]
    body += [".SH DESCRIPTION"]
    body += paragraphs(
        "wsgi-supervisor runs a host's OpenStack-style services: every WSGI API as its own process tree on a unix "
        "socket (a uWSGI emperor vassal, or a gunicorn arbiter), and the worker services beside them, with one "
        "lifecycle, one state model, one log pipeline and one command line, wsgictl(1). The manifest, every .toml "
        "file of --conf-dir, names the services; API NAME listens on RUNTIME-DIR/NAME.sock, which the daemon holds "
        "and hands to each new instance, so a restart or reload refuses no request.",
        "It runs in the foreground. Under systemd it is a Type=notify service (wsgi-supervisor.service, with a unit "
        "wsgi@NAME.service per service: wsgictl units install writes both); it tells systemd it is ready once every "
        "service it starts at boot is running or has had its first try.",
    )
    body += [".SH OPTIONS"]
    body += options(parser_rows(parser))
    body += [
        ".SH SIGNALS",
        ".TP",
        bold("SIGTERM, SIGINT"),
        text("stop every service gracefully (after --stop-drain seconds out of rotation), then exit"),
        ".TP",
        bold("SIGHUP"),
        text("read the manifest again and apply the difference (as wsgictl reload-config)"),
    ]
    body += [
        ".SH FILES",
        ".TP",
        bold("/etc/wsgi-supervisor/conf.d/*.toml"),
        text("the manifest"),
        ".TP",
        bold("/run/wsgi-supervisor/"),
        text("sockets and state: NAME.sock, control.sock, daemon/state.json (what a restarted daemon adopts)"),
    ]
    body += [
        ".SH SEE ALSO",
        text("wsgictl(1), systemd.service(5), journalctl(1); the documentation in the source tree's docs/ (make docs)"),
    ]
    return page("wsgi-supervisor", 8, "System Administration", "one daemon per host for WSGI APIs and workers", body)


PAGES = {"man1/wsgictl.1": wsgictl, "man8/wsgi-supervisor.8": daemon}


def write(directory: Path) -> list[Path]:
    written = []
    for relative, make in PAGES.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(f"wrote {path}")
