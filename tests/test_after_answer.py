"""Work an app does after it answers is not lost: a reload, restart or stop lets a worker's threads finish.

The app (tests/apps/after_answer.py) answers 202 at once and then writes a file in a thread of
its own for a few seconds, as glance does an image import. The old instance must not go at once
while that thread runs: it gets the server's graceful stop (uWSGI's, gunicorn's), which waits for
the thread (and for `atexit`), bounded by the service's stop_timeout.
"""

import time

import pytest

from supervisor.observe.procs import alive
from support import APPS, uwsgi_request, write_manifest

APP = APPS / "after_answer.py"
WORK_SECONDS = 3.0
OPERATIONS = ["reload", "restart", "stop", "daemon-stop"]


def manifest(stop_timeout: float = 30) -> str:
    return f"""
[services.after]
kind = "api"
app = "{APP}"
processes = 2
stop_timeout = {stop_timeout}
"""


def start_work(daemon, out, daemon_thread=False, seconds=WORK_SECONDS):
    """Ask for the work; return once its thread has begun writing."""
    query = f"path={out}&seconds={seconds}&daemon={int(daemon_thread)}"
    status, _, body = uwsgi_request(daemon.socket("after"), f"/work?{query}", method="POST")
    assert status == 202, body
    part = out.with_name(out.name + ".part")
    deadline = time.monotonic() + 10
    while not part.exists():
        assert time.monotonic() < deadline, "the thread never began"
        time.sleep(0.02)


def operate(daemon, operation):
    if operation == "daemon-stop":
        daemon.stop()
    elif operation == "stop":
        daemon.ctl("stop", "after")
    else:
        daemon.ctl(operation, "after", "--timeout", "60")


def assert_finished(out, within=20.0, seconds=WORK_SECONDS):
    """The thread wrote every line and renamed its file: it was not cut short."""
    part = out.with_name(out.name + ".part")
    deadline = time.monotonic() + within
    while not out.exists():
        if time.monotonic() > deadline:
            left = part.read_text().split() if part.exists() else []
            raise AssertionError(f"the work was cut short: {len(left)} lines, the last {left[-1:]}, and no 'done'")
        time.sleep(0.05)
    lines = out.read_text().split()
    assert lines[-1] == "done" and lines[:-1] == [str(i) for i in range(len(lines) - 1)]
    assert len(lines) > seconds / 0.1 * 0.8  # it ran its whole time


@pytest.mark.busy
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_thread_started_after_answering_finishes_across(daemon, tmp_path, server, operation):
    write_manifest(daemon.conf_dir, manifest(), server=server)
    daemon.start()
    daemon.ctl("start", "after", "--timeout", "60")
    out = tmp_path / "work.txt"
    start_work(daemon, out)
    operate(daemon, operation)
    assert_finished(out)
    if operation == "stop":
        daemon.ctl("start", "after", "--timeout", "60")
    if operation != "daemon-stop":
        assert daemon.status()["after"]["state"] == "running"
        assert "SIGKILL" not in daemon.output()


def test_a_daemon_thread_an_atexit_hook_waits_for_finishes_across_a_restart(daemon, tmp_path, server):
    """glance's way: its import threads are daemon threads, and an `atexit` hook drains their pool."""
    write_manifest(daemon.conf_dir, manifest(), server=server)
    daemon.start()
    daemon.ctl("start", "after", "--timeout", "60")
    out = tmp_path / "work.txt"
    start_work(daemon, out, daemon_thread=True)
    daemon.ctl("restart", "after", "--timeout", "60")
    assert_finished(out)


def test_work_that_outlasts_stop_timeout_is_killed_and_it_says_so(daemon, tmp_path, server):
    """The graceful stop is bounded: past stop_timeout the SIGKILL comes, and says what it ended."""
    write_manifest(daemon.conf_dir, manifest(stop_timeout=2), server=server)
    daemon.start()
    daemon.ctl("start", "after", "--timeout", "60")
    out = tmp_path / "work.txt"
    query = f"path={out}&seconds=60&daemon=0"
    assert uwsgi_request(daemon.socket("after"), f"/work?{query}", method="POST")[0] == 202
    began = time.monotonic()
    daemon.ctl("stop", "after")
    assert daemon.status()["after"]["state"] == "stopped"
    assert 1.5 < time.monotonic() - began < 10  # it had its stop_timeout, and not much more
    assert "still up 2s after the stop request: SIGKILL; 1 thread of the app in 1 worker ended" in daemon.output()
    assert not out.exists()


def test_a_stop_longer_than_the_emperors_patience_lets_the_work_finish(daemon, tmp_path):
    """uWSGI's emperor SIGKILLs a vassal's master 30 s after its file went (a stop, a reload's
    retired vassal): the service showed `stopped` while its worker, orphaned, still worked."""
    write_manifest(daemon.conf_dir, manifest(stop_timeout=90))
    daemon.start()
    daemon.ctl("start", "after", "--timeout", "60")
    workers = [w["pid"] for w in daemon.status()["after"]["workers"]]
    out = tmp_path / "work.txt"
    start_work(daemon, out, seconds=40)
    began = time.monotonic()
    daemon.ctl("stop", "after")
    assert time.monotonic() - began > 35  # stopping until the work was done
    assert_finished(out, within=1, seconds=40)
    assert not [pid for pid in workers if alive(pid)]


def test_the_daemon_stopped_right_after_a_reload_lets_the_old_vassal_finish_its_work(daemon, tmp_path):
    """The old vassal of a reload is still finishing when the daemon stops: it keeps its stop_timeout,
    not the emperor's end (which left its worker behind, orphaned, or to systemd's kill)."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "after", "--timeout", "60")
    out = tmp_path / "work.txt"
    start_work(daemon, out)
    daemon.ctl("reload", "after", "--timeout", "60")
    daemon.stop()  # fails on any process left behind
    assert_finished(out, within=0)
