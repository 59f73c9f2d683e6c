"""uWSGI's own routine lines: its start-up banner and the notices of normal operation.

They go to journald and the files at debug priority, and are left out of
the console and of `wsgictl logs` unless asked for (`-v`): the daemon's own
state lines say the same in one line a service. Anything not listed here,
and everything that tells of trouble (a worker that died, harakiri, an app
that failed to load), stays as it is.
"""

from __future__ import annotations

import re

# uWSGI puts a time stamp before some of its notices: "Wed Dec  2 12:59:25 2026 - "
_STAMP = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} - ")

_BANNER = (
    "*** Starting uWSGI ",
    "compiled with version: ",
    "os: Linux",
    "nodename: ",
    "machine: ",
    "clock source: ",
    "pcre jit ",
    "detected number of CPU cores: ",
    "current working directory: ",
    "detected binary path: ",
    "uWSGI running as root, you can use --uid/--gid/--chroot options",
    "*** WARNING: you are running uWSGI as root !!! (use the --uid flag) ***",
    "*** WARNING: you are running uWSGI without its master process manager ***",
    "your processes number limit is ",
    "your memory page size is ",
    "detected max file descriptor number: ",
    "*** starting uWSGI Emperor ***",
    "*** Emperor stats server enabled on ",
    "*** has_emperor mode detected ",
    "[uWSGI] getting INI configuration from ",
    "lock engine: ",
    "thunder lock: ",
    "- SystemD socket activation detected -",
    "uwsgi socket ",
    "Python version: ",
    "--- Python VM already initialized ---",
    "Python main interpreter initialized at ",
    "python threads support enabled",
    "your server socket listen backlog is limited to ",
    "your mercy for graceful operations on workers is ",
    "*** Operational MODE: ",
    "*** uWSGI is running in multiple interpreter mode ***",
    "spawned uWSGI master process ",
    "spawned uWSGI worker ",
    "*** Stats server enabled on ",
    "WSGI app 0 (mountpoint=",
    "chdir() to ",
    "closing all non-uwsgi socket fds > 2 ",
    "found fd ",
)
_NOTICES = (
    "announcing my loyalty to the Emperor...",
    "*** PAUSE (press start to resume",
    "*** RESUME ",
    "[emperor] binary path: ",
    "[emperor] cleaning up blacklist ...",
    "[emperor] *** RAGNAROK EVOKED ***",  # the emperor stops every vassal: the daemon stops
    "[emperor] curse the uwsgi instance ",
    "[emperor] removed uwsgi instance ",
    "[emperor] stop the uwsgi instance ",
    "[emperor] reload the uwsgi instance ",
    "[emperor] bringing back instance ",
    "Gracefully killing worker ",
    "gracefully killing worker ",
    "binary reloading uWSGI...",
    "goodbye to uWSGI.",
    "VACUUM: ",
    "...The work of process ",
    "...gracefully killing workers...",
    "...brutally killing workers...",
    "graceful shutdown triggered...",
    "Respawned uWSGI worker ",  # after "DAMN ! worker N died", which stays
    "chain reload starting...",
    "chain next victim is worker ",
    "chain reloading complete",
    "Starting uWSGI Emperor ",
)
_PATTERNS = re.compile(
    r"mounting \S+ on \S+"
    r"|mapped \d+ bytes \(\d+ KB\) for \d+ cores"
    r"|\*\*\* worker \d+ (suspended|resumed) \*\*\*"
    r"|worker \d+ buried after \d+ seconds"
    r"|received message \d+ from emperor"
    r"|worker \d+ killed successfully \(pid: \d+\)"
    r"|\[emperor\] vassal \S+ (has been spawned|is ready to accept requests|is now loyal)"
)


def is_noise(text: str) -> bool:
    """A banner line or a routine notice of uWSGI (a vassal's or the emperor's)."""
    line = text.strip()
    stamp = _STAMP.match(line)
    if stamp:
        line = line[stamp.end() :]
    if line.startswith(_BANNER) or line.startswith(_NOTICES):
        return True
    return _PATTERNS.fullmatch(line) is not None
