"""wsgi-supervisor benchmarks, side by side with what operators would use instead.

    make bench                      # everything but servers (about 15 minutes), writes bench/results.md
    .venv/bin/python bench/run.py startup control  # some sections only
    .venv/bin/python bench/run.py servers  # uWSGI against gunicorn (bench/servers.py, about 10 minutes)

Each figure is a median over repeated runs with its spread (min–max), all
measured in one run on this machine. Processes are started here and stopped
here, by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import (
    HELLO,
    PYTHON,
    RESULTS,
    ROOT,
    UWSGI,
    WSGICTL,
    Daemon,
    Load,
    answers,
    bench_daemon,
    fmt,
    free_port,
    hello_manifest,
    machine,
    median_spread,
    say,
    short_tmp,
    stop_tree,
    stop_trees,
    timed,
    wait_all_answer,
    wait_until,
    wrk_ms,
)
from memory import section_memory
from request_log import section_request_log
from servers import section_servers

SUPERVISORD_VENV = ROOT / ".cache" / "supervisord-venv"


# -- contenders ---------------------------------------------------------------------------


def start_ours(n: int, processes: int = 1, wrapper: tuple[str, ...] = ()) -> tuple[Daemon, float, float]:
    """(daemon, seconds to all sockets answering, seconds to the daemon reporting all running).

    The daemon reports the way systemd hears it: READY=1 on $NOTIFY_SOCKET
    once every service has started. Polling `status` instead would cost the
    daemon a quarter of a second of CPU at 100 services on this 2-core
    machine, and the measurement would slow what it measures.
    """
    from supervisor.cli.commands import Client

    tmp = short_tmp("wsb-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    d = bench_daemon(tmp, "--no-units", env={"NOTIFY_SOCKET": str(tmp / "notify.sock")})
    d.wrapper = list(wrapper)
    (d.conf_dir).mkdir(parents=True)
    (d.conf_dir / "bench.toml").write_text(hello_manifest(n, processes))
    socks = [d.runtime_dir / f"api{i:03d}.sock" for i in range(n)]
    started = time.monotonic()
    d.start(wait=False)
    notify.settimeout(120)
    with notify:
        while b"READY=1" not in notify.recv(4096).split(b"\n"):
            pass
    reported = time.monotonic() - started
    d.cpu_at_ready = _cpu(d.proc.pid)  # the daemon's own CPU seconds to READY=1: what the load inflates least
    wait_all_answer(socks)
    answered = time.monotonic() - started
    client = Client(d.runtime_dir, timeout=5)
    states = {s["state"] for s in client.request({"cmd": "status"})["services"]}
    if client.sock is not None:
        client.sock.close()
    if states != {"running"}:
        raise RuntimeError(f"READY=1 sent, but the services are {states}")
    return d, answered, reported


def vassal_ini(path: Path, sock: Path, processes: int = 1) -> None:
    path.write_text(
        f"[uwsgi]\nmaster = true\nprocesses = {processes}\nsocket = {sock}\nmodule = {HELLO}\n"
        f"binary-path = {PYTHON}\nneed-app = true\nlazy-apps = true\ndie-on-term = true\nstrict = true\n"
    )


def start_bare_emperor(n: int) -> tuple[subprocess.Popen, float, Path]:
    tmp = short_tmp("wse-")
    vassals = tmp / "vassals"
    vassals.mkdir()
    socks = []
    for i in range(n):
        sock = tmp / f"api{i:03d}.sock"
        vassal_ini(vassals / f"api{i:03d}.ini", sock)
        socks.append(sock)
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(PYTHON), str(UWSGI), "--emperor", str(vassals), "--emperor-wrapper", str(UWSGI)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: all(s.exists() for s in socks), what="every socket bound")
    wait_all_answer(socks)
    took = time.monotonic() - started
    return proc, took, tmp


def masters_one_after_another(n: int) -> tuple[list[subprocess.Popen], float]:
    tmp = short_tmp("wsm-")
    procs = []
    started = time.monotonic()
    for i in range(n):
        sock = tmp / f"api{i:03d}.sock"
        ini = tmp / f"api{i:03d}.ini"
        vassal_ini(ini, sock)
        procs.append(
            subprocess.Popen(
                [str(PYTHON), str(UWSGI), "--ini", str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        wait_until(lambda sock=sock: sock.exists() and answers(sock), what=f"{sock} answering", interval=0.002)
    return procs, time.monotonic() - started


def supervisord_available() -> bool:
    if (SUPERVISORD_VENV / "bin" / "supervisord").exists():
        return True
    try:
        subprocess.run([sys.executable, "-m", "venv", str(SUPERVISORD_VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(SUPERVISORD_VENV / "bin" / "pip"), "install", "-q", "supervisor"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def start_supervisord(n: int) -> tuple[subprocess.Popen, float, float, Path]:
    tmp = short_tmp("wss-")
    socks = []
    programs = ""
    for i in range(n):
        sock = tmp / f"api{i:03d}.sock"
        ini = tmp / f"api{i:03d}.ini"
        vassal_ini(ini, sock)
        socks.append(sock)
        programs += (
            f"[program:api{i:03d}]\ncommand={PYTHON} {UWSGI} --ini {ini}\nstopsignal=INT\n"
            "stdout_logfile=NONE\nstderr_logfile=NONE\n\n"
        )
    conf = tmp / "supervisord.conf"
    conf.write_text(
        f"[supervisord]\nnodaemon=true\nlogfile={tmp}/supervisord.log\npidfile={tmp}/supervisord.pid\n"
        f"[unix_http_server]\nfile={tmp}/supervisor.sock\n"
        f"[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp}/supervisor.sock\n\n{programs}"
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(SUPERVISORD_VENV / "bin" / "supervisord"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: all(s.exists() for s in socks), what="every socket bound")
    wait_all_answer(socks)
    answered = time.monotonic() - started
    deadline = time.monotonic() + 120
    out = ""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"supervisord: not every program RUNNING after 120 s:\n{out}")
        out = subprocess.run(
            [str(SUPERVISORD_VENV / "bin" / "supervisorctl"), "-c", str(conf), "status"], capture_output=True, text=True
        ).stdout
        if out.count("RUNNING") == n:
            break
        time.sleep(0.05)
    return proc, answered, time.monotonic() - started, tmp


# -- sections -----------------------------------------------------------------------------


def section_startup(sizes=(10, 20, 50, 100, 200), repeats=3) -> None:
    say("## 1. Cold start to all ready (hello APIs, 1 worker each)")
    say()
    say(
        "| N | wsgi-supervisor: all answering | wsgi-supervisor: all reported running | bare emperor | "
        "supervisord: answering / RUNNING | masters one after another |"
    )
    say("| --- | --- | --- | --- | --- | --- |")
    have_supervisord = supervisord_available()
    for n in sizes:
        ours_a, ours_r, bare, sup_a, sup_r, seq = [], [], [], [], [], []
        for _ in range(repeats):
            d, a, r = start_ours(n)
            d.stop(timeout=60)
            ours_a.append(a)
            ours_r.append(r)
            proc, took, tmp = start_bare_emperor(n)
            stop_tree(proc, signal.SIGINT)
            bare.append(took)
            shutil.rmtree(tmp, ignore_errors=True)
            procs, took = masters_one_after_another(n)
            stop_trees(procs, signal.SIGINT)
            seq.append(took)
            if have_supervisord and n <= 20:  # supervisord stops programs one at a time: slow beyond
                proc, a, r, tmp = start_supervisord(n)
                stop_tree(proc, signal.SIGTERM, timeout=120)
                sup_a.append(a)
                sup_r.append(r)
                shutil.rmtree(tmp, ignore_errors=True)
        supd = (
            f"{fmt(sup_a)} / {fmt(sup_r)}"
            if sup_a
            else ("not run: stops one program at a time" if have_supervisord else "not installed")
        )
        say(f"| {n} | {fmt(ours_a)} | {fmt(ours_r)} | {fmt(bare)} | {supd} | {fmt(seq)} |")
        extra = median_spread(ours_r)[0] - median_spread(bare)[0]
        say(
            f"|  | overhead over the bare emperor (reported running): {extra:+.3f} s, "
            f"ratio {median_spread(ours_r)[0] / median_spread(bare)[0]:.2f} |  |  |  |  |"
        )
    say()


def baseline_wrapper(checkout: Path) -> tuple[str, ...]:
    """Run the daemon of another checkout (`BENCH_BASELINE=DIR`, e.g. `git archive main supervisor | tar
    -x -C DIR`) with this venv: a wrapper that puts DIR first on the path and drops our daemon's path."""
    import compileall

    compileall.compile_dir(checkout / "supervisor", quiet=1)  # as installed, like ours (installed_bytecode)
    script = short_tmp("wsbase-") / "baseline-daemon.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(checkout)!r})\ndel sys.argv[1]\n"
        "from supervisor.main import main\nmain()\n"
    )
    return (str(PYTHON), str(script))


