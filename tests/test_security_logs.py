"""Security review (issue 26), finding 3 and the first half of finding 5, played by a compromised API.

Service `a` runs tests/apps/compromised.py as an unprivileged user: what a request sends runs in one of its
workers. From there it tries to get lines attributed to service `b` or to the daemon (every descriptor it
inherited, and the daemon's paths), and to stall the daemon by writing without end from an escaped child.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from attacker import COMPROMISED, local_user, run_in_api, user_venv

from supervisor.layout import DAEMON_NAME
from support import APPS, Daemon, free_port, write_manifest

USER = "wsgi-h2-logs-a"
STOP_TIMEOUT = 5.0


@pytest.fixture
def attacker():
    with local_user(USER) as name:
        yield name


@contextlib.contextmanager
def two_services(tmp_path, server: str, user: str):
    """`a` (compromised, run by `user`) and `b` (an honest API), started; the daemon's metrics on a port."""
    port = free_port()
    d = Daemon(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
    write_manifest(
        d.conf_dir,
        f"""
[services.a]
kind = "api"
app = "{COMPROMISED}"
processes = 2
user = "{user}"
venv = "{user_venv()}"
stop_timeout = {STOP_TIMEOUT}

[services.b]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1
""",
        server=server,
    )
    try:
        d.start()
        d.ctl("start", "--all")
        d.port = port
        yield d
    finally:
        d.stop()


def logs(d: Daemon, name: str) -> str:
    return d.ctl("logs", "-v", "-n", "5000", name).stdout


def metric(d: Daemon, pattern: str) -> float:
    """The sum of the samples whose line matches `pattern` (0 when none does)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(pattern, line))


FORGE = """
import select, stat
MARK = {mark!r}.encode()
FORGED = [
    b"b|o|CRITICAL " + MARK + b" the database of b is gone\\n",
    b"b|r|GET 500 1000 10 127.0.0.1 - - /" + MARK + b"\\n",
    b"wsgi-supervisor|o|b: running -> failed (" + MARK + b")\\n",
    b"b: running -> failed (" + MARK + b")\\n",
]
tried = []
for entry in os.listdir("/proc/self/fd"):
    fd = int(entry)
    try:
        mode = os.fstat(fd).st_mode
        where = os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:
        continue
    if stat.S_ISSOCK(mode):
        s = socket.socket(fileno=os.dup(fd))
        try:
            if s.type != socket.SOCK_DGRAM:
                continue
            s.setblocking(False)
            for payload in FORGED:
                s.send(payload)
            tried.append([fd, where, "sent"])
        except OSError as exc:
            tried.append([fd, where, str(exc)])
        finally:
            s.close()
    elif stat.S_ISFIFO(mode) and select.select([], [fd], [], 0)[1]:
        try:
            for payload in FORGED:
                os.write(fd, payload)
            tried.append([fd, where, "written"])
        except OSError as exc:
            tried.append([fd, where, str(exc)])
runtime = {runtime!r}
for path in ("daemon/log.sock", "daemon/emperor.log", "fifo/b.log", "gunicorn/b.log"):
    path = os.path.join(runtime, path)
    try:
        if path.endswith(".sock"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                for payload in FORGED:
                    s.sendto(payload, path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            for payload in FORGED:
                os.write(fd, payload)
            os.close(fd)
        tried.append([-1, path, "sent"])
    except OSError as exc:
        tried.append([-1, path, str(exc)])
for fd in (1, 2):  # what a print does
    try:
        for payload in FORGED:
            os.write(fd, payload)
        tried.append([fd, "std", "written"])
    except OSError as exc:
        tried.append([fd, "std", str(exc)])
result = tried
"""


def test_a_service_cannot_forge_lines_of_another_service_or_of_the_daemon(tmp_path, attacker, server):
    with two_services(tmp_path, server, attacker) as d:
        mark = f"forged-{os.getpid()}-{time.monotonic_ns()}"
        sock = d.socket("a")
        # both workers of a, as far as two requests in a row reach both
        answers = [run_in_api(sock, FORGE.format(mark=mark, runtime=str(d.runtime_dir))) for _ in range(4)]
        for answer in answers:
            assert answer["error"] is None, answer["error"]
            assert answer["uid"] != 0
        tried = [attempt for answer in answers for attempt in answer["result"]]

        def counted_under_a() -> float:
            return metric(d, r'wsgi_supervisor_log_lines_rejected_total\{service="a"\}')

        def seen() -> bool:
            return any(mark in logs(d, name) for name in ("a", "b", DAEMON_NAME)) or counted_under_a() > 0

        deadline = time.monotonic() + 15
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # anything still on its way

        assert mark not in logs(d, "b"), tried
        assert mark not in logs(d, DAEMON_NAME), tried
        assert metric(d, r'wsgi_responses_total\{code="5xx",service="b"\}') == 0, tried
        assert mark in logs(d, "a") or counted_under_a() > 0, f"neither logged nor counted under a: {tried}"
        for line in d.output().splitlines():  # the daemon's console: every line there is a's
            if mark in line:
                assert line.startswith("a "), line


SENDER = """
import os, socket, sys, time
path, kind = sys.argv[1], sys.argv[2]
pid = os.fork() if kind == "child" else 0
if pid:
    os.waitpid(pid, 0)
    time.sleep(30)  # the main process stays, as a server's master does, until the test ends it
    sys.exit(0)
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    for payload in (b"b|o|CRITICAL for b", b"wsgi-supervisor|o|for the daemon", b"unprefixed", b"a|o|own"):
        s.sendto(payload + b" from the " + kind.encode(), path)
"""


def test_the_log_socket_keeps_a_datagram_only_from_a_process_of_the_service_it_names(tmp_path):
    """What still reaches the daemon's log socket (servers an earlier daemon started) is checked against its
    sender: a child of a's main process speaks for a and for no one else; a process of no service, for no one."""
    import asyncio
    import sys

    from supervisor.layout import Layout
    from supervisor.logs.pipeline import LogIntake
    from supervisor.logs.senders import tree_owner

    async def play() -> tuple[list, dict]:
        layout = Layout(tmp_path)
        layout.daemon_dir.mkdir()
        lines: list = []
        said: list = []
        main = subprocess.Popen([sys.executable, "-c", SENDER, str(layout.log_socket), "child"])
        intake = LogIntake(
            asyncio.get_running_loop(),
            layout,
            lines.append,
            lambda pid: tree_owner(pid, {main.pid: "a"}),
            lambda name: name in ("a", "b"),
            say=lambda service, text, priority: said.append((service, text)),
        )
        intake.open()
        try:
            outsider = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SENDER, str(layout.log_socket), "outsider"
            )
            await outsider.wait()
            deadline = time.monotonic() + 10
            while len(lines) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            main.kill()
            main.wait()
            intake.close()
        return [(line.service, line.text) for line in lines], {"said": said, "counts": dict(intake.rejected.counts)}

    lines, rejected = asyncio.run(play())
    assert sorted(lines) == [("a", "own from the child"), ("a", "unprefixed from the child")]
    assert rejected["counts"] == {"a": 2, "": 4}
    assert rejected["said"] and rejected["said"][0][0] == "a"
