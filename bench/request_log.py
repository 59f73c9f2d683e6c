"""What the request log costs: the same API through nginx with `request_log` on and off.

Every request line crosses the daemon (its log socket), which parses it, counts it into the
latency histogram and the responses by status class, and writes it to the sinks. This section
measures, side by side and alternated in rounds, the requests per second and the daemon's own
CPU per 1,000 requests with the log on (the default) and off, and how many of the requests
reached the daemon as lines (the latency metrics count those).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import psutil
from common import HELLO, ROOT, WSGICTL, bench_daemon, free_port, say, short_tmp, wrk_ms


def section_request_log(seconds: int = 5, repeats: int = 3, rounds: int = 2) -> None:
    say("## The request log's cost: the daemon reads every request line")
    say()
    sys.path.insert(0, str(ROOT / "tests"))
    from frontends import Nginx

    port = free_port()
    runs: dict[bool, list[tuple[float, float, float, float]]] = {True: [], False: []}
    tmp = short_tmp("wsl-")
    d = bench_daemon(tmp, "--socket-group", "www-data")  # nginx's workers reach the socket
    d.conf_dir.mkdir(parents=True)
    _manifest(d, logged=True)  # the site's locations come from it
    nginx = Nginx(tmp / "nginx", _site(d, port), port)
    nginx.start()
    try:
        for _ in range(rounds):  # alternated, so that a change in the machine's load falls on both
            for logged in (True, False):
                _manifest(d, logged)
                d.start()
                try:
                    d.ctl("start", "hello")
                    daemon = psutil.Process(d.proc.pid)
                    for _ in range(repeats):
                        runs[logged].append(_measured(d, daemon, port, seconds))
                finally:
                    d.stop()
    finally:
        nginx.stop()
    setup = f"hello, 2 workers (wrk -t1 -c16 -d{seconds}s through nginx, n={repeats * rounds} in {rounds} rounds)"
    say(f"| {setup} | requests/s | latency p99 | daemon CPU per 1,000 requests | request lines the daemon got |")
    say("| --- | --- | --- | --- | --- |")
    for logged, label in ((True, "request_log = true (the default)"), (False, "request_log = false")):
        rps, p99, cpu, got = ([run[i] for run in runs[logged]] for i in range(4))
        lines = f"{min(got):.2%} (lowest)" if logged else "none (off)"
        say(
            f"| {label} | {statistics.median(rps):.0f} ({min(rps):.0f}–{max(rps):.0f}) "
            f"| {statistics.median(p99):.2f} ms | {statistics.median(cpu):.1f} ms ({min(cpu):.1f}–{max(cpu):.1f}) "
            f"| {lines} |"
        )
    say()


def _manifest(d, logged: bool) -> None:
    (d.conf_dir / "bench.toml").write_text(
        f'[services.hello]\nkind = "api"\napp = "{HELLO}"\nprocesses = 2\nmount = "/hello"\n'
        f"request_log = {'true' if logged else 'false'}\n"
    )


def _site(d, port: int) -> str:
    """nginx's site for the daemon's sockets (the same path for every daemon of the section)."""
    return subprocess.run(
        [
            *(str(WSGICTL), "--runtime-dir", str(d.runtime_dir), "--conf-dir", str(d.conf_dir)),
            *("proxy-config", "nginx", "--vhost", "--listen", f"127.0.0.1:{port}"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _measured(d, daemon: psutil.Process, port: int, seconds: int) -> tuple[float, float, float, float]:
    """One wrk run: requests/s, p99 in ms, the daemon's CPU in ms per 1,000 requests meanwhile, and
    the share of the requests whose lines reached the daemon."""
    lines_before = _lines(d)
    before = sum(daemon.cpu_times()[:2])
    out = subprocess.run(
        ["wrk", "-t1", "-c16", "--latency", f"-d{seconds}s", f"http://127.0.0.1:{port}/hello/"],
        capture_output=True,
        text=True,
    ).stdout
    spent = sum(daemon.cpu_times()[:2]) - before
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    fields = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    rps = float(fields["Requests/sec:"])
    made = int(next(line.split()[0] for line in out.splitlines() if " requests in " in line))
    time.sleep(0.5)  # the last lines on their way
    return rps, wrk_ms(fields["99%"]), spent * 1000 / (rps * seconds / 1000), (_lines(d) - lines_before) / made


def _lines(d) -> int:
    """Request lines the daemon has read for the hello API (its responses by status class)."""
    return sum((d.status()["hello"].get("responses") or {}).values())
