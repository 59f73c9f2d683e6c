"""Reproduce issue 13: a request lost across `wsgictl restart` under load.

Not a test: it loops `wsgictl restart` of one API (2 workers, the probe app)
while four clients send requests back to back at its socket, for as long as
asked, optionally with busy-loop processes competing for the CPU, and
records every failed request: its kind (status code, reset, refused, EOF,
timeout) and when it started and failed relative to the restart in flight
(or the last one). It ends with the failure rate, and the daemon's log lines
(uWSGI's included, with their times) around each failure.

    .venv/bin/python bench/restart_loss.py --restarts 500 --burners 2

Everything it starts (daemon, burners) is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_daemon, short_tmp

from support import APPS, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"


def kind_of(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, FileNotFoundError):
        return "no socket"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, ConnectionError) and "without a response" in str(exc):
        return "EOF"
    return type(exc).__name__


class RecordingLoad:
    """Like tests/support.py's Load, keeping (started, ended, kind, detail) of each failure."""

    def __init__(self, sock_path: Path, threads: int = 4, timeout: float = 30.0):
        self.sock_path = sock_path
        self.timeout = timeout
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[tuple[float, float, str, str]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.time()
            try:
                status, _, _ = uwsgi_request(self.sock_path, "/", timeout=self.timeout)
                failure = None if status == 200 else (f"status {status}", "")
            except OSError as exc:
                failure = (kind_of(exc), f"{type(exc).__name__}: {exc}")
            ended = time.time()
            with self.lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append((started, ended, *failure))

    def __enter__(self) -> RecordingLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(self.timeout + 5)


def burner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)


def log_lines(log_dir: Path) -> list[tuple[float, str]]:
    """(time, line) of every line in the daemon's log files (`time service stream level text`)."""
    out = []
    for path in log_dir.glob("*.log*"):
        for line in path.read_text(errors="replace").splitlines():
            head = line.split(" ", 1)[0]
            try:
                when = time.mktime(time.strptime(head[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + head[19:].rstrip("Z"))
            except ValueError:
                continue
            out.append((when, line))
    out.sort()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restarts", type=int, default=300)
    p.add_argument("--burners", type=int, default=2, help="busy-loop processes competing for the CPU")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--command", default="restart", choices=("restart", "reload"))
    p.add_argument(
        "--nice-workers",
        type=int,
        default=0,
        help="renice each new vassal's workers by this much, so the burners preempt them more often",
    )
    p.add_argument("--context", type=float, default=0.05, help="seconds of log shown around each failure")
    args = p.parse_args()

    tmp = short_tmp("rl-")
    log_dir = tmp / "logs"
    d = bench_daemon(tmp, "--log-dir", str(log_dir))
    write_manifest(
        d.conf_dir,
        f'[services.loaded]\nkind = "api"\napp = "{PROBE}"\nprocesses = {args.processes}\nstop_timeout = 5\n',
    )
    burners: list[subprocess.Popen] = []
    windows: list[tuple[float, float]] = []
    try:
        d.start()
        d.ctl("start", "loaded")
        burners = [burner() for _ in range(args.burners)]
        began = time.time()
        with RecordingLoad(d.socket("loaded"), threads=args.threads) as load:
            time.sleep(0.3)
            for i in range(args.restarts):
                t0 = time.time()
                try:
                    result = d.ctl(args.command, "loaded", check=False, timeout=30)
                except subprocess.TimeoutExpired:
                    print(f"{args.command} {i}: no answer in 30 s; status: {d.status()['loaded']}", flush=True)
                    print(d.ctl("logs", "loaded", "-n", "60", check=False).stdout, flush=True)
                    raise
                t1 = time.time()
                windows.append((t0, t1))
                if args.nice_workers:
                    for w in d.status()["loaded"].get("workers", []):
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, w["pid"], args.nice_workers)
                if result.returncode != 0:
                    print(f"restart {i}: wsgictl exit {result.returncode}: {result.stderr.strip()}", flush=True)
                before = load.ok
                deadline = time.monotonic() + 10
                while load.ok - before < 20 and time.monotonic() < deadline:
                    time.sleep(0.005)
                if (i + 1) % 50 == 0:
                    print(f"{i + 1} {args.command}s, {load.ok} ok, {len(load.failures)} failed", flush=True)
        took = time.time() - began
    finally:
        for b in burners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(b.pid, signal.SIGKILL)
            b.wait()
        lines = log_lines(log_dir) if log_dir.exists() else []
        d.stop()

    starts = [w[0] for w in windows]
    print()
    print(
        f"{args.restarts} × wsgictl {args.command}, {args.burners} burners, {args.processes} workers "
        f"(nice {args.nice_workers}), "
        f"{args.threads} clients, {took:.0f} s: {load.ok} ok, {len(load.failures)} failed "
        f"({len(load.failures) / max(1, load.ok + len(load.failures)):.2e})"
    )
    kinds: dict[str, int] = {}
    for f in load.failures:
        kinds[f[2]] = kinds.get(f[2], 0) + 1
    if kinds:
        print("by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    times = [when for when, _ in lines]
    for started, ended, kind, detail in load.failures:
        i = max(0, bisect.bisect_right(starts, started) - 1)
        t0, t1 = windows[i] if windows else (began, began)
        print()
        print(
            f"- {kind} ({detail}): request started {started - t0:+.3f} s, ended {ended - t0:+.3f} s "
            f"after restart {i} began (it took {t1 - t0:.3f} s)"
        )
        lo = bisect.bisect_left(times, started - args.context)
        hi = bisect.bisect_right(times, ended + args.context)
        for when, text in lines[lo:hi]:
            if " request INFO " in text:
                continue  # request log lines of successful requests
            print(f"    {when - t0:+.4f} {text}")
    return 1 if load.failures else 0


if __name__ == "__main__":
    sys.exit(main())