class CpuAccount:
    """All the CPU that the processes this bench starts use, from a cgroup v2 group the bench moves
    itself into (the daemon makes its own groups inside it); the bench's own CPU is left out. None
    where there is no writable cgroup v2."""

    def __init__(self) -> None:
        from supervisor.observe.cgroups import cgroup2_mount, own_group

        mount, own = cgroup2_mount(), own_group()
        self.home = mount / own.lstrip("/") if mount and own else None
        self.group = self.home / f"wsb-cpu-{os.getpid()}" if self.home else None
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text("0")
        except (OSError, AttributeError):
            self.group = None

    def seconds(self) -> float | None:
        if self.group is None:
            return None
        used = int((self.group / "cpu.stat").read_text().split()[1]) / 1e6
        own = os.times()
        return used - own.user - own.system

    def close(self) -> None:
        if self.group is not None:
            (self.home / "cgroup.procs").write_text("0")
            self.group.rmdir()


def section_coldstart(sizes=(20,), rounds=10) -> None:
    """The daemon against the bare emperor only, one after the other in each round, so that both see the
    same load; each round's ratio is reported, and the median of the ratios (the goal is at most 1.25 at 20).
    With `BENCH_BASELINE=DIR`, the daemon of that checkout runs in each round too. The CPU columns say
    where the time goes: on 2 cores the bare emperor keeps both busy, so every CPU second the daemon and
    its launchers add is about half a second of wall time."""
    sizes = (sizes,) if isinstance(sizes, int) else sizes  # `coldstart:sizes=20` parses as one number
    baseline = os.environ.get("BENCH_BASELINE")
    contenders: dict[str, tuple[str, ...] | None] = {"ours": ()}
    if baseline:
        contenders["baseline"] = baseline_wrapper(Path(baseline))
    contenders["bare"] = None
    say("## 1b. Cold start, the daemon against the bare emperor, alternating (hello APIs, 1 worker each)")
    say()
    if baseline:
        say(f"Baseline: the daemon of `{baseline}`, run the same way in each round.")
        say()
    say(
        "| N | daemon | READY=1 | all answering | bare emperor: all answering | ratio READY=1 / bare, per round "
        "| the daemon's CPU to READY=1 | CPU of every process to READY=1 (bare: to all answering) |"
    )
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    account = CpuAccount()
    try:
        for n in sizes:
            ready: dict[str, list[float]] = {name: [] for name in contenders}
            answered: dict[str, list[float]] = {name: [] for name in contenders}
            cpu: dict[str, list[float]] = {name: [] for name in contenders}
            total: dict[str, list[float]] = {name: [] for name in contenders}
            for i in range(rounds):
                names = list(contenders)
                order = names[i % len(names) :] + names[: i % len(names)]  # each goes first in turn
                for name in order:
                    wrapper = contenders[name]
                    before = account.seconds()
                    if wrapper is None:
                        proc, took, tmp = start_bare_emperor(n)
                        after = account.seconds()
                        stop_tree(proc, signal.SIGINT)
                        shutil.rmtree(tmp, ignore_errors=True)
                        ready[name].append(took)
                        answered[name].append(took)
                    else:
                        d, a, r = start_ours(n, wrapper=wrapper)
                        after = account.seconds()  # a few ms past READY=1: start_ours waits for every socket
                        d.stop(timeout=60)
                        ready[name].append(r)
                        answered[name].append(a)
                        cpu[name].append(d.cpu_at_ready)
                    if before is not None and after is not None:
                        total[name].append(after - before)
            bare_total = f" (bare: {fmt(total['bare'])})" if total["bare"] else ""
            for name in contenders:
                if name == "bare":
                    continue
                ratios = [r / b for r, b in zip(ready[name], ready["bare"], strict=True)]
                say(
                    f"| {n} | {name} | {fmt(ready[name])} | {fmt(answered[name])} | {fmt(ready['bare'])} | "
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}, n={rounds}) | "
                    f"{fmt(cpu[name])} | {fmt(total[name]) if total[name] else 'no cgroup v2'}{bare_total} |"
                )
    finally:
        account.close()
    say()


