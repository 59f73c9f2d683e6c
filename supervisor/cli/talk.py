"""The commands that ask the daemon: status, start/stop/restart/reload, logs, stack, reload-config, daemon-reexec."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from supervisor.cli.client import Client, Unreachable
from supervisor.cli.top_view import bytes_text
from supervisor.control.protocol import EXIT_FAILED
from supervisor.visible import lines, visible


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def status_table(services: list[dict[str, Any]]) -> str:
    headers = ["NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "SOCKET", "REASON"]
    rows = []
    now = time.time()
    for s in services:
        reason = s.get("reason") or ""
        if s["state"] == "backoff" and s.get("next_retry"):
            reason = f"next try in {max(0, int(s['next_retry'] - now))}s: {reason}"
        if s.get("status_text") and s["state"] in ("running", "starting"):
            reason = s["status_text"]
        state = s["state"] + (" (drained)" if s.get("draining") else "")
        if s["state"] in ("running", "reloading") and not s.get("ready", True):
            state += " (not ready)"
        cells = [
            s["name"],
            s["kind"],
            state,
            str(s["pid"] or "-"),
            _age(s.get("uptime")),
            str(s["restarts"]),
            s.get("socket") or "-",
            reason,
        ]
        rows.append([visible(cell) for cell in cells])  # a STATUS= or a reason is the service's text
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def detail(s: dict[str, Any]) -> str:
    out = [status_table([s])]
    memory = s.get("memory")
    if memory:
        out.append(f"memory: PSS {bytes_text(memory['pss_bytes'])}, USS {bytes_text(memory['uss_bytes'])}")
        workers = ", ".join(f"{w['pid']} {bytes_text(w['uss_bytes'])}" for w in memory.get("workers", ()))
        if workers:
            out.append(f"workers' USS: {workers}")
    if s.get("preload") not in (None, "off"):
        out.append(f"preload: {visible(s['preload'])}")
    if s.get("connections") is not None:
        held = ", ".join(f"{n} to port {port}" for port, n in s["connections"].items())
        out.append(f"TCP connections: {held or 'none'}")
    if s.get("last_exit"):
        out.append(f"last exit: {visible(s['last_exit'])}")
    if s.get("last_lines"):
        out.append("last lines:")
        out.extend("  " + lines(line).replace("\n", "\n  ") for line in s["last_lines"])
    return "\n".join(out)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    last_lines = 20 if len(args.names) == 1 and not args.json else 0
    reply = client.request({"cmd": "status", "services": args.names, "lines": last_lines})
    if not reply.get("ok"):
        print(f"wsgictl: {lines(reply['error'])}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    services = reply["services"]
    for warning in reply.get("warnings", []):  # on stderr: stdout stays the table, or the JSON array
        print(f"wsgictl: warning: {lines(warning)}", file=sys.stderr)
    if args.json:
        print(json.dumps(services, indent=2))
    elif last_lines:
        print(detail(services[0]))
    else:
        print(status_table(services))
    return reply.get("code", 0)


def cmd_action(client: Client, args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        print(f"wsgictl {args.cmd}: name a service, or use --all", file=sys.stderr)
        return EXIT_FAILED
    message: dict[str, Any] = {"cmd": args.cmd, "services": args.names, "all": args.all}
    drain = getattr(args, "drain", 0.0)
    if args.cmd not in ("drain", "undrain"):
        message.update(wait=not args.no_block, timeout=args.timeout)
        if drain:
            message["drain"] = drain
    reply = client.request(message, timeout=getattr(args, "timeout", 20.0) + drain + 10)
    if "results" not in reply:
        print(f"wsgictl: {lines(reply.get('error', 'failed'))}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    for name, result in reply["results"].items():
        if not result["ok"]:
            print(f"{name}: {args.cmd} failed: {lines(result['message'])}", file=sys.stderr)
        elif not args.quiet:
            said = result["message"] if args.cmd in ("drain", "undrain") else result.get("state")
            print(f"{name}: {visible(str(said))}")
    return 0 if reply.get("ok") else reply.get("code", EXIT_FAILED)


def _print_line(message: dict[str, Any], width: int) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(message["ts"])) + f".{int(message['ts'] % 1 * 1000):03d}"
    prefix = f"{stamp} {message['service']:<{width}} | "
    text = lines(message["text"])  # the service's own text: its tabs and line breaks only
    print(prefix + text.replace("\n", "\n" + " " * len(prefix)), flush=True)


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    width = max((len(n) for n in args.names), default=15)
    request = {"cmd": "logs", "services": args.names, "n": args.lines, "follow": args.follow, "verbose": args.verbose}
    reply = client.request(request, timeout=None if args.follow else 30)
    while True:
        if "text" in reply:
            _print_line(reply, width)
        elif "dropped" in reply:
            print(f"... {reply['dropped']} lines skipped: this reader was too slow", file=sys.stderr, flush=True)
        elif reply.get("end"):
            return 0
        elif not reply.get("ok", True):
            print(f"wsgictl: {lines(reply['error'])}", file=sys.stderr)
            return reply.get("code", EXIT_FAILED)
        reply = client.receive()


def cmd_reexec(client: Client, args: argparse.Namespace) -> int:
    """Ask the daemon to exec itself again (after an upgrade), then wait until it answers."""
    before = client.request({"cmd": "reexec"})
    if not before.get("ok"):
        print(f"wsgictl: {lines(str(before.get('error')))}", file=sys.stderr)
        return EXIT_FAILED
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            reply = Client(args.runtime_dir, timeout=5).request({"cmd": "ping"})
        except Unreachable:
            continue
        if reply.get("ok"):
            print(f"wsgi-supervisor re-executed (pid {reply['pid']}, {reply['services']} services adopted)")
            return 0
    print(f"wsgictl: wsgi-supervisor did not come back within {args.timeout:g}s", file=sys.stderr)
    return EXIT_FAILED


def cmd_reload_config(client: Client, args: argparse.Namespace) -> int:
    """The daemon answers once the manifest is taken (--no-block) or once every change is done or
    `--timeout` has passed; a manifest that does not validate is refused either way."""
    message = {"cmd": "reload-config", "wait": not args.no_block, "timeout": args.timeout}
    reply = client.request(message, timeout=args.timeout + 10)  # the daemon's answer comes first
    if not reply.get("ok"):
        print(f"wsgictl: {lines(str(reply.get('error')))}", file=sys.stderr)
        for problem in reply.get("problems", []):
            print(f"  {lines(problem)}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    counts = (
        f"{len(reply['changed'])} changed, {len(reply['added'])} added, "
        f"{len(reply['removed'])} removed, {reply['unchanged']} untouched"
    )
    if reply.get("applying"):
        print(f"taken: {counts}; the changes are under way (follow with `wsgictl status`)")
    else:
        print(f"applied: {counts}")
    for key in ("changed", "added", "removed"):
        if reply[key]:
            print(f"  {key}: {', '.join(reply[key])}")
    return 0


def cmd_stack(client: Client, args: argparse.Namespace) -> int:
    """Each worker process's Python stack, under a line that says which process and what it serves (exit 0
    when the daemon could dump at least one)."""
    reply = client.request({"cmd": "stack", "service": args.name}, timeout=60)
    if not reply.get("ok"):
        print(f"wsgictl: {lines(reply.get('error', 'failed'))}", file=sys.stderr)
        return reply.get("code", EXIT_FAILED)
    for process in reply["processes"]:  # some may have none (a shell in a worker's tree is no Python)
        # the label holds a process title and a request line, the stack names from the process's memory
        print(f"--- {args.name} {visible(process['label'])}")
        said = process["stack"].rstrip() if process["ok"] else f"    (no stack: {visible(process['error'])})"
        print(lines(said) + "\n")
    return 0
