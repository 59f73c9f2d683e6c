"""A stop ends every process of a service, escaped or not (issue 26, finding 5; issue 22).

The attacker is a compromised service running as a real unprivileged user: an API that runs what a
request sends it, or a worker service's own command. It leaves a process behind that started a session
of its own, was orphaned by a double fork, dropped its environment (no tag the daemon set is left) and
ignores SIGTERM. An operator's `wsgictl stop` (or the daemon's own stop) must still end it, within the
service's stop_timeout. And a stop signals each process of a worker service once: a second SIGTERM cuts
an oslo.service child's graceful stop short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from attacker import COMPROMISED, SYSTEM_PYTHON, local_user, os_user_ids, owner_of, run_in_api, user_venv

from supervisor.observe.procs import alive, descendants
from support import APPS, Daemon, daemon_groups, write_manifest

STOP_TIMEOUT = 3.0
SLACK = 2.5  # what a stop may take beyond stop_timeout on a busy host

# run inside a worker of the compromised API: the escapee's pid is the answer
ESCAPE_FROM_API = f"""
r, w = os.pipe()
first = os.fork()
if first == 0:
    os.setsid()
    escapee = os.fork()
    if escapee:
        os.write(w, str(escapee).encode())
        os._exit(0)
    os.closerange(3, 65536)  # a daemon of its own: the request's connection is not held open
    code = "import signal, time\\nsignal.signal(15, signal.SIG_IGN)\\nsignal.signal(1, signal.SIG_IGN)\\n"
    os.execve({SYSTEM_PYTHON!r}, [{SYSTEM_PYTHON!r}, "-c", code + "time.sleep(300)"], {{}})
os.waitpid(first, 0)
result = int(os.read(r, 32))
"""


def api_table(name: str, user: str) -> str:
    return f"""
[services.{name}]
kind = "api"
app = "{COMPROMISED}"
processes = 1
user = "{user}"
group = "{user}"
venv = "{user_venv()}"
stop_timeout = {STOP_TIMEOUT}
"""


def escaping_worker_table(name: str, user: str, pid_file: Path) -> str:
    return f"""
[services.{name}]
kind = "worker"
command = ["{SYSTEM_PYTHON}", "{APPS / "escaping_worker.py"}"]
user = "{user}"
group = "{user}"
ready_after = 0.2
stop_timeout = {STOP_TIMEOUT}
environment = {{ ESCAPEE_FILE = "{pid_file}" }}
"""


@contextlib.contextmanager
def killed_at_the_end(pids: list[int]):
    """The test's own cleanup: whatever the daemon failed to end is SIGKILLed by pid."""
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def pid_file_for(user: str) -> tuple[Path, Path]:
    """A file the worker's user may write its escapee's pid into (tmp_path is root's, 0700)."""
    where = Path(tempfile.mkdtemp(prefix="wsgi-h4-", dir="/tmp"))
    where.chmod(0o755)
    path = where / "escapee.pid"
    path.write_text("")
    uid, gid = os_user_ids(user)
    os.chown(path, uid, gid)
    return where, path


def read_pid(path: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip()
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"the worker wrote no escapee pid into {path}")


def test_a_stop_ends_what_a_compromised_api_left_behind(daemon, server):
    with local_user("wsgi-h4-cg-api") as user:
        write_manifest(daemon.conf_dir, api_table("evil", user), server=server)
        daemon.start()
        daemon.ctl("start", "evil")
        main = daemon.status("evil")["evil"]["pid"]
        answer = run_in_api(daemon.socket("evil"), ESCAPE_FROM_API)
        assert answer["error"] is None, answer["error"]
        escapee = answer["result"]
        with killed_at_the_end([escapee, main, *descendants(main)]) as every:
            assert alive(escapee) and owner_of(escapee)[0] == os_user_ids(user)[0]
            assert escapee not in descendants(main)  # out of the tree: only its group still holds it
            started = time.monotonic()
            daemon.ctl("stop", "evil")
            took = time.monotonic() - started
            left = [pid for pid in every if alive(pid)]
            assert left == [], f"still running after `wsgictl stop` ({took:.1f}s): {left} (escapee {escapee})"
            assert took <= STOP_TIMEOUT + SLACK, f"the stop took {took:.1f}s"
            assert daemon.status("evil")["evil"]["state"] == "stopped"


