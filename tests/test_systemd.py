"""The units on a real systemd (in systemd-nspawn): systemctl and journalctl for every service."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nspawn import Container

from support import APPS, ROOT, WSGICTL, with_server

pytestmark = pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-container")

VENV_BIN = Path(sys.executable).parent
CTL = f"{VENV_BIN}/wsgictl"
PYTHON = f"{VENV_BIN}/python3"
RUN = "/run/wsgi-supervisor"
# what `ps` shows of our processes: uWSGI's emperor and vassals, gunicorn's arbiters and workers, workers, the daemon
OURS = ("uWSGI", "gunicorn/boot.py", "worker.py", "wsgi-supervisor")


def manifest(server: str, conductor_env: str = "one") -> str:
    return with_server(
        f"""
[services.api]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1

[services.conductor]
kind = "worker"
command = ["{PYTHON}", "{APPS / "worker.py"}"]
notify = true
environment = {{ WORKER_NOTIFY_AFTER = "0.2", WORKER_FLAVOUR = "{conductor_env}" }}

[services.broken]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1
enabled = false
start_limit = 3
environment = {{ PROBE_FAIL_IMPORT = "no database" }}
""",
        server,
    )


def test_units_verify_as_installed(tmp_path):
    subprocess.run([str(WSGICTL), "units", "install", "--dest", str(tmp_path)], check=True, capture_output=True)
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            "--recursive-errors=no",
            "./wsgi-supervisor.service",
            "./wsgi@api.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    unit = (tmp_path / "wsgi-supervisor.service").read_text()
    assert f"ExecStart={VENV_BIN}/wsgi-supervisor" in unit
    assert "RuntimeDirectory=wsgi-supervisor" in unit and "Type=notify" in unit


@pytest.fixture
def machine(tmp_path):
    pyenv = Path(sys.base_prefix)
    # a name of this run's own: other runs on the machine boot theirs at the same time
    c = Container(f"wsgitest-{os.getpid()}", [ROOT, pyenv], tmp_path / "console.log").start()
    try:
        yield c
    finally:
        c.stop()


def status(c: Container) -> dict[str, dict]:
    out = c.run(CTL, "--runtime-dir", RUN, "status", "--json", check=False).stdout
    return {s["name"]: s for s in json.loads(out)}


def is_active(c: Container, unit: str) -> str:
    return c.run("systemctl", "is-active", unit, check=False).stdout.strip()


def request(c: Container, name: str) -> int:
    code = f"import sys; sys.path.insert(0, '{ROOT / 'tests'}'); from support import uwsgi_request; "
    code += f"print(uwsgi_request('{RUN}/{name}.sock')[0])"
    return int(c.run(PYTHON, "-c", code).stdout.strip())


def wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_services_under_a_real_systemd(machine, server):
    c = machine
    c.write("/etc/wsgi-supervisor/conf.d/host.toml", manifest(server))
    c.run(CTL, "units", "install", "--socket-group", "root")
    c.run(
        "systemd-analyze",
        "verify",
        "--man=no",
        "--recursive-errors=no",
        "/etc/systemd/system/wsgi-supervisor.service",
        "/etc/systemd/system/wsgi@api.service",
    )
    c.run("systemctl", "daemon-reload")

    # the daemon is a notify service: start returns once the boot services are ready
    c.run("systemctl", "start", "wsgi-supervisor")
    assert is_active(c, "wsgi-supervisor") == "active"
    assert "2 running" in c.run("systemctl", "show", "-p", "StatusText", "wsgi-supervisor").stdout
    c.run("systemctl", "start", "wsgi@api", "wsgi@conductor")
    assert is_active(c, "wsgi@api") == is_active(c, "wsgi@conductor") == "active"
    assert request(c, "api") == 200
    # systemctl reload of a worker that says READY=1 only at start (oslo.service's way): done once
    # the signal is delivered, as systemd counts it for Type=notify, not after start_timeout
    conductor = status(c)["conductor"]["pid"]
    started = time.monotonic()
    c.run("systemctl", "reload", "wsgi@conductor", timeout=60)
    assert time.monotonic() - started < 20
    assert is_active(c, "wsgi@conductor") == "active"
    assert status(c)["conductor"]["state"] == "running" and status(c)["conductor"]["pid"] == conductor
    mode = c.run("stat", "-c", "%a %G", f"{RUN}/api.sock").stdout.split()
    assert mode == ["660", "root"]

    # Delegate=yes: the daemon lives in a leaf of its unit's group, each service in a group of its own
    # beside it (what `systemd-cgls` shows), so that a stop reaches every process of a service
    def group_of(pid) -> str:
        """The process's group below the container's (nspawn here gives it no cgroup namespace)."""
        lines = c.run("cat", f"/proc/{pid}/cgroup").stdout.splitlines()
        path = next(line[3:] for line in lines if line.startswith("0::"))
        return path[path.index("/system.slice/") :]

    ours = "/system.slice/wsgi-supervisor.service/wsgi-supervisor"
    daemon_pid = c.run("systemctl", "show", "-p", "MainPID", "--value", "wsgi-supervisor").stdout.strip()
    assert group_of(daemon_pid) == f"{ours}/daemon"
    assert group_of(status(c)["api"]["pid"]) == f"{ours}/api@{server}"
    assert group_of(status(c)["conductor"]["pid"]) == f"{ours}/conductor@process"

    # kill -9 of the API's master: the daemon brings it back, the unit never leaves active
    pid = status(c)["api"]["pid"]
    c.run("kill", "-9", str(pid))
    states = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states.add(is_active(c, "wsgi@api"))
        s = status(c)["api"]
        if s["state"] == "running" and s["pid"] != pid:
            break
        time.sleep(0.1)
    assert states == {"active"}
    assert request(c, "api") == 200

    # a service that fails for good is failed for systemd too: its start job fails at the first
    # failed attempt, and the unit is failed once the daemon gives up (start_limit)
    started = c.run("systemctl", "start", "wsgi@broken", check=False, timeout=180)
    assert started.returncode != 0
    wait(lambda: status(c)["broken"]["state"] == "failed", what="broken failed")
    wait(
        lambda: c.run("systemctl", "is-failed", "wsgi@broken", check=False).stdout.strip() == "failed",
        what="wsgi@broken failed",
    )

    # journalctl -u wsgi@NAME has the service's own lines
    journal = c.run("journalctl", "-u", "wsgi@conductor", "--no-pager").stdout
    assert "starting, argv=" in journal
    # and an API's: its app's output and its request lines, whichever server runs it
    journal = c.run("journalctl", "-u", "wsgi@api", "--no-pager").stdout
    assert "probe app imported in pid" in journal and "GET / 200 " in journal, journal[-3000:]

    # systemctl stop: graceful, the socket gone, and wsgictl agrees
    c.run("systemctl", "stop", "wsgi@api")
    assert status(c)["api"]["state"] == "stopped"
    assert c.run("test", "-e", f"{RUN}/api.sock", check=False).returncode == 1
    # and the other way round: wsgictl stop, systemd follows
    c.run(CTL, "--runtime-dir", RUN, "stop", "conductor")
    wait(lambda: is_active(c, "wsgi@conductor") == "inactive", what="wsgi@conductor inactive")
    # wsgictl start starts the unit too
    c.run(CTL, "--runtime-dir", RUN, "start", "api", "conductor")
    wait(lambda: is_active(c, "wsgi@api") == is_active(c, "wsgi@conductor") == "active", what="units active")

    # a manifest change and systemctl reload: only the changed service gets new pids
    before = status(c)
    c.write("/etc/wsgi-supervisor/conf.d/host.toml", manifest(server, conductor_env="two"))
    c.run("systemctl", "reload", "wsgi-supervisor")
    after = status(c)
    assert after["api"]["pid"] == before["api"]["pid"]
    assert after["conductor"]["pid"] != before["conductor"]["pid"]
    assert after["conductor"]["state"] == "running"
    assert is_active(c, "wsgi@conductor") == "active"

    # an upgrade in place: the daemon re-execs with the same pid, so systemd sees nothing happen,
    # and no service moves
    def main_pid():
        return c.run("systemctl", "show", "-p", "MainPID", "--value", "wsgi-supervisor").stdout.strip()

    daemon_pid, before = main_pid(), status(c)
    c.run(CTL, "--runtime-dir", RUN, "daemon-reexec")
    after = status(c)
    assert {n: s["pid"] for n, s in after.items()} == {n: s["pid"] for n, s in before.items()}
    assert main_pid() == daemon_pid and is_active(c, "wsgi-supervisor") == "active"
    assert group_of(daemon_pid) == f"{ours}/daemon"  # the new image found its groups again
    assert is_active(c, "wsgi@api") == is_active(c, "wsgi@conductor") == "active"
    assert request(c, "api") == 200
    assert "running" in c.run("systemctl", "show", "-p", "StatusText", "wsgi-supervisor").stdout

    # stop everything: no process of ours is left
    c.run("systemctl", "stop", "wsgi-supervisor")
    assert is_active(c, "wsgi@api") == "inactive"
    left = c.run("ps", "-eo", "pid,args", "--no-headers").stdout
    assert not [name for name in OURS if name in left], left


def test_a_start_that_keeps_failing_fails_its_job_and_the_unit_follows_the_retries(machine):
    """`systemctl start wsgi@NAME` of a service that cannot start yet (its database is not up) answers
    as a Restart= unit does: the job fails at the first failed attempt, with the reason; the daemon
    keeps retrying, the unit says so (activating, and why), and turns active by itself once the
    daemon's next attempt succeeds."""
    c = machine
    needed = "/run/database-is-up"
    c.write(
        "/etc/wsgi-supervisor/conf.d/host.toml",
        f"""
[services.late]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1
enabled = false
backoff_max = 3
environment = {{ PROBE_NEEDS_FILE = "{needed}" }}
""",
    )
    c.run(CTL, "units", "install", "--socket-group", "root")
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "start", "wsgi-supervisor")

    started = time.monotonic()
    job = c.run("systemctl", "start", "wsgi@late", check=False, timeout=90)
    assert job.returncode != 0 and "Job for wsgi@late.service failed" in job.stderr, job.stderr
    assert time.monotonic() - started < 60
    assert status(c)["late"]["state"] in ("backoff", "starting")  # the daemon keeps trying

    # the unit shows that it is retried, and why
    def retried() -> bool:
        shown = c.run("systemctl", "show", "-p", "ActiveState", "-p", "StatusText", "wsgi@late").stdout
        journal = c.run("journalctl", "-u", "wsgi@late", "--no-pager").stdout
        return (
            "ActiveState=activating" in shown
            and "backoff" in shown
            and "cannot import without /run/database-is-up" in shown
            and "start attempt 1 failed" in journal
        )

    wait(retried, timeout=30, what="the unit retrying, with the reason")
    assert is_active(c, "wsgi@late") == "activating"

    # the database comes up: the daemon's next attempt succeeds, the unit turns active by itself
    c.write(needed, "")
    wait(lambda: is_active(c, "wsgi@late") == "active", timeout=60, what="wsgi@late active")
    assert status(c)["late"]["state"] == "running"
    assert request(c, "late") == 200
    # and it stays so: its restarts were the unit's own, the service was started once per attempt
    time.sleep(2)
    assert is_active(c, "wsgi@late") == "active"
    c.run("systemctl", "stop", "wsgi@late")
    assert status(c)["late"]["state"] == "stopped"


