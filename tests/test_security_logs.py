"""Security review (issue 26), finding 3 and the first half of finding 5, played by a compromised API.

Service `a` runs tests/apps/compromised.py as an unprivileged user: what a request sends runs in one of its
workers. From there it tries to get lines attributed to service `b` or to the daemon (every descriptor it
inherited, and the daemon's paths), and to stall the daemon by writing without end from an escaped child.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from attacker import COMPROMISED, local_user, run_in_api, user_venv

from supervisor.cli.client import Client
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


def console_text(d: Daemon) -> str:
    """The daemon's console as written (read_text would turn a carriage return into a newline)."""
    return d.log_path.read_bytes().decode(errors="replace")


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
        for line in console_text(d).split("\n"):  # the daemon's console: all a's
            if mark in line:
                assert line.startswith("a "), line


DRAW = """
MARK = {mark!r}.encode()
for text in (
    b"ok " + MARK + b"\\r\\x1b[2Kb            | CRITICAL " + MARK + b" drawn over\\n",
    b"ok " + MARK + b"\\x00b            | CRITICAL " + MARK + b" after a NUL\\n",
    b"ok " + MARK + b"\\x1b[1A\\x1b[2K\\rwsgi-supervisor | b: running -> failed " + MARK + b"\\n",
):
    os.write(1, text)
result = True
"""
CONTROLS = re.compile("[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]")


def test_a_service_cannot_draw_a_line_of_another_on_the_daemons_console(tmp_path, attacker, server):
    """The foreground console (and, under systemd, the daemon's own journal, which splits its stdout at a NUL
    too) shows every service's lines one after the other: a's text cannot move the cursor or end the line
    to show one as b's or as the daemon's."""
    with two_services(tmp_path, server, attacker) as d:
        mark = f"drawn-{os.getpid()}-{time.monotonic_ns()}"
        assert run_in_api(d.socket("a"), DRAW.format(mark=mark))["error"] is None
        deadline = time.monotonic() + 15
        while console_text(d).count(mark) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        console = console_text(d)
        shown = [line for line in console.split("\n") if mark in line]
        assert len(shown) == 3, shown
        for line in shown:
            assert line.startswith("a "), repr(line)
            assert not CONTROLS.search(line), repr(line)


FLOOD = """
import select, signal, stat, time
# what leads to the daemon: stdout and stderr, every named FIFO and datagram socket the worker holds
targets = [1, 2]
for entry in os.listdir("/proc/self/fd"):
    fd = int(entry)
    try:
        named = os.readlink(f"/proc/self/fd/{fd}").startswith("/")
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):
            with socket.socket(fileno=os.dup(fd)) as s:
                datagram = s.type == socket.SOCK_DGRAM
    except OSError:
        continue
    if (stat.S_ISFIFO(mode) and named) or (stat.S_ISSOCK(mode) and datagram):
        if fd > 2 and select.select([], [fd], [], 0)[1]:
            targets.append(fd)
r, w = os.pipe()
first = os.fork()
if first == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for entry in os.listdir("/proc/self/fd"):  # the request's connection too: the answer must end
            if int(entry) not in (*targets, w):
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        chunk = (b"flood " + b"x" * 90 + b"\\n") * 40
        while targets:
            for fd in select.select([], targets, [], 1.0)[1]:
                try:
                    os.write(fd, chunk)
                except BlockingIOError:
                    pass
                except OSError:
                    targets.remove(fd)
        os._exit(0)
    os._exit(0)
os.waitpid(first, 0)
os.close(w)
result = {"pid": int(os.read(r, 32)), "targets": targets}
"""


def _answers_in(seconds: float, ask) -> float:
    started = time.monotonic()
    ask()
    took = time.monotonic() - started
    assert took < seconds, f"took {took:.2f}s"
    return took


