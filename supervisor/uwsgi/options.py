"""uWSGI option names the daemon knows: the ones it sets itself, and the ones an import drops.

One home for both lists, beside the renderer (`core.render_vassal`) that
sets these options, so the three never drift apart. Imports nothing.
"""

from __future__ import annotations

import re

UWSGI_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")

# uWSGI options that wsgi-supervisor sets itself: a service's `uwsgi` table may
# not override them, or the daemon would lose track of the vassal.
# uWSGI writes a process title over what it takes for its argv and environ: where the launcher
# runs pyuwsgi in its own process, those are heap copies, and the title overwrote the heap
# (workers segfaulted at fork, depending on the environment's size). The workers are named
# after the service anyway (the launcher's file is its name). Refused in a `uwsgi` table.
UNSAFE_UWSGI_OPTIONS = frozenset(
    {
        "auto-procname",
        "procname",
        "procname-prefix",
        "procname-prefix-spaced",
        "procname-append",
        "procname-master",
    }
)

RESERVED_UWSGI_OPTIONS = frozenset(
    {
        "socket",
        "uwsgi-socket",
        "http-socket",
        "shared-socket",
        "protocol",
        "stats",
        "stats-server",
        "master",
        "master-fifo",
        "emperor",
        "binary-path",
        "logger",
        "req-logger",
        "logto",
        "log-master",
        "daemonize",
        "pidfile",
        "pidfile2",
        "uid",
        "gid",
        "module",
        "wsgi-file",
        "file",
        # the vassal loads vassal_app.py under its own callable and mount: `app` and `mount` say these
        "wsgi",
        "callable",
        "mount",
        "paste",
        "pyargv",
        "virtualenv",
        "home",
        "venv",
        "pyhome",
        "ini",
        "xml",
        "yaml",
        "json",
        "inherit",
        "include",
        "processes",
        "workers",
        "threads",
        "chmod-socket",
        "chown-socket",
        "vacuum",
        "strict",
        "need-app",
        "die-on-term",
        "lazy-apps",
        "lazy",
        "zerg",
        "env",
        "chdir",
        "log-format",
        "disable-logging",
        "emperor-wrapper",
    }
)


# options whose job wsgi-supervisor does itself: dropped with a word
MANAGED = {
    "master",
    "die-on-term",
    "lazy-apps",
    "lazy",
    "need-app",
    "enable-threads",
    "thunder-lock",
    "strict",
    "vacuum",
    "chmod-socket",
    "chown-socket",
    "pidfile",
    "pidfile2",
    "daemonize",
    "logto",
    "logto2",
    "stats",
    "stats-server",
    "master-fifo",
    "exit-on-reload",
    "worker-reload-mercy",
    "reload-mercy",
    "hook-master-start",
    "plugins",
    "plugin",
    "buffer-size",
    "add-header",
    "ignore-sigpipe",
    "ignore-write-errors",
    "disable-write-exception",
    "log-master",
    "logger",
    "req-logger",
    "binary-path",
    "http-auto-chunked",
    "http-raw-body",
    "chunked-input-limit",
    "http-manage-expect",
    "manage-script-name",
    "uwsgi-socket",
    "socket-timeout",
    "start-time",
    "listen",
}
