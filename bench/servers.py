"""uWSGI and gunicorn side by side: the same apps under each server, in one daemon, behind one nginx.

    .venv/bin/python bench/run.py servers
    .venv/bin/python bench/run.py servers:seconds=2,rounds=2,threads=1,starts=3  # shorter

For each app (the hello app, and placement from PyPI on SQLite without
keystone) the manifest has one service per server x protocol x threads,
all with the same processes, all running at once; nginx has the location
blocks `wsgictl proxy-config nginx --vhost` writes for them. Then:

- throughput: `wrk` through nginx to each service, in rounds; within a
  round each configuration runs under both servers one after the other,
  the order alternating, so that a change in the machine's load falls on
  both; with each run, the CPU the service's master and workers used per
  request, which the machine's other load inflates far less than requests/s;
- memory: RSS, PSS and USS of each worker (psutil, on the pids `wsgictl
  status --json` lists), after the throughput runs;
- reload and restart under load: `wrk -c4` through nginx (uwsgi
  protocol), `op_seconds` of `wsgictl reload` (then `restart`) one after
  another against a baseline run of `base_seconds` just before; failed
  requests (non-2xx and socket errors) and p99 during against before;
- cold start: `wsgictl stop` then `wsgictl start` (it returns once every
  worker has the app) and the first answer through nginx, `starts` times,
  alternating the servers.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common import HELLO, bench_daemon, free_port, say, short_tmp, timed, wrk_ms

SERVERS = ("uwsgi", "gunicorn")
PROTOCOLS = ("uwsgi", "http")
PLACEMENT_HEADERS = ("x-auth-token: admin", "OpenStack-API-Version: placement latest")


@dataclass
class App:
    name: str
    path: str  # under the service's mount
    headers: tuple[str, ...] = ()
    table: dict[str, str] = field(default_factory=dict)  # manifest lines of every service of the app


@dataclass
class Wrk:
    rps: float
    p50: float  # ms
    p99: float
    max: float
    requests: int
    failed: int  # non-2xx/3xx answers and socket errors
    errors: str  # what wrk said about them
    cpu_us: float = 0.0  # CPU of the service's processes per request, when measured

    @staticmethod
    def parse(out: str) -> Wrk:
        fields = {}
        failed, errors = 0, []
        latency_max = 0.0
        requests = 0
        for line in out.splitlines():
            words = line.split()
            if not words:
                continue
            if words[0] == "Latency" and len(words) >= 4:
                latency_max = wrk_ms(words[3])
            elif words[0] in ("50%", "99%", "Requests/sec:"):
                fields[words[0]] = words[1]
            elif len(words) > 2 and words[1] == "requests" and words[2] == "in":
                requests = int(words[0])
            elif line.strip().startswith("Socket errors:"):
                counts = [int(w.strip(",")) for w in words[2:] if w.strip(",").isdigit()]
                failed += sum(counts)
                errors.append(line.strip())
            elif line.strip().startswith("Non-2xx"):
                failed += int(words[-1])
                errors.append(line.strip())
        if "Requests/sec:" not in fields:
            raise RuntimeError(f"wrk said nothing we read:\n{out}")
        return Wrk(
            float(fields["Requests/sec:"]),
            wrk_ms(fields["50%"]),
            wrk_ms(fields["99%"]),
            latency_max,
            requests,
            failed,
            "; ".join(errors),
        )


def wrk(url: str, seconds: float, connections: int, headers: tuple[str, ...] = ()) -> Wrk:
    """One wrk run. A request slower than 30 s counts as failed (wrk's own timeout is 2 s)."""
    cmd = ["wrk", "-t1", f"-c{connections}", "--latency", "--timeout", "30s", f"-d{seconds}s"]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    return Wrk.parse(out)


def placement_venv() -> Path:
    """The tests' placement venv (tests/support.py), with gunicorn added for the gunicorn services."""
    from support import service_venv

    venv = service_venv("placement", "openstack-placement")
    if not (venv / "bin" / "gunicorn").exists():
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "gunicorn"], check=True)
    return venv


def apps(tmp: Path) -> list[App]:
    venv = placement_venv()
    return [
        App("hello", "/", table={"app": HELLO}),
        App(
            "placement",
            "/resource_providers",
            PLACEMENT_HEADERS,
            {"app": "placement.wsgi.api:application", "venv": str(venv)},
        ),
    ]


def service_name(app: str, server: str, protocol: str, threads: int) -> str:
    return f"{app}-{server}-{protocol}-t{threads}"


