"""Memory per service (PSS of its processes, USS per worker) and TCP connections by remote port, as an
operator reads them in `wsgictl status` and the metrics, played with a real compromised API whose worker
allocates memory and opens connections."""

import contextlib
import mmap
import os
import sys
import time

import pytest
from attacker import COMPROMISED, local_user, owner_of, run_in_api, user_venv
from test_metrics import scrape, value

from supervisor.observe.procs import descendants
from support import APPS, Daemon, holding_listener, metrics_daemon, write_manifest

MANIFEST = f"""
[services.api]
kind = "api"
app = "{COMPROMISED}"
processes = 2

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{APPS / "worker.py"}"]
ready_after = 0.2
"""
MiB = 1 << 20


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) in bytes, read from /proc by the test itself."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def close_to(got: int, want: int) -> bool:
    return abs(got - want) <= max(4 * MiB, want // 10)


@pytest.fixture
def served(tmp_path, server):
    with metrics_daemon(tmp_path, MANIFEST, server) as d:
        d.wait_for(lambda s: all(x["state"] == "running" and x["ready"] for x in s.values()), what="running")
        yield d


def test_status_and_metrics_show_pss_and_uss_that_match_proc(served):
    """A worker that makes 64 MiB its own shows it as its USS; the service's PSS is what /proc says."""
    hog = run_in_api(served.socket("api"), "import builtins\nbuiltins.hog = b'x' * (64 << 20)\n")
    assert hog["error"] is None, hog["error"]
    status = served.wait_for(
        lambda s: any(w["pid"] == hog["pid"] and w["uss_bytes"] > 64 * MiB for w in s["api"]["memory"]["workers"]),
        what="the hog's USS in status",
    )
    api, conductor = status["api"], status["conductor"]
    workers = {w["pid"]: w["uss_bytes"] for w in api["memory"]["workers"]}
    assert len(workers) == 2 and api["pid"] not in workers  # the workers, not the master
    assert close_to(workers[hog["pid"]], rollup(hog["pid"])[1])
    other = next(pid for pid in workers if pid != hog["pid"])
    assert workers[other] < 32 * MiB and close_to(workers[other], rollup(other)[1])
    tree = [api["pid"], *descendants(api["pid"])]
    assert close_to(api["memory"]["pss_bytes"], sum(rollup(pid)[0] for pid in tree))
    assert close_to(api["memory"]["uss_bytes"], sum(rollup(pid)[1] for pid in tree))
    assert api["memory"]["pss_bytes"] > 64 * MiB
    # a worker service: its one process
    assert [w["pid"] for w in conductor["memory"]["workers"]] == [conductor["pid"]]
    assert close_to(conductor["memory"]["pss_bytes"], rollup(conductor["pid"])[0])
    text = scrape(served.metrics_url)
    assert value(text, "wsgi_service_memory_bytes", service="api", type="pss") > 64 * MiB
    assert value(text, "wsgi_service_memory_bytes", service="api", type="uss") > 64 * MiB
    assert value(text, "wsgi_service_memory_bytes", service="conductor", type="pss") > MiB
    detail = served.ctl("status", "api", check=False).stdout
    assert "memory: PSS " in detail and f"{hog['pid']} 6" in detail, detail  # the hog's USS, 6xM


def test_connections_by_remote_port_in_status_and_metrics(served):
    """A worker that opens 3 connections to a port shows 3 there; a closed one stops counting."""
    with holding_listener() as port:
        opened = run_in_api(
            served.socket("api"),
            f"import builtins\nbuiltins.conns = [socket.create_connection(('127.0.0.1', {port})) for _ in range(3)]\n",
        )
        assert opened["error"] is None, opened["error"]
        status = served.wait_for(
            lambda s: s["api"].get("connections", {}).get(str(port)) == 3, what="3 connections to the port"
        )
        assert str(port) not in status["conductor"]["connections"]
        text = scrape(served.metrics_url)
        assert value(text, "wsgi_service_connections", service="api", remote_port=port) == 3
        assert f"TCP connections: 3 to port {port}" in served.ctl("status", "api", check=False).stdout


def test_max_rss_mb_judges_a_worker_by_its_own_memory(tmp_path, server):
    """A worker whose RSS is high from pages another process maps too stays; one that grows its own
    memory past max_rss_mb is replaced (gunicorn: after its request; uWSGI: by the daemon, from its
    samples, since uWSGI's own reload-on-rss judges RSS)."""
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"s" * (160 * MiB))
    d = Daemon(tmp_path / "d", extra_args=["--sample-interval", "0.5"])
    text = f'[services.api]\nkind = "api"\napp = "{COMPROMISED}"\nprocesses = 1\nmax_rss_mb = 100\n'
    if server == "uwsgi":
        text += 'uwsgi = { "min-worker-lifetime" = 1 }\n'  # else uWSGI recycles only workers older than 10 s
    write_manifest(d.conf_dir, text, server=server)
    with open(shared, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as ours:
        for page in range(0, len(ours), 4096):  # the test maps every page too: in the worker they are shared
            ours[page]
        try:
            d.start()
            d.ctl("start", "api")
            sock = d.socket("api")
            time.sleep(1.5)  # past min-worker-lifetime
            touch = f"""
import builtins, mmap
f = open({str(shared)!r}, "rb")
builtins.shared = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
for page in range(0, len(builtins.shared), 4096):  # every page touched, nothing copied
    builtins.shared[page]
result = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
"""
            mapped = run_in_api(sock, touch)
            assert mapped["error"] is None, mapped["error"]
            assert mapped["result"] > 150 * MiB  # its RSS, past max_rss_mb
            d.wait_for(lambda s: s["api"].get("memory", {}).get("workers"), what="a sample of the worker's memory")
            time.sleep(2)  # several samples later
            assert run_in_api(sock, "")["pid"] == mapped["pid"]  # not replaced: those pages are not its own
            grown = run_in_api(sock, "import builtins\nbuiltins.hog = b'x' * (150 << 20)\n")
            assert grown["pid"] == mapped["pid"]
            deadline = time.monotonic() + 15
            while run_in_api(sock, "")["pid"] == grown["pid"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert run_in_api(sock, "")["pid"] != grown["pid"]  # replaced: its own memory passed the limit
            assert "its own memory (USS)" in d.ctl("logs", "api", "-n", "200").stdout
        finally:
            d.stop()


# run inside a worker of the compromised API: a process that leaves the tree (its own session, orphaned by
# a double fork), makes 48 MiB its own and opens 2 connections to PORT; its pid is the answer
ESCAPEE = """
r, w = os.pipe()
first = os.fork()
if first == 0:
    os.setsid()
    escapee = os.fork()
    if escapee:
        os.write(w, str(escapee).encode())
        os._exit(0)
    os.closerange(3, 65536)  # the request's connection is not held open
    code = "import socket, time\\nhog = b'x' * (48 << 20)\\n"
    code += "conns = [socket.create_connection(('127.0.0.1', PORT)) for _ in range(2)]\\ntime.sleep(300)\\n"
    os.execv(sys.executable, [sys.executable, "-c", code])
os.waitpid(first, 0)
result = int(os.read(r, 32))
"""


def test_a_process_that_left_the_tree_still_counts_for_its_service(daemon, server):
    """A compromised API, run as its own unprivileged user, hides memory and connections in a process
    out of its tree: the service's figures still count it (its control group holds it)."""
    with local_user("wsgi-h8-mem-esc") as user, holding_listener() as port:
        table = f"""
[services.evil]
kind = "api"
app = "{COMPROMISED}"
processes = 1
user = "{user}"
group = "{user}"
venv = "{user_venv()}"
stop_timeout = 3
"""
        write_manifest(daemon.conf_dir, table, server=server)
        daemon.start()
        daemon.ctl("start", "evil")
        main = daemon.status("evil")["evil"]["pid"]
        answer = run_in_api(daemon.socket("evil"), ESCAPEE.replace("PORT", str(port)))
        assert answer["error"] is None, answer["error"]
        escapee = answer["result"]
        try:
            assert escapee not in descendants(main) and owner_of(escapee)[0] == answer["uid"] != 0
            status = daemon.wait_for(
                lambda s: (
                    s["evil"].get("connections", {}).get(str(port)) == 2 and s["evil"]["memory"]["uss_bytes"] > 48 * MiB
                ),
                what="the escapee's connections and memory counted for its service",
            )
            assert status["evil"]["memory"]["pss_bytes"] > 48 * MiB
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(escapee, 9)
            daemon.ctl("stop", "evil", check=False)  # before its user goes


def test_the_readers_parse_what_the_kernel_writes():
    from supervisor.observe.connections import established
    from supervisor.observe.memory import parse_rollup

    rollup = b"""55d0-7ffd ---p 00000000 00:00 0                            [rollup]
Rss:               31744 kB
Pss:               12345 kB
Pss_Anon:           8000 kB
Shared_Clean:      19000 kB
Private_Clean:       100 kB
Private_Dirty:      9000 kB
Swap:                  0 kB
"""
    memory = parse_rollup(rollup)
    assert (memory.pss, memory.uss) == (12345 * 1024, 9100 * 1024)  # Pss_Anon is not Pss
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:A2C4 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000   999        0 222 1\n"
        "   2: 0100007F:A2C6 0100007F:0CEA 06 00000000:00000000 03:00000000 00000000     0        0 0 3\n"
    )
    assert established(table) == {222: 3306}  # the listener and the TIME_WAIT one do not count
