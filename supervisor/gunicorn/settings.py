"""The gunicorn settings the daemon manages, and the check of a service's `gunicorn = {…}` table.

The table is the counterpart of `uwsgi = {…}`: gunicorn settings by their
config-file names (`keepalive`, `max_requests`…). What the daemon sets
itself (the socket, the process model, the logs, the hooks that report to
it) comes from manifest keys and may not be overridden there. Values are
checked by gunicorn's own validators, from the gunicorn installed beside
the daemon (imported only when a table has something in it).
"""

from __future__ import annotations

import re
from typing import Any

SETTING_NAME = re.compile(r"[a-z][a-z0-9_]*")

# set from manifest keys, or by the daemon to tie the arbiter to it
MANAGED = {
    "bind": "the daemon holds the socket (<runtime>/NAME.sock) and hands it over",
    "backlog": "the daemon creates the socket",
    "reuse_port": "the daemon creates the socket",
    "workers": "use the manifest key 'processes'",
    "threads": "use the manifest key 'threads'",
    "timeout": "use the manifest key 'harakiri'",
    "graceful_timeout": "use the manifest key 'stop_timeout'",
    "user": "use the manifest key 'user'",
    "group": "use the manifest key 'group'",
    "chdir": "use the manifest key 'chdir'",
    "raw_env": "use the manifest key 'environment'",
    "protocol": "use the manifest key 'protocol'",
    "wsgi_app": "use the manifest key 'app' or 'paste'",
    "paste": "use the manifest key 'paste'",
    "preload_app": "use the manifest key 'preload' (guarded: see the fork-safety guard)",
    "daemon": "the daemon supervises the arbiter: it must not detach",
    "pidfile": "the daemon tracks the arbiter itself",
    "errorlog": "gunicorn's lines go through the daemon's log pipeline",
    "accesslog": "use the manifest key 'request_log'",
    "access_log_format": "request lines have the daemon's format (REQUEST_* fields)",
    "capture_output": "the output goes through the daemon's log pipeline",
    "enable_stdio_inheritance": "the output goes through the daemon's log pipeline",
    "logger_class": "gunicorn's lines go through the daemon's log pipeline",
    "logconfig": "gunicorn's lines go through the daemon's log pipeline",
    "logconfig_dict": "gunicorn's lines go through the daemon's log pipeline",
    "logconfig_json": "gunicorn's lines go through the daemon's log pipeline",
    "syslog": "gunicorn's lines go through the daemon's log pipeline",
    "syslog_addr": "gunicorn's lines go through the daemon's log pipeline",
    "proc_name": "the daemon names the processes after the service",
    "control_socket": "off: the daemon is the control surface",
    "control_socket_disable": "off: the daemon is the control surface",
    "control_socket_mode": "off: the daemon is the control surface",
    "reload": "the daemon decides every reload (wsgictl reload)",
    "reload_engine": "the daemon decides every reload (wsgictl reload)",
    "reload_extra_files": "the daemon decides every reload (wsgictl reload)",
    "config": "the daemon writes the whole configuration",
    "check_config": "use wsgictl check",
    "print_config": "use wsgictl check",
}
# Python callables: a TOML table cannot hold them, and the daemon's own report to it
HOOKS = frozenset(
    {
        "on_starting",
        "on_reload",
        "when_ready",
        "pre_fork",
        "post_fork",
        "post_worker_init",
        "worker_int",
        "worker_abort",
        "pre_exec",
        "pre_request",
        "post_request",
        "child_exit",
        "worker_exit",
        "nworkers_changed",
        "on_exit",
        "ssl_context",
        "on_dirty_starting",
        "dirty_post_fork",
        "dirty_worker_init",
        "dirty_worker_exit",
    }
)


def check_table(settings: dict[str, Any]) -> dict[str, Any]:
    """Refuse names the daemon manages and values gunicorn itself would refuse; ValueError says which."""
    for key, value in settings.items():
        if not SETTING_NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not a gunicorn setting name (they are written like 'max_requests')")
        if key in MANAGED:
            raise ValueError(f"{key!r} is set by wsgi-supervisor: {MANAGED[key]}")
        if key in HOOKS:
            raise ValueError(f"{key!r} is a server hook (Python code): wsgi-supervisor sets the hooks itself")
        if not isinstance(value, str | int | float | bool | list):
            raise ValueError(f"setting {key!r} must be a string, a number, a boolean or a list")
    if settings:
        _check_with_gunicorn(settings)
    return settings


def _check_with_gunicorn(settings: dict[str, Any]) -> None:
    try:
        from gunicorn.config import Config
    except ImportError:  # not beside the daemon: the arbiter checks them when it boots
        return
    config = Config()
    for key, value in settings.items():
        if key not in config.settings:
            raise ValueError(f"{key!r} is not a gunicorn setting")
        try:
            config.set(key, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {key!r}: {exc}") from None
