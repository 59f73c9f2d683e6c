"""How many descriptors the daemon holds per service: at rest, and at the peak of a reload of every API.

The unit's LimitNOFILE (units/wsgi-supervisor.service) is reasoned from these figures.
Run: .venv/bin/python bench/descriptors.py [N]  (N services of each kind, 10 by default)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT  # noqa: F401 - puts tests/ on the path

from support import APPS, Daemon, write_manifest

PROBE = APPS / "probe.py"


def manifest(kind: str, n: int) -> str:
    if kind == "worker":
        return "".join(f'[services.w{i}]\nkind = "worker"\ncommand = ["sleep", "600"]\n' for i in range(n))
    return "".join(
        f'[services.a{i}]\nkind = "api"\nserver = "{kind}"\napp = "{PROBE}"\nprocesses = 1\n' for i in range(n)
    )


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(kind: str, n: int) -> tuple[int, int]:
    """(at rest, peak while every service reloads) for `n` services of `kind` (none: the bare daemon)."""
    tmp = Path(tempfile.mkdtemp(prefix="wsgi-fds-"))
    d = Daemon(tmp)
    write_manifest(d.conf_dir, manifest(kind, n))
    d.start()
    try:
        if n:
            d.ctl("start", "--all")
        time.sleep(2)
        rest = descriptors(d.proc.pid)
        peak, done = rest, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, descriptors(d.proc.pid))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        if n:
            d.ctl("reload", "--all", check=False)
        done.set()
        watcher.join()
        return rest, peak
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    base, _ = measure("uwsgi", 0)
    print(f"bare daemon: {base} descriptors")
    for kind in ("uwsgi", "gunicorn", "worker"):
        rest, peak = measure(kind, n)
        print(
            f"{n} {kind:<8}: {rest} at rest ({(rest - base) / n:.1f} a service), {peak} at the reload's peak "
            f"({(peak - base) / n:.1f} a service)"
        )


if __name__ == "__main__":
    main()
