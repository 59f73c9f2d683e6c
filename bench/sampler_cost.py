"""What one sample of the process trees costs: RSS and CPU of every service's tree.

    .venv/bin/python bench/sampler_cost.py [services] [processes per service]

Starts `services` parents (default 10) with `processes - 1` sleeping children
each (default 10, so 100 processes), times the sampler's tree function over
them with timeit, then stops them by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import timeit

from supervisor.observe import sampler

PARENT = "import subprocess, sys, time\nkids = [subprocess.Popen(['sleep', '600']) for _ in range(int(sys.argv[1]))]\n"
PARENT += "print('up', flush=True)\ntime.sleep(600)\n"


def start(services: int, per_service: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PARENT, str(per_service - 1)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(services)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:  # each parent leads its own process group: the sleeps go with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def one_sample(pids: list[int]) -> dict[int, tuple[int, float]]:
    if hasattr(sampler, "process_table"):  # the hand-written /proc walk, before psutil
        children = sampler.process_table()
        return {pid: sampler.tree_usage(pid, children) for pid in pids}
    return sampler.tree_usage(pids)


def main() -> None:
    services = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    per_service = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    procs = start(services, per_service)
    try:
        time.sleep(0.2)
        pids = [p.pid for p in procs]
        got = one_sample(pids)
        rss = sum(r for r, _ in got.values())
        host = sum(1 for e in os.scandir("/proc") if e.name.isdigit())
        print(f"{services} trees of {per_service} processes ({host} processes on the host), RSS {rss >> 20} MiB")
        timer = timeit.Timer(lambda: one_sample(pids))
        number = 20
        runs = sorted(t / number for t in timer.repeat(repeat=7, number=number))
        print(f"per sample: median {runs[3] * 1e3:.2f} ms, min {runs[0] * 1e3:.2f} ms, max {runs[-1] * 1e3:.2f} ms")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
