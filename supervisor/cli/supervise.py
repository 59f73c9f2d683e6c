"""`wsgictl supervise NAME`: the main process of wsgi@NAME.service, mirroring the service."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from supervisor.cli.client import Client, Unreachable, sd_notify
from supervisor.cli.visible import lines, visible
from supervisor.control.protocol import EXIT_FAILED


class _Terminated(Exception):
    pass


def _describe_state(s: dict[str, Any]) -> str:
    """One line for systemd's STATUS=: with no line break or control character of the service's, which
    would otherwise start a field of its own (a READY=1 of its choosing) in the unit's notification."""
    text = f"{s['state']}"
    if s.get("pid"):
        text += f", pid {s['pid']}"
    if s.get("restarts"):
        text += f", {s['restarts']} restarts"
    if s.get("status_text"):
        text += f": {s['status_text']}"
    elif s.get("reason") and s["state"] != "running":
        text += f": {s['reason']}"
    return visible(text)


def cmd_supervise(args: argparse.Namespace) -> int:
    """The main process of wsgi@NAME.service: start NAME, say READY=1 when it is, mirror its state.

    The unit stays `activating` for as long as the daemon keeps trying to
    start the service (a backoff after a reboot can outlast any timeout: the
    database may come up later), with each attempt in STATUS=. Exits 0 when
    the service is stopped (by wsgictl or SIGTERM, which asks the daemon for
    a graceful stop) and 1 when the daemon gives up on it, so that systemd
    reports the same as `wsgictl status`.
    """
    name = args.name

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        reply = Client(args.runtime_dir).request({"cmd": "start", "services": [name], "wait": False})
        if not reply.get("ok"):
            why = reply.get("error", "failed")
            print(f"{name}: cannot start: {lines(why)}", file=sys.stderr)
            sd_notify(f"STATUS=failed to start: {visible(why)}")
            return EXIT_FAILED
        return _mirror(args, name)
    except _Terminated:
        sd_notify("STOPPING=1\nSTATUS=stopping")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop = {"cmd": "stop", "services": [name], "wait": True, "by_unit": True}  # --stop-drain applies
            Client(args.runtime_dir, timeout=None).request(stop)
        except Unreachable as exc:
            print(f"{name}: stop: {exc}", file=sys.stderr)
        return 0
    except Unreachable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _mirror(args: argparse.Namespace, name: str) -> int:
    reconnect_until = None
    ready = False
    while True:
        try:
            client = Client(args.runtime_dir, timeout=None)
            state = client.request({"cmd": "watch", "services": [name]})
            reconnect_until = None
            while True:
                if "state" not in state:
                    print(f"{name}: {lines(str(state.get('error', state)))}", file=sys.stderr)
                    return EXIT_FAILED
                if state["state"] == "running" and not ready:
                    ready = True
                    sd_notify("READY=1")
                sd_notify(f"STATUS={_describe_state(state)}")
                if state["state"] == "failed":
                    print(f"{name}: failed: {lines(str(state.get('reason')))}", file=sys.stderr)
                    return EXIT_FAILED
                if state["state"] == "stopped":
                    if ready:
                        return 0
                    # stopped before it was ever ready (what it comes after failed): not started
                    print(f"{name}: cannot start: {lines(state.get('reason') or 'stopped')}", file=sys.stderr)
                    return EXIT_FAILED
                state = client.receive()
        except Unreachable:
            # the daemon restarts: its vassals keep serving; wait for it a while
            now = time.monotonic()
            if reconnect_until is None:
                reconnect_until = now + args.reconnect
                sd_notify("STATUS=waiting for wsgi-supervisor")
            if now > reconnect_until:
                print(f"{name}: wsgi-supervisor is gone", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(0.5)
