"""`wsgictl supervise NAME`: the main process of wsgi@NAME.service, mirroring the service."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from supervisor.cli.client import Client, Unreachable, sd_notify
from supervisor.control.protocol import EXIT_FAILED
from supervisor.visible import lines, visible


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


# EX_TEMPFAIL: an attempt to start the service failed and the daemon retries it; the unit ends its
# start job as failed (as a Restart= unit does) and systemd runs this watcher again (RestartForceExitStatus=)
EXIT_RETRYING = 75


def cmd_supervise(args: argparse.Namespace) -> int:
    """The main process of wsgi@NAME.service: start NAME, say READY=1 when it is, mirror its state.

    Start semantics as systemd's own `Restart=` units have them: when an
    attempt to start the service fails (the daemon puts it in backoff and
    retries), this exits EXIT_RETRYING with the reason, so `systemctl start`
    fails at once ("Job for wsgi@NAME.service failed") instead of waiting
    for as long as the daemon retries; the unit (RestartForceExitStatus=)
    is then `activating (auto-restart)`, and the next run of this watcher
    finds the service in backoff and attaches without a start request of
    its own (which would cut the daemon's backoff short): the unit stays
    `activating`, its status saying the attempt and the reason, until the
    daemon's next attempt: active when it succeeds, EXIT_RETRYING again
    when it fails. Exits 0 when the service is stopped (by wsgictl, or
    SIGTERM, which asks the daemon for a graceful stop) and 1 when the
    daemon gives up on it (`failed`: no restart), so that systemd reports
    the same as `wsgictl status`.
    """
    name = args.name

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        client = Client(args.runtime_dir)
        reply = client.request({"cmd": "status", "services": [name]})
        if not reply.get("ok"):
            return _cannot_start(name, reply)
        retrying = reply["services"][0]["state"] == "backoff"
        if not retrying:
            reply = client.request({"cmd": "start", "services": [name], "wait": False})
            if not reply.get("ok"):
                return _cannot_start(name, reply)
        return _mirror(args, name, attempt_seen=not retrying)
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


def _cannot_start(name: str, reply: dict[str, Any]) -> int:
    why = reply.get("error", "failed")
    print(f"{name}: cannot start: {lines(why)}", file=sys.stderr)
    sd_notify(f"STATUS=failed to start: {visible(why)}")
    return EXIT_FAILED


def _mirror(args: argparse.Namespace, name: str, attempt_seen: bool) -> int:
    """Follow the service's state; `attempt_seen`: a start was asked for (else the watcher attached to a
    service in backoff, and waits for the daemon's next attempt before a failure ends it)."""
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
                if state["state"] == "starting":
                    attempt_seen = True
                if state["state"] == "backoff" and attempt_seen and not ready:
                    print(f"{name}: {_attempt_failed(state)}", file=sys.stderr)
                    return EXIT_RETRYING
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


def _attempt_failed(state: dict[str, Any]) -> str:
    """What a failed attempt says in the unit's log: which one, why, and that it is retried."""
    attempts = state.get("failures") or 1
    text = f"start attempt {attempts} failed: {state.get('reason') or 'backoff'}"
    if state.get("next_retry"):
        text += f" (wsgi-supervisor retries in {max(0.0, state['next_retry'] - time.time()):.0f}s)"
    return text + "; the unit retries with it, and is active once an attempt succeeds"
