"""What reading memory and connections costs the sampler: smaps_rollup against psutil, at N services.

    .venv/bin/python bench/memory_cost.py [services] [processes per service]

Starts `services` Python parents (default 100) with `processes - 1` sleeping Python children each
(default 5), then times, over every one of those processes: psutil's `memory_full_info` (psutil 7
reads smaps_rollup too, where there is one), a read of /proc/PID/smaps (one record per mapping), a
read of /proc/PID/smaps_rollup (observe/memory.py), and the sampler's whole footprint pass
(observe/footprint.py: PSS, USS, the tree, the sockets of every descriptor matched against the tcp
tables). Stops them by pid at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import timeit
from pathlib import Path

import psutil
from sampler_cost import stop

from supervisor.observe.cgroups import ServiceGroups
from supervisor.observe.footprint import footprints
from supervisor.observe.memory import memory_of
from supervisor.observe.procs import descendants

# each child imports what an API's worker maps too (ssl, sqlite3, decimal…): a few hundred mappings
CHILD = "import ssl, sqlite3, decimal, json, asyncio, ctypes, time; time.sleep(600)"
PARENT = "import subprocess, sys, time\n"
PARENT += f"kids = [subprocess.Popen([sys.executable, '-c', {CHILD!r}]) for _ in range(int(sys.argv[1]))]\n"
PARENT += "time.sleep(1.5)\nprint('up', flush=True)\ntime.sleep(600)\n"


def start(services: int, per_service: int) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(services):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", PARENT, str(per_service - 1)],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return procs


def per_pass(label: str, run, number: int = 5) -> None:
    runs = sorted(t / number for t in timeit.Timer(run).repeat(repeat=5, number=number))
    print(f"{label}: median {runs[2] * 1e3:.1f} ms, min {runs[0] * 1e3:.1f} ms, max {runs[-1] * 1e3:.1f} ms")


def full_info(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).memory_full_info()


def smaps(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps", "rb") as f:
            f.read()


def rollups(pids: list[int]) -> None:
    for pid in pids:
        memory_of(pid)


def main() -> None:
    services = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    per_service = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    procs = start(services, per_service)
    try:
        mains = {f"svc{i}": p.pid for i, p in enumerate(procs)}
        pids = [pid for main in mains.values() for pid in (main, *descendants(main))]
        maps = sum(len(Path(f"/proc/{pid}/maps").read_text().splitlines()) for pid in pids) // len(pids)
        print(f"{services} services, {len(pids)} processes, {maps} mappings each on average")
        per_pass("psutil memory_full_info, every process", lambda: full_info(pids))
        per_pass("read of /proc/PID/smaps (one record per mapping), every process", lambda: smaps(pids))
        per_pass("smaps_rollup, every process", lambda: rollups(pids))
        groups = ServiceGroups.unavailable("bench: the trees, as on a host without cgroup v2")
        per_pass("whole footprint pass (trees, PSS/USS, TCP by remote port)", lambda: footprints(groups, mains))
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