def section_control(sizes=(10, 50, 100, 200)) -> None:
    say("## 3 and 6. Control path, memory and idle CPU, by number of services")
    say()
    say(
        "| N | `wsgictl status` (whole process) | control round trip | `/metrics` scrape | "
        "daemon RSS | daemon idle CPU |"
    )
    say("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        port = free_port()
        tmp = short_tmp("wsc-")
        d = bench_daemon(tmp, "--metrics-listen", f"127.0.0.1:{port}")
        d.conf_dir.mkdir(parents=True)
        (d.conf_dir / "bench.toml").write_text(hello_manifest(n))
        d.start()
        try:
            d.ctl("start", "--all", timeout=600)
            time.sleep(6)  # one full sample of every service
            say(_measure_control(d, port, n))
        finally:
            d.stop(timeout=120)
    say()


def _measure_control(d: Daemon, port: int, n: int) -> str:
    from supervisor.cli.commands import Client

    status_cmd = [str(WSGICTL), "--runtime-dir", str(d.runtime_dir), "status"]
    status = [timed(lambda: subprocess.run(status_cmd, capture_output=True, check=False)) for _ in range(20)]
    client = Client(d.runtime_dir)
    client.connect()
    trips = [timed(lambda: client.request({"cmd": "ping"})) for _ in range(200)]
    url = f"http://127.0.0.1:{port}/metrics"
    scrapes = [timed(lambda: urllib.request.urlopen(url, timeout=5).read()) for _ in range(50)]
    rss = int(Path(f"/proc/{d.proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    window = 60 if n == 100 else 15
    cpu0 = _cpu(d.proc.pid)
    time.sleep(window)
    cpu = (_cpu(d.proc.pid) - cpu0) / window
    return (
        f"| {n} | {fmt(status, 'ms', 1)} | {fmt(trips, 'ms', 2)} | {fmt(scrapes, 'ms', 1)} | "
        f"{rss / 1024 / 1024:.1f} MiB | {cpu * 100:.2f}% of a core ({window} s) |"
    )


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def section_operations(repeats=10) -> None:
    say("## 5. Latency of the operations (hello API, 2 workers)")
    say()
    tmp = short_tmp("wso-")
    d = bench_daemon(tmp)
    d.conf_dir.mkdir(parents=True)
    (d.conf_dir / "bench.toml").write_text(hello_manifest(3, processes=2))
    d.start()
    try:
        d.ctl("start", "--all")
        reloads = [timed(lambda: d.ctl("reload", "api000")) for _ in range(repeats)]
        restarts = [timed(lambda: d.ctl("restart", "api000")) for _ in range(repeats)]
        recover = []
        for _ in range(5):
            # a master that dies within 10 s of becoming ready counts as a failed
            # start (backoff); one that has been up longer comes back at once
            time.sleep(10.5)
            pid = d.status()["api001"]["pid"]
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while True:
                if time.monotonic() - started > 60:
                    raise TimeoutError(f"api001 not serving again 60 s after kill -9: {d.status()['api001']}")
                s = d.status()["api001"]
                if s["state"] == "running" and s["pid"] != pid and answers(d.socket("api001")):
                    break
                time.sleep(0.002)
            recover.append(time.monotonic() - started)
        changes = []
        for i in range(repeats):
            text = hello_manifest(3, processes=2).replace(
                "processes = 2\n\n[services.api002]", f"processes = {2 + i % 2}\n\n[services.api002]"
            )
            (d.conf_dir / "bench.toml").write_text(text)
            changes.append(timed(lambda: d.ctl("reload-config")))
    finally:
        d.stop()
    say("| operation | wall time |")
    say("| --- | --- |")
    say(f"| `wsgictl reload` until the new vassal serves (the old one retires behind it) | {fmt(reloads)} |")
    say(f"| `wsgictl restart` until ready | {fmt(restarts)} |")
    say(f"| `kill -9` of a vassal master until it serves again | {fmt(recover)} |")
    say(f"| a manifest change applied (`wsgictl reload-config`, one service restarted) | {fmt(changes)} |")
    say()


def section_throughput(seconds=5, repeats=3, rounds=3) -> None:
    say("## 2. Throughput through nginx: the daemon is not in the request path")
    say()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        say("wrk or nginx is missing: skipped")
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from frontends import Nginx

    tmp = short_tmp("wst-")
    d = bench_daemon(tmp, "--socket-group", "www-data")
    d.conf_dir.mkdir(parents=True)
    (d.conf_dir / "bench.toml").write_text(
        f'[services.hello]\nkind = "api"\napp = "{HELLO}"\nprocesses = 2\nmount = "/hello"\nrequest_log = false\n'
    )
    port = free_port()
    site = subprocess.run(
        [
            str(WSGICTL),
            "--runtime-dir",
            str(d.runtime_dir),
            "--conf-dir",
            str(d.conf_dir),
            "proxy-config",
            "nginx",
            "--vhost",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nginx = Nginx(tmp / "nginx", site, port)

    def wrk() -> tuple[float, float, float]:
        """Requests per second, and the median and 99th percentile latency in ms, of one wrk run."""
        out = subprocess.run(
            ["wrk", "-t1", "-c16", "--latency", f"-d{seconds}s", f"http://127.0.0.1:{port}/hello/"],
            capture_output=True,
            text=True,
        ).stdout
        # a fast 502 from nginx is not throughput: count only runs where every answer was a 2xx
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw failed requests:\n{out}")
        fields = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
        return float(fields["Requests/sec:"]), wrk_ms(fields["50%"]), wrk_ms(fields["99%"])

    def run_supervised(runs: list) -> str:
        d.start()
        try:
            d.ctl("start", "hello")
            ini = (d.runtime_dir / "vassals" / "hello.ini").read_text()
            for _ in range(repeats):
                runs.append(wrk())
        finally:
            d.stop()
        return ini

    def run_bare(ini: str, runs: list) -> None:
        """The same vassal file, run by hand with no daemon (it binds the socket itself).

        Its app and environment come from the launch line the launcher reads, and its
        log socket went with the daemon: give it that environment, its output goes nowhere.
        """
        from supervisor.uwsgi.launcher import parse_launch_line

        first, _, rest = ini.partition("\n")
        spec = parse_launch_line(first.strip())
        env = {**os.environ, **dict(item.partition("=")[::2] for item in filter(None, spec.get("env", "").split("\0")))}
        standalone = tmp / "hello-standalone.ini"
        standalone.write_text(
            "".join(line + "\n" for line in rest.splitlines() if not line.startswith(("logger", "req-logger")))
        )
        os.makedirs(d.runtime_dir / "stats", exist_ok=True)
        os.makedirs(d.runtime_dir / "fifo", exist_ok=True)
        proc = subprocess.Popen(
            [str(PYTHON), str(UWSGI), "--ini", str(standalone)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            sock = d.runtime_dir / "hello.sock"
            wait_until(lambda: sock.exists() and answers(sock), what=f"{sock} answering")
            shutil.chown(sock, group="www-data")
            os.chmod(sock, 0o660)  # as the daemon's listener has it: the front end's group may connect
            for _ in range(repeats):
                runs.append(wrk())
        finally:
            stop_tree(proc, signal.SIGINT)
            shutil.rmtree(d.runtime_dir, ignore_errors=True)  # the next daemon starts on a clean dir

    # rounds > 1 alternates the two, so that a change in the machine's load falls on both
    supervised, bare = [], []
    nginx.start()
    try:
        for _ in range(rounds):
            ini = run_supervised(supervised)
            run_bare(ini, bare)
    finally:
        nginx.stop()
    setup = f"setup (wrk -t1 -c16 -d{seconds}s, nginx → unix socket, n={repeats * rounds} in {rounds} rounds)"
    say(f"| {setup} | requests/s | latency p50 | latency p99 |")
    say("| --- | --- | --- | --- |")
    for label, runs in (("supervised by wsgi-supervisor", supervised), ("the same vassal file, no daemon", bare)):
        rps, p50, p99 = ([run[i] for run in runs] for i in range(3))
        say(
            f"| {label} | {statistics.median(rps):.0f} ({min(rps):.0f}–{max(rps):.0f}) "
            f"| {statistics.median(p50):.2f} ms | {statistics.median(p99):.2f} ms |"
        )
    ratio = statistics.median(r[0] for r in supervised) / statistics.median(r[0] for r in bare)
    say(f"| ratio of requests/s | {ratio:.3f} | | |")
    say()


def section_reliability(reloads=50, restarts=20) -> None:
    say("## Reliability under load (4 clients back to back on the socket)")
    say()
    say("| scenario | requests served | failed | added latency (worst − usual p99) |")
    say("| --- | --- | --- | --- |")
    tmp = short_tmp("wsr-")
    d = bench_daemon(tmp)
    d.conf_dir.mkdir(parents=True)
    manifest = hello_manifest(3, processes=2) + (
        f'[services.conductor]\nkind = "worker"\ncommand = ["{sys.executable}", "-c", '
        '"import time\\nwhile True: time.sleep(1)"]\nready_after = 0.2\n'
    )
    (d.conf_dir / "bench.toml").write_text(manifest)
    d.start()
    d.ctl("start", "--all")
    sock = d.socket("api000")

    def run(name: str, action, count: int = 1) -> None:
        with Load(sock) as base:
            time.sleep(2)
        usual = sorted(t for _, t in base.latencies)[int(len(base.latencies) * 0.99)]
        with Load(sock) as load:
            for _ in range(count):
                action()
                load.wait_for_requests(10)
        worst = max(t for _, t in load.latencies)
        say(f"| {name} | {load.ok} | {len(load.failures)} | {(worst - usual) * 1000:.0f} ms |")

    try:
        run(f"{reloads} × `wsgictl reload` of the loaded API", lambda: d.ctl("reload", "api000"), reloads)
        run(f"{restarts} × `wsgictl restart` of the loaded API", lambda: d.ctl("restart", "api000"), restarts)

        def others():
            d.ctl("reload", "api001")
            d.ctl("restart", "api002")
            d.ctl("stop", "api001")
            d.ctl("start", "api001")
            d.ctl("restart", "conductor")
            (d.conf_dir / "bench.toml").write_text(
                manifest.replace("processes = 2\n\n[services.conductor]", "processes = 1\n\n[services.conductor]")
            )
            d.ctl("reload-config")

        run("reload, restart, stop, start of other services and a manifest change to another", others)

        def kill_and_restart_daemon():
            d.remember_processes()
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            time.sleep(1)
            d.start()
            d.ctl("start", "--all")

        run("the daemon killed with SIGKILL, started again (adopts the vassals)", kill_and_restart_daemon)
        run("`wsgictl daemon-reexec` (an upgrade in place)", lambda: d.ctl("daemon-reexec"))
    finally:
        d.stop()
    # the bare uWSGI ways, for comparison
    tmp2 = short_tmp("wsu-")
    sock2 = tmp2 / "api.sock"
    ini = tmp2 / "api.ini"
    vassal_ini(ini, sock2, processes=2)
    with open(ini, "a") as f:
        f.write(f"master-fifo = {tmp2}/api.fifo\nhook-master-start = unix_signal:15 gracefully_kill_them_all\n")
    proc = subprocess.Popen(
        [str(PYTHON), str(UWSGI), "--ini", str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: sock2.exists() and answers(sock2), what=f"{sock2} answering")
        sock = sock2

        def hup():
            master = proc.pid
            os.kill(master, signal.SIGHUP)
            time.sleep(1.2)

        run("devstack's way: 20 × `kill -HUP` of a standalone master (for comparison)", hup, 20)

        def chain():
            fd = os.open(tmp2 / "api.fifo", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"c")
            os.close(fd)
            time.sleep(2.5)

        run("uWSGI chain reload, 20 × (master FIFO `c`, for comparison)", chain, 20)
    finally:
        stop_tree(proc, signal.SIGINT)
    say()


def section_shutdown(n=20, repeats=3) -> None:
    say(f"## Stopping the daemon with {n} APIs running (graceful)")
    say()
    took = []
    for _ in range(repeats):
        d, _, _ = start_ours(n, processes=2)
        took.append(d.stop(timeout=60))
    proc, _, _tmp = start_bare_emperor(n)
    started = time.monotonic()
    stop_tree(proc, signal.SIGINT, timeout=60)
    bare = time.monotonic() - started
    say(f"wsgi-supervisor, SIGTERM to exit: {fmt(took)}; the bare emperor, SIGINT to exit: {bare:.2f} s")
    say()


def section_adoption(n=20, repeats=5, goal=1.0) -> None:
    """The daemon SIGKILLed under load and started again: how soon does `wsgictl status` answer?"""
    from supervisor.cli.commands import Client

    say(f"## Adoption: the daemon killed with SIGKILL and started again, {n} APIs, one under load")
    say()
    d, _, _ = start_ours(n, processes=2)
    answered, adopted = [], []
    try:
        with Load(d.runtime_dir / "api000.sock", threads=4) as load:
            for _ in range(repeats):
                d.remember_processes()
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                time.sleep(0.5)
                started = time.monotonic()
                d.start(wait=False)
                first = None
                while True:
                    if time.monotonic() - started > 60:
                        raise TimeoutError(f"not every service running 60 s after the restart:\n{d.output()}")
                    if d.proc.poll() is not None:
                        raise RuntimeError(f"the new daemon exited with {d.proc.returncode}:\n{d.output()}")
                    try:
                        client = Client(d.runtime_dir, timeout=5)
                        reply = client.request({"cmd": "status"})
                        if client.sock is not None:
                            client.sock.close()
                    except Exception:  # not listening yet
                        time.sleep(0.005)
                        continue
                    now = time.monotonic()
                    if first is None:
                        first = now - started
                    if {s["state"] for s in reply["services"]} == {"running"}:
                        adopted.append(now - started)
                        break
                    time.sleep(0.01)
                answered.append(first)
                load.wait_for_requests(10)
    finally:
        d.stop()
    met = "met" if median_spread(answered)[2] <= goal else "missed"
    say(
        f"`status` first answered on the control socket: {fmt(answered)} (goal: within {goal:.0f} s, {met} "
        f"by the slowest); every service adopted and `running`: {fmt(adopted)}. The loaded API served "
        f"{load.ok} requests meanwhile, {len(load.failures)} failed. (A `wsgictl status` process adds its "
        "own start, see the control section.)"
    )
    say()


SECTIONS = {
    "startup": section_startup,
    "coldstart": section_coldstart,
    "throughput": section_throughput,
    "requestlog": section_request_log,
    "control": section_control,
    "operations": section_operations,
    "reliability": section_reliability,
    "shutdown": section_shutdown,
    "adoption": section_adoption,
    "servers": section_servers,
    "memory": section_memory,
}
# run only when named: they build OpenStack venvs from PyPI once, and take 10-20 minutes each
NAMED_ONLY = {"servers", "memory"}


def parse(arg: str) -> tuple[str, dict]:
    """`reliability:reloads=20,restarts=10` or `startup:sizes=10/20/50,repeats=3`: a section and its arguments."""
    name, _, rest = arg.partition(":")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = tuple(int(v) for v in value.split("/")) if "/" in value else int(value)
    return name, kwargs


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def installed_bytecode() -> None:
    """Compile the daemon's modules as `pip install` does. An editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 (these machines) compiles every module from source at every start:
    0.08 s more CPU before the first vassal, which no installed daemon pays."""
    import compileall

    compileall.compile_dir(ROOT / "supervisor", quiet=1)


def main() -> None:
    # a stopped benchmark still stops what it started (the `finally:` blocks)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    chosen = [parse(arg) for arg in sys.argv[1:]] or [(name, {}) for name in SECTIONS if name not in NAMED_ONLY]
    unknown = [name for name, _ in chosen if name not in SECTIONS]
    if unknown:
        sys.exit(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    installed_bytecode()
    say(f"# Benchmark results ({time.strftime('%Y-%m-%d')})")
    say()
    say(f"Machine: {machine()}")
    say()
    say(f"Command: `bench/run.py {' '.join(sys.argv[1:])}`; {load_average()} at the start")
    say()
    label = "-".join(name for name, _ in chosen)
    out = ROOT / "bench" / ("results.md" if not sys.argv[1:] else f"results-{label}.md")
    failed = []
    for name, kwargs in chosen:
        started = time.monotonic()
        try:
            SECTIONS[name](**kwargs)
        except Exception as exc:  # one broken section costs its own figures, not the others'
            failed.append(name)
            say()
            say(f"**{name} failed**: {type(exc).__name__}: {str(exc)[:2000]}")
            say()
        say(f"({name}{kwargs or ''}: {time.monotonic() - started:.0f} s, {load_average()} after it)")
        say()
        out.write_text("\n".join(RESULTS) + "\n")  # what is measured so far survives a later failure
    print(f"wrote {out}")
    if failed:
        sys.exit(f"failed sections: {', '.join(failed)}")


if __name__ == "__main__":
    main()