def test_a_flooding_service_stalls_neither_the_daemon_nor_its_own_stop(tmp_path, attacker, server):
    flooder = None
    try:
        with two_services(tmp_path, server, attacker) as d:
            answer = run_in_api(d.socket("a"), FLOOD)
            assert answer["error"] is None, answer["error"]
            flooder = answer["result"]["pid"]
            assert answer["result"]["targets"], "the worker has nothing to write into"
            d.wait_for(lambda s: True)  # answers at all
            deadline = time.monotonic() + 15
            while "flood xxx" not in logs(d, "a") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "flood xxx" in logs(d, "a")

            control = Client(d.runtime_dir, timeout=5)

            def status() -> None:
                reply = control.request({"cmd": "status"})
                assert reply.get("ok") is not False, reply

            def health() -> None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/health/b", timeout=5) as reply:
                        assert reply.status == 200
                except urllib.error.HTTPError as exc:
                    raise AssertionError(f"/health/b answered {exc.code}") from None

            for _ in range(5):  # while a floods
                _answers_in(1.0, status)
                _answers_in(1.0, health)
                time.sleep(0.2)

            stopped: dict[str, float | subprocess.CompletedProcess] = {}

            def stop() -> None:
                started = time.monotonic()
                stopped["result"] = d.ctl("stop", "a", check=False, timeout=STOP_TIMEOUT + 60)
                stopped["took"] = time.monotonic() - started

            stopper = threading.Thread(target=stop)
            stopper.start()
            slowest = 0.0
            while stopper.is_alive():  # while a stops
                slowest = max(slowest, _answers_in(1.0, health))
                time.sleep(0.2)
            stopper.join()
            result = stopped["result"]
            assert isinstance(result, subprocess.CompletedProcess)
            assert result.returncode == 0, result.stdout + result.stderr
            assert stopped["took"] < STOP_TIMEOUT + 3, f"the stop took {stopped['took']:.1f}s"
            assert d.status("a")["a"]["state"] == "stopped"
            _answers_in(1.0, status)
            print(json.dumps({"stop_s": stopped["took"], "slowest_health_s": slowest}))
    finally:
        if flooder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(flooder, signal.SIGKILL)


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


def test_a_pipe_dropped_while_its_writer_goes_on_is_read_up_to_what_it_held(tmp_path):
    """A stop drains a service's FIFO a bounded piece a turn of the loop, up to what it held at the stop,
    however fast an escaped writer keeps filling it."""
    import asyncio
    import fcntl

    from supervisor.logs.pipes import READ_SIZE, OutputPipes

    async def play() -> tuple[int, float, int]:
        loop = asyncio.get_running_loop()
        taken: list[int] = []
        pipes = OutputPipes(loop, lambda service, stream, payload: taken.append(len(payload)))
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1024 * 1024)
        line = b"x" * 99 + b"\n"
        stop = False

        def flood() -> None:  # a writer that never stops, on the same loop as the reader
            if stop:
                return
            with contextlib.suppress(BlockingIOError):
                while True:
                    os.write(write_fd, line * 40)
            loop.call_soon(flood)

        flood()
        pipes.add("a", read_fd, "a")
        await asyncio.sleep(0.2)
        taken.clear()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        started = time.monotonic()
        pipes.drop("a")
        while pipes.draining:
            await asyncio.sleep(0)
        took = time.monotonic() - started
        stop = True
        tick_task.cancel()
        os.close(write_fd)
        return sum(taken), took, ticks

    drained, took, ticks = asyncio.run(play())
    assert drained <= 1024 * 1024 + READ_SIZE, drained
    assert ticks >= 2, "the drain took the loop for itself"
    assert took < 5, took


def test_the_launcher_gives_uwsgi_the_instances_fifo_and_never_the_emperors_output(tmp_path):
    """uWSGI keeps fds 1 and 2 of its launcher in the master and every worker: the instance's own FIFO
    (write-only while the daemon reads it), /dev/null when there is none, never what the emperor gave."""
    import socket
    import stat

    from supervisor.uwsgi.launcher import output

    fifo = tmp_path / "a.log"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the daemon
    try:
        fd = output({"output": str(fifo)})
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
        assert os.get_blocking(fd)
        assert fcntl_access(fd) == os.O_WRONLY
        os.write(fd, b"first line\n")
        os.close(fd)
        assert os.read(reader, 100) == b"first line\n"
    finally:
        os.close(reader)
    fd = output({"output": str(fifo)})  # no daemon reads it (restarting): the line waits in the FIFO
    assert fcntl_access(fd) == os.O_RDWR
    os.close(fd)
    fd = output({"output": str(tmp_path / "gone.log")})
    assert os.readlink(f"/proc/self/fd/{fd}") == os.devnull
    os.close(fd)
    # a vassal file of an earlier version names the shared log socket, where the daemon checks each sender
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(str(tmp_path / "log.sock"))
        fd = output({"log": str(tmp_path / "log.sock")})
        os.write(fd, b"early line")
        os.close(fd)
        assert log.recv(100) == b"early line"


def fcntl_access(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
