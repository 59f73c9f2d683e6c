"""Helpers for the benchmarks: statistics, timing, processes we start and stop by pid."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from supervisor.observe.procs import alive, descendants  # noqa: E402
from support import DAEMON, WSGICTL, Daemon, Load, kill_leftovers, uwsgi_request  # noqa: E402

BIN = Path(sys.executable).parent
UWSGI = BIN / "uwsgi"
PYTHON = BIN / "python3"
HELLO = "supervisor.demo.hello:application"

# every line a section says, for the results file
RESULTS: list[str] = []

__all__ = [
    "DAEMON",
    "HELLO",
    "PYTHON",
    "UWSGI",
    "WSGICTL",
    "Daemon",
    "Load",
    "alive",
    "descendants",
    "kill_leftovers",
    "uwsgi_request",
]


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """Median, and the min-max spread, of repeated measurements."""
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], unit: str = "s", digits: int = 3) -> str:
    med, lo, hi = median_spread(values)
    scale = {"s": 1, "ms": 1000}[unit]
    return f"{med * scale:.{digits}f} {unit} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f}, n={len(values)})"


def hello_manifest(n: int, processes: int = 1) -> str:
    return "".join(
        f'[services.api{i:03d}]\nkind = "api"\napp = "{HELLO}"\nprocesses = {processes}\n\n' for i in range(n)
    )


def answers(path: Path) -> bool:
    try:
        return uwsgi_request(path, "/", timeout=2)[0] == 200
    except OSError:
        return False


def wait_all_answer(paths: list[Path], timeout: float = 120) -> float:
    """Seconds until every socket answers a request."""
    started = time.monotonic()
    pending = list(paths)
    while pending:
        pending = [p for p in pending if not answers(p)]
        if pending:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(pending)} sockets never answered")
            time.sleep(0.005)
    return time.monotonic() - started


def wait_until(
    predicate: Callable[[], bool], timeout: float = 120, what: str = "condition", interval: float = 0.005
) -> None:
    """Poll until `predicate()` holds; a bench that waits forever is a bug, so give up after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(interval)


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process we started and everything below it, by pid."""
    stop_trees([proc], sig, timeout)


def stop_trees(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop processes we started, all at once (not one after another), and everything below them."""
    tree = [pid for proc in procs for pid in (proc.pid, *descendants(proc.pid))]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in tree:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


# runtime dirs on tmpfs, as /run is on a real host (here / is one disk, where a
# rename costs about a millisecond)
TMPFS = "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"


def short_tmp(prefix: str) -> Path:
    """A private dir on tmpfs with a short path (unix socket paths are short), removed when the bench ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TMPFS))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def bench_daemon(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(tmp, extra_args=["--quiet", "--journal", "no", *args], runtime_base=TMPFS, env=env)


def machine() -> str:
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    return (
        f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, Linux {os.uname().release}, Python {sys.version.split()[0]}"
    )


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(line: str = "") -> None:
    print(line, flush=True)
    RESULTS.append(line)


def wrk_ms(text: str) -> float:
    """wrk's latency figure ("812.00us", "1.20ms", "2.01s") in milliseconds."""
    for suffix, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    raise ValueError(text)