def test_a_stop_ends_what_a_compromised_worker_left_behind(daemon):
    with local_user("wsgi-h4-cg-wrk") as user:
        where, pid_file = pid_file_for(user)
        try:
            write_manifest(daemon.conf_dir, escaping_worker_table("conductor", user, pid_file))
            daemon.start()
            daemon.ctl("start", "conductor")
            main = daemon.status("conductor")["conductor"]["pid"]
            escapee = read_pid(pid_file)
            with killed_at_the_end([escapee, main, *descendants(main)]) as every:
                assert alive(escapee) and escapee not in descendants(main)
                assert "ESCAPEE_FILE" not in Path(f"/proc/{escapee}/environ").read_text()
                started = time.monotonic()
                daemon.ctl("stop", "conductor")
                took = time.monotonic() - started
                left = [pid for pid in every if alive(pid)]
                assert left == [], f"still running after `wsgictl stop` ({took:.1f}s): {left} (escapee {escapee})"
                assert took <= STOP_TIMEOUT + SLACK, f"the stop took {took:.1f}s"
        finally:
            pid_file.unlink(missing_ok=True)
            where.rmdir()


def test_each_process_of_a_worker_gets_the_stop_signal_once(daemon, tmp_path):
    log = tmp_path / "signals.log"
    write_manifest(
        daemon.conf_dir,
        f"""
[services.scheduler]
kind = "worker"
command = ["{SYSTEM_PYTHON}", "{APPS / "forking_worker.py"}"]
ready_after = 0.5
stop_timeout = 10
environment = {{ SIGNAL_LOG = "{log}", WORKER_CHILDREN = "3", GRACE = "1.0" }}
""",
    )
    daemon.start()
    for round in range(2):  # a stop, then a restart's stop: one signal each time
        log.write_text("")
        daemon.ctl("start", "scheduler")
        main = daemon.status("scheduler")["scheduler"]["pid"]
        children = descendants(main)
        assert len(children) == 3, children
        daemon.ctl("stop", "scheduler")
        lines = log.read_text().splitlines()
        daemon_pid = daemon.proc.pid
        for child in children:
            got = [line for line in lines if line.startswith(f"child {child} ")]
            assert got == [f"child {child} caught SIGTERM from {daemon_pid}"], (round, lines)


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_the_daemons_own_stop_ends_every_process_and_leaves_no_group(tmp_path, server):
    with local_user("wsgi-h4-cg-all") as user:
        where, pid_file = pid_file_for(user)
        d = Daemon(tmp_path)
        every: list[int] = []
        try:
            write_manifest(
                d.conf_dir,
                api_table("evil", user) + escaping_worker_table("conductor", user, pid_file),
                server=server,
            )
            d.start()
            d.ctl("start", "--all")
            assert daemon_groups(d.runtime_dir), "the daemon made no control group for its services"
            answer = run_in_api(d.socket("evil"), ESCAPE_FROM_API)
            assert answer["error"] is None, answer["error"]
            every += [answer["result"], read_pid(pid_file)]
            for info in d.status().values():
                every += [info["pid"], *descendants(info["pid"])]
            with killed_at_the_end(every):
                started = time.monotonic()
                d.stop()
                took = time.monotonic() - started
                left = [pid for pid in every if alive(pid)]
                assert left == [], f"still running after the daemon stopped ({took:.1f}s): {left}"
                assert took <= STOP_TIMEOUT + SLACK, f"the daemon's stop took {took:.1f}s"
                assert daemon_groups(d.runtime_dir) == []
        finally:
            d.stop()
            pid_file.unlink(missing_ok=True)
            where.rmdir()


def test_what_outlived_a_killed_daemon_is_ended_by_the_next_start(tmp_path):
    """A killed daemon ends nothing: its worker dies with it (the parent-death signal), the escapee
    does not. The next daemon finds the worker's group again, and its start ends what is left there."""
    with local_user("wsgi-h4-cg-again") as user:
        where, pid_file = pid_file_for(user)
        d = Daemon(tmp_path)
        try:
            write_manifest(d.conf_dir, escaping_worker_table("conductor", user, pid_file))
            d.start()
            d.ctl("start", "conductor")
            escapee = read_pid(pid_file)
            with killed_at_the_end([escapee]):
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                time.sleep(0.5)
                assert alive(escapee)  # the daemon could not end it: it is gone
                pid_file.write_text("")
                d.start()
                d.ctl("start", "conductor")
                read_pid(pid_file)  # the new worker has escaped a process of its own
                assert not alive(escapee), "an escapee of the last daemon's worker still runs"
                assert "an earlier instance left in its group" in d.output()
                d.ctl("stop", "conductor")
        finally:
            d.stop()
            pid_file.unlink(missing_ok=True)
            where.rmdir()
