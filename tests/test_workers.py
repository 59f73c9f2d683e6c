"""Worker services: the same verbs, states and status as APIs, on the daemon's own children."""

import os
import signal
import subprocess
import sys
import time

import pytest

from supervisor.observe.procs import alive
from support import APPS, WSGICTL, service_venv, write_manifest

WORKER = APPS / "worker.py"
OSLO_WORKER = APPS / "oslo_worker.py"


def worker(name, extra="", env=""):
    return f"""
[services.{name}]
kind = "worker"
command = ["{sys.executable}", "{WORKER}", "--config-file", "/etc/{name}.conf"]
environment = {{ {env} }}
stop_timeout = 3
{extra}
"""


def test_notify_worker_is_ready_only_when_it_says_so(daemon):
    write_manifest(daemon.conf_dir, worker("conductor", "notify = true\nready_after = 0", 'WORKER_NOTIFY_AFTER = "2"'))
    daemon.start()
    time.sleep(1)
    s = daemon.status()["conductor"]
    assert s["state"] == "starting" and not s["ready"] and s["pid"]
    daemon.ctl("start", "conductor")
    s = daemon.status()["conductor"]
    assert s["state"] == "running" and s["ready"]
    assert s["status_text"] == "serving 3 queues"
    assert "serving 3 queues" in daemon.ctl("status").stdout
    assert s["socket"] is None and s["kind"] == "worker"


def test_silent_worker_is_ready_by_the_timer(daemon):
    write_manifest(daemon.conf_dir, worker("scheduler", "ready_after = 1.5"))
    daemon.start()
    started = time.monotonic()
    daemon.ctl("start", "scheduler")
    assert time.monotonic() - started >= 1.0
    assert daemon.status()["scheduler"]["state"] == "running"


def test_killed_worker_comes_back_with_backoff_and_a_crash_loop_fails(daemon):
    write_manifest(
        daemon.conf_dir,
        worker("conductor", "ready_after = 0.2")
        + worker("flaky", "ready_after = 0.2\nstart_limit = 5", 'WORKER_EXIT_AFTER = "0.1", WORKER_EXIT_CODE = "7"'),
    )
    daemon.start()
    daemon.ctl("start", "conductor")
    pid = daemon.status()["conductor"]["pid"]
    os.kill(pid, signal.SIGKILL)
    s = daemon.wait_for(lambda s: s["conductor"]["state"] == "backoff", what="conductor backoff")["conductor"]
    assert s["last_exit"] == "killed by SIGKILL" and "killed by SIGKILL" in s["reason"]
    s = daemon.wait_for(
        lambda s: s["conductor"]["state"] == "running" and s["conductor"]["pid"] != pid, what="conductor back"
    )["conductor"]
    assert s["restarts"] >= 1

    s = daemon.wait_state("flaky", "failed", timeout=60)
    assert s["last_exit"] == "exited with status 7"
    assert "gave up after 5 failed starts" in s["reason"]
    assert "worker giving up" in daemon.ctl("status", "flaky", check=False).stdout


def test_stop_ends_the_whole_process_tree(daemon, tmp_path):
    pids_file = tmp_path / "children"
    write_manifest(daemon.conf_dir, worker("forker", "ready_after = 0.5", f'WORKER_FORK = "{pids_file}"'))
    daemon.start()
    daemon.ctl("start", "forker")
    main = daemon.status()["forker"]["pid"]
    children = [int(p) for p in pids_file.read_text().split()]
    assert len(children) == 3 and all(alive(p) for p in children)
    daemon.ctl("stop", "forker")
    assert daemon.status()["forker"]["state"] == "stopped"
    assert not alive(main)
    assert [p for p in children if alive(p)] == []


def test_a_worker_that_ignores_sigterm_is_killed_after_stop_timeout(daemon):
    write_manifest(daemon.conf_dir, worker("stubborn", "ready_after = 0.2", 'WORKER_IGNORE_TERM = "1"'))
    daemon.start()
    daemon.ctl("start", "stubborn")
    main = daemon.status()["stubborn"]["pid"]
    started = time.monotonic()
    daemon.ctl("stop", "stubborn")
    took = time.monotonic() - started
    assert 2.5 <= took < 10
    assert not alive(main)
    assert "still up 3s after the stop request: SIGKILL" in daemon.ctl("logs", "stubborn").stdout


def test_restart_and_reload_of_a_worker(daemon):
    write_manifest(daemon.conf_dir, worker("conductor", "ready_after = 0.2"))
    daemon.start()
    daemon.ctl("start", "conductor")
    pid = daemon.status()["conductor"]["pid"]
    daemon.ctl("reload", "conductor")  # SIGHUP: the same process
    assert daemon.status()["conductor"]["pid"] == pid
    daemon.wait_for(lambda s: "reloading my configuration" in daemon.ctl("logs", "conductor").stdout)
    daemon.ctl("restart", "conductor")
    s = daemon.status()["conductor"]
    assert s["state"] == "running" and s["pid"] != pid and not alive(pid)