def manifest(tmp: Path, chosen: list[App], threads: tuple[int, ...], processes: int) -> str:
    """One service per app x server x protocol x threads; placement's each on a SQLite file of its own."""
    text = ""
    for app in chosen:
        for server in SERVERS:
            for protocol in PROTOCOLS:
                for t in threads:
                    name = service_name(app.name, server, protocol, t)
                    lines = {**app.table}
                    if app.name == "placement":
                        conf = tmp / "placement" / name
                        conf.mkdir(parents=True)
                        (conf / "placement.conf").write_text(
                            "[api]\nauth_strategy = noauth2\n[placement_database]\n"
                            f"connection = sqlite:///{conf}/placement.sqlite\nsync_on_startup = True\n"
                        )
                        lines["environment"] = f'{{ OS_PLACEMENT_CONFIG_DIR = "{conf}" }}'
                    text += f'[services.{name}]\nkind = "api"\nserver = "{server}"\nprotocol = "{protocol}"\n'
                    text += f'processes = {processes}\nthreads = {t}\nmount = "/{name}"\nrequest_log = false\n'
                    for key, value in lines.items():
                        text += f"{key} = {value}\n" if value.startswith("{") else f'{key} = "{value}"\n'
                    text += "\n"
    return text


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], digits: int = 0) -> str:
    return f"{med(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def pair(runs: dict[str, list], fmt) -> str:
    """'uWSGI figure | gunicorn figure' cells."""
    return " | ".join(fmt(runs[server]) for server in SERVERS)


def _interleaved(index: int) -> tuple[str, ...]:
    return SERVERS if index % 2 == 0 else SERVERS[::-1]


