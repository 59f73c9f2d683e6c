"""A user that goes away after the manifest was checked: one clear reason, for APIs and workers alike."""

import subprocess
import sys

import pytest

from support import APPS, write_manifest

USER = "wsgi-test-gone"


@pytest.fixture
def passing_user():
    """A real system user, removed by the test once the daemon has checked the manifest."""
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    yield USER
    subprocess.run(["userdel", USER], check=False, capture_output=True)


def test_a_user_gone_since_the_check_fails_the_start_with_its_reason(daemon, passing_user, server):
    write_manifest(
        daemon.conf_dir,
        f"""
[services.api]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1
user = "{passing_user}"
enabled = false

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{APPS / "worker.py"}"]
user = "{passing_user}"
enabled = false
""",
        server=server,
    )
    daemon.start()
    subprocess.run(["userdel", passing_user], check=True)
    for name in ("api", "conductor"):
        started = daemon.ctl("start", name, "--timeout", "20", check=False)
        assert started.returncode == 1
        assert f"cannot start: the user '{passing_user}' does not exist on this host" in started.stderr
        s = daemon.status()[name]
        assert s["state"] == "failed" and s["pid"] is None
        assert s["reason"] == f"cannot start: the user '{passing_user}' does not exist on this host"
    assert "Traceback" not in daemon.output() and "KeyError" not in daemon.output()