def test_missing_program_is_a_clear_failure(daemon, tmp_path):
    program = tmp_path / "conductor"
    program.write_text("#!/bin/sh\nexec sleep 100\n")
    program.chmod(0o755)
    write_manifest(daemon.conf_dir, f'[services.c]\nkind = "worker"\ncommand = ["{program}"]\nready_after = 0.1\n')
    daemon.start()
    daemon.ctl("start", "c")
    program.unlink()  # removed after validation: the next start cannot run it
    daemon.ctl("restart", "c", "--no-block")
    s = daemon.wait_state("c", "backoff")
    assert "cannot run" in s["reason"] and "No such file" in s["reason"]


def test_a_worker_runs_as_its_user_and_still_notifies(daemon):
    script = "import os, socket, time; print('uid', os.getuid(), os.environ['HOME'], flush=True); "
    script += "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
    script += "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(100)"
    write_manifest(
        daemon.conf_dir,
        f"""
[services.unprivileged]
kind = "worker"
command = ["/usr/bin/python3", "-c", "{script}"]
user = "nobody"
notify = true
""",
    )
    daemon.start()
    daemon.ctl("start", "unprivileged")
    pid = daemon.status()["unprivileged"]["pid"]
    uids = open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[:2]
    assert uids == ["65534", "65534"]
    assert "uid 65534 /nonexistent" in daemon.ctl("logs", "unprivileged").stdout


@pytest.mark.parametrize("backend", ["eventlet", "threading"])
def test_an_oslo_service_worker_reloads_at_once_as_systemd_counts_it(daemon, backend):
    """oslo.service says READY=1 once, at start, and reloads on SIGHUP without a word (both its
    backends): the reload is done once the signal is delivered, as systemd counts it for a
    Type=notify unit with ExecReload=kill -HUP, not after start_timeout."""
    venv = service_venv("oslo-service", "oslo.service[threading]")
    write_manifest(
        daemon.conf_dir,
        f"""
[services.conductor]
kind = "worker"
command = ["{venv}/bin/python", "{OSLO_WORKER}", "{backend}"]
notify = true
start_timeout = 60
stop_timeout = 10
""",
    )
    daemon.start()
    daemon.ctl("start", "conductor", "--timeout", "90")
    pid = daemon.status()["conductor"]["pid"]
    started = time.monotonic()
    reload = daemon.ctl("reload", "conductor", "--timeout", "30", check=False)
    took = time.monotonic() - started
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert took < 10
    s = daemon.status()["conductor"]
    assert s["state"] == "running" and s["ready"] and s["pid"] == pid
    assert daemon.ctl("status", "conductor", check=False).returncode == 0
    # and the service did reload: the eventlet launcher resets the service, cotyledon starts a new child
    took_it = "reset: configuration reloaded" if backend == "eventlet" else "started (threading backend)"
    deadline = time.monotonic() + 30
    while daemon.ctl("logs", "conductor", "-n", "100").stdout.count(took_it) < (1 if backend == "eventlet" else 2):
        assert time.monotonic() < deadline, daemon.ctl("logs", "conductor", "-n", "100").stdout
        time.sleep(0.3)


def test_a_worker_that_speaks_the_reload_protocol_is_waited_for(daemon, tmp_path):
    """reload_notify: RELOADING=1, then READY=1 (systemd's Type=notify-reload) ends the reload; a reload
    that timed out does not show its reason during the next one."""
    how = tmp_path / "reload-takes"
    how.write_text("never")
    env = f'WORKER_NOTIFY_AFTER = "0", WORKER_RELOAD_PROTOCOL = "{how}"'
    write_manifest(daemon.conf_dir, worker("conductor", "notify = true\nreload_notify = true\nstart_timeout = 3", env))
    daemon.start()
    daemon.ctl("start", "conductor")
    started = time.monotonic()
    daemon.ctl("reload", "conductor")
    assert time.monotonic() - started >= 2.5
    s = daemon.status()["conductor"]
    assert s["state"] == "running" and s["reason"] == "reload timed out"

    how.write_text("2")
    cmd = [str(WSGICTL), "--runtime-dir", str(daemon.runtime_dir), "reload", "conductor", "--timeout", "30"]
    started = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as reload:
        s = daemon.wait_state("conductor", "reloading")
        assert s["reason"] is None
        out, _ = reload.communicate(timeout=60)
    assert reload.returncode == 0, out
    assert time.monotonic() - started >= 1.5
    s = daemon.status()["conductor"]
    assert s["state"] == "running" and s["reason"] == "reloaded"