def test_a_unit_without_delegate_is_told_in_the_journal_and_the_status(machine):
    """The shipped unit delegates the daemon's control group and nothing is said; a unit without
    `Delegate=yes` (an older or hand-written one) gets one warning with the fix, in the journal,
    `wsgictl status` and `systemctl status`, and the services still run in groups of their own."""
    c = machine
    c.write(
        "/etc/wsgi-supervisor/conf.d/host.toml",
        f'[services.conductor]\nkind = "worker"\ncommand = ["{PYTHON}", "{APPS / "worker.py"}"]\n',
    )
    c.run(CTL, "units", "install", "--socket-group", "root")
    c.run("systemctl", "daemon-reload")
    said = "systemd did not delegate the control group of wsgi-supervisor.service"

    def journal() -> str:
        return c.run("journalctl", "-u", "wsgi-supervisor", "--no-pager").stdout

    c.run("systemctl", "start", "wsgi-supervisor")
    shown = c.run(CTL, "--runtime-dir", RUN, "status")
    assert shown.stderr == "" and "conductor" in shown.stdout
    assert "not delegated" not in c.run("systemctl", "show", "-p", "StatusText", "wsgi-supervisor").stdout
    c.run("systemctl", "stop", "wsgi-supervisor")
    assert "delegate" not in journal().lower()

    c.run("sed", "-i", "/^Delegate=/d", "/etc/systemd/system/wsgi-supervisor.service")
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "start", "wsgi-supervisor")
    assert journal().count(said) == 1
    assert "add Delegate=yes to the [Service] section of wsgi-supervisor.service" in journal()
    shown = c.run(CTL, "--runtime-dir", RUN, "status", "--json")
    assert said in shown.stderr and json.loads(shown.stdout)[0]["state"] == "running"
    status_text = c.run("systemctl", "show", "-p", "StatusText", "wsgi-supervisor").stdout
    assert "1 running; control group not delegated: add Delegate=yes" in status_text
    pid = status(c)["conductor"]["pid"]
    assert (
        c.run("cat", f"/proc/{pid}/cgroup")
        .stdout.rstrip()
        .endswith("/system.slice/wsgi-supervisor.service/wsgi-supervisor/conductor@process")
    )
    c.run("systemctl", "stop", "wsgi-supervisor")