def section_servers(
    seconds=3,
    rounds=4,
    connections=16,
    processes=2,
    threads=(1, 2),
    starts=5,
    base_seconds=3,
    op_seconds=10,
    op_rounds=2,
) -> None:
    say(f"## uWSGI and gunicorn side by side ({processes} workers each, the same manifest but for `server`)")
    say()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        say("wrk or nginx is missing: skipped")
        return
    from frontends import Nginx, proxy_config

    threads = threads if isinstance(threads, tuple) else (threads,)
    tmp = short_tmp("wsv-")
    chosen = apps(tmp)
    d = bench_daemon(tmp, "--socket-group", "www-data")
    d.conf_dir.mkdir(parents=True)
    (d.conf_dir / "servers.toml").write_text(manifest(tmp, chosen, threads, processes))
    port = free_port()
    d.start()
    nginx = None
    try:
        took = timed(lambda: d.ctl("start", "--all", "--timeout", "600", timeout=700))
        say(f"(every service started at once in {took:.1f} s)")
        say()
        site = proxy_config(d, "nginx", port)
        nginx = Nginx(tmp / "nginx", site, port)
        nginx.start()
        base = f"http://127.0.0.1:{port}"

        def url(app: App, server: str, protocol: str = "uwsgi", t: int = 1) -> str:
            return f"{base}/{service_name(app.name, server, protocol, t)}{app.path}"

        results = {app.name: {} for app in chosen}
        _throughput(d, chosen, url, results, seconds, rounds, connections, threads)
        _memory(d, chosen, results, threads)
        _under_load(d, chosen, url, results, base_seconds, op_seconds, op_rounds)
        _cold_start(d, chosen, url, results, starts, threads)
        for app in chosen:
            _table(app, results[app.name], seconds, rounds, connections, threads, starts, op_seconds, op_rounds)
    finally:
        if nginx is not None:
            nginx.stop()
        d.stop(timeout=120)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a master or arbiter and everything below it (its workers)."""
    import psutil

    total = 0.0
    master = psutil.Process(pid)
    for proc in (master, *master.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _throughput(d, chosen, url, results, seconds, rounds, connections, threads) -> None:
    """wrk runs; with each, the CPU the service's processes used per request, which the machine's
    other load inflates far less than requests/s (their workers do not change during these runs)."""
    for app in chosen:  # warm-up: each service's first requests (placement's are slow), not counted
        for server in SERVERS:
            for protocol in PROTOCOLS:
                for t in threads:
                    wrk(url(app, server, protocol, t), 1, 4, app.headers)
    status = d.status()
    configs = [(app, protocol, t) for app in chosen for protocol in PROTOCOLS for t in threads]
    for r in range(rounds):
        for i, (app, protocol, t) in enumerate(configs):
            for server in _interleaved(r + i):
                master = status[service_name(app.name, server, protocol, t)]["pid"]
                used = _cpu_seconds(master)
                run = wrk(url(app, server, protocol, t), seconds, connections, app.headers)
                run.cpu_us = (_cpu_seconds(master) - used) / max(run.requests, 1) * 1e6
                results[app.name].setdefault(("wrk", protocol, t), {s: [] for s in SERVERS})[server].append(run)
                print(
                    f"  {app.name} {server} {protocol} t{t}: {run.rps:.0f}/s p99 {run.p99:.2f} ms, "
                    f"{run.cpu_us:.0f} µs CPU/request",
                    flush=True,
                )


def _memory(d, chosen, results, threads) -> None:
    import psutil

    status = d.status()
    for app in chosen:
        for server in SERVERS:
            rss, pss, uss, master = [], [], [], []
            for protocol in PROTOCOLS:
                for t in threads:
                    svc = status[service_name(app.name, server, protocol, t)]
                    master.append(psutil.Process(svc["pid"]).memory_info().rss)
                    for worker in svc["workers"]:
                        info = psutil.Process(worker["pid"]).memory_full_info()
                        rss.append(info.rss)
                        pss.append(info.pss)
                        uss.append(info.uss)
            results[app.name].setdefault("memory", {})[server] = (rss, pss, uss, master)


def _under_load(d, chosen, url, results, base_seconds, op_seconds, op_rounds) -> None:
    for r in range(op_rounds):
        for i, op in enumerate(("reload", "restart")):
            for j, app in enumerate(chosen):
                for server in _interleaved(r + i + j):
                    name = service_name(app.name, server, "uwsgi", 1)
                    got = _ops(d, name, op, url(app, server), app.headers, base_seconds, op_seconds)
                    results[app.name].setdefault(op, {s: [] for s in SERVERS})[server].append(got)
                    before, during, took, errors = got
                    print(
                        f"  {op} {name}: {len(took)} ops, {during.failed} failed, "
                        f"p99 {before.p99:.1f} -> {during.p99:.1f} ms, max {during.max:.0f} ms {errors}",
                        flush=True,
                    )


def _ops(d, name, op, target, headers, base_seconds, op_seconds):
    """wrk -c4 for `base_seconds`, then for `op_seconds` with `wsgictl OP` one after another meanwhile.

    An operation starts only while it can be expected to end inside the loaded window (by the
    slowest so far): every one of them happens under load.
    """
    d.wait_for(lambda s: s[name]["state"] == "running", timeout=120, what=f"{name} running")
    time.sleep(1)  # an old arbiter or vassal of the last operation has retired
    before = wrk(target, base_seconds, 4, headers)
    box: dict = {}
    loader = threading.Thread(target=lambda: box.update(run=wrk(target, op_seconds, 4, headers)))
    started = time.monotonic()
    loader.start()
    time.sleep(0.5)
    took: list[float] = []
    errors: list[str] = []
    while True:
        left = op_seconds - (time.monotonic() - started)
        if left < 0.5 + 1.2 * max(took, default=0.2):
            break
        t0 = time.monotonic()
        done = d.ctl(op, name, "--timeout", "60", check=False, timeout=90)
        took.append(time.monotonic() - t0)
        if done.returncode != 0:
            errors.append((done.stdout + done.stderr).strip()[:300])
        time.sleep(0.3)
    loader.join()
    if "run" not in box:
        raise RuntimeError(f"wrk under {op} of {name} gave nothing")
    return before, box["run"], took, errors


def _first_answer(target: str, headers: tuple[str, ...], timeout: float = 60) -> None:
    request = urllib.request.Request(target, headers=dict(h.split(": ", 1) for h in headers))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _cold_start(d, chosen, url, results, starts, threads) -> None:
    for r in range(starts):
        for j, app in enumerate(chosen):
            for server in _interleaved(r + j):
                name = service_name(app.name, server, "uwsgi", 1)
                d.ctl("stop", name)
                t0 = time.monotonic()
                d.ctl("start", name, "--timeout", "120")
                ready = time.monotonic() - t0
                _first_answer(url(app, server), app.headers)
                answered = time.monotonic() - t0
                reported = d.status(name)[name]["ready_duration"]
                runs = results[app.name].setdefault("start", {s: [] for s in SERVERS})
                runs[server].append((ready, answered, reported))


def _table(app, res, seconds, rounds, connections, threads, starts, op_seconds, op_rounds) -> None:
    say(f"### {app.name}")
    say()
    say("| measure | uWSGI | gunicorn | gunicorn / uWSGI |")
    say("| --- | --- | --- | --- |")

    def ratio(runs, key) -> str:
        u, g = (med([key(x) for x in runs[s]]) for s in SERVERS)
        return f"{g / u:.2f}" if u else "–"

    for protocol in PROTOCOLS:
        for t in threads:
            runs = res[("wrk", protocol, t)]
            what = f"{protocol} protocol, {t} thread{'s' if t > 1 else ''}"
            say(
                f"| requests/s, {what} | "
                + pair(runs, lambda rs: spread([x.rps for x in rs]))
                + f" | {ratio(runs, lambda x: x.rps)} |"
            )
            say(
                f"| latency p50 / p99, {what} | "
                + pair(runs, lambda rs: f"{med([x.p50 for x in rs]):.2f} / {med([x.p99 for x in rs]):.2f} ms")
                + f" | {ratio(runs, lambda x: x.p99)} (p99) |"
            )
            say(
                f"| CPU per request (master and workers), {what} | "
                + pair(runs, lambda rs: f"{med([x.cpu_us for x in rs]):,.0f} µs")
                + f" | {ratio(runs, lambda x: x.cpu_us)} |"
            )
            failed = {s: sum(x.failed for x in runs[s]) for s in SERVERS}
            if any(failed.values()):
                say(f"| failed requests, {what} | {failed['uwsgi']} | {failed['gunicorn']} | |")
    mib = 1024 * 1024
    mem = res["memory"]
    say(
        "| per worker: RSS / PSS / USS (median) | "
        + " | ".join(
            f"{med(mem[s][0]) / mib:.1f} / {med(mem[s][1]) / mib:.1f} / {med(mem[s][2]) / mib:.1f} MiB" for s in SERVERS
        )
        + f" | {med(mem['gunicorn'][1]) / med(mem['uwsgi'][1]):.2f} (PSS) |"
    )
    say("| master / arbiter RSS (median) | " + " | ".join(f"{med(mem[s][3]) / mib:.1f} MiB" for s in SERVERS) + " | |")
    for op in ("reload", "restart"):
        runs = res[op]
        cells = []
        for s in SERVERS:
            done = sum(len(x[2]) for x in runs[s])
            failed = sum(x[1].failed for x in runs[s])
            served = sum(x[1].requests for x in runs[s])
            refused = sum(len(x[3]) for x in runs[s])
            cell = f"{failed} of {served:,} failed in {done} {op}s"
            if refused:
                cell += f" ({refused} {op}s refused)"
            cells.append(cell)
        say(f"| `wsgictl {op}` under load: failed requests | {' | '.join(cells)} | |")
        say(
            f"| `wsgictl {op}` under load: p99 before → during (max during) | "
            + pair(
                runs,
                lambda rs: (
                    f"{med([x[0].p99 for x in rs]):.1f} → {med([x[1].p99 for x in rs]):.1f} ms "
                    f"({max(x[1].max for x in rs):,.0f} ms)"
                ),
            )
            + " | |"
        )
        say(
            f"| `wsgictl {op}` under load: wall time of one | "
            + pair(runs, lambda rs: spread([t for x in rs for t in x[2]], 3) + " s")
            + f" | {ratio({s: [t for x in runs[s] for t in x[2]] for s in SERVERS}, lambda t: t)} |"
        )
    runs = res["start"]
    say(
        "| cold start: `wsgictl start` until ready | "
        + pair(runs, lambda rs: spread([x[0] for x in rs], 3) + " s")
        + f" | {ratio(runs, lambda x: x[0])} |"
    )
    say(
        "| cold start: until the first answer through nginx | "
        + pair(runs, lambda rs: spread([x[1] for x in rs], 3) + " s")
        + f" | {ratio(runs, lambda x: x[1])} |"
    )
    say(
        "| cold start: the daemon's spawn-to-ready | "
        + pair(runs, lambda rs: spread([x[2] for x in rs], 3) + " s")
        + f" | {ratio(runs, lambda x: x[2])} |"
    )
    say()
    say(
        f"(throughput: `wrk -t1 -c{connections} -d{seconds}s` through nginx, n={rounds} per cell in {rounds} "
        f"rounds alternating the servers; reload and restart: `wrk -t1 -c4` through nginx over the uwsgi "
        f"protocol, {op_rounds} windows of {op_seconds} s of operations one after another, each against a "
        f"baseline run just before; cold start: n={starts}, 1 thread, uwsgi protocol; memory: every worker "
        "of the services above after their throughput runs)"
    )
    say()
