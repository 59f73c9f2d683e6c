"""Whom a service runs as: a user gone since the check is one clear reason; a user and group, one set of groups."""

import grp
import pwd
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


def test_a_user_with_a_group_gets_the_same_groups_under_either_server_and_as_a_worker():
    """systemd's User= with Group=: the group is the primary one, and the supplementary groups are the
    user's memberships with it (initgroups), not the user's own primary group: the same for a uWSGI
    master, a gunicorn arbiter and a worker (the worker used to keep the user's own primary group)."""
    from attacker import local_user

    from supervisor.gunicorn.spawn import credentials
    from supervisor.manifest.models import ApiService, WorkerService
    from supervisor.uwsgi.core import _account
    from supervisor.workers.driver import ProcessDriver

    with local_user("wsgi-acct-user") as user, local_user("wsgi-acct-svc") as service_group:
        subprocess.run(["usermod", "-aG", "adm", user], check=True)
        api = ApiService(kind="api", app="x:app", user=user, group=service_group)
        worker = WorkerService(kind="worker", command=["true"], user=user, group=service_group)
        uid = pwd.getpwnam(user).pw_uid
        own, wanted = pwd.getpwnam(user).pw_gid, grp.getgrnam(service_group).gr_gid
        adm = grp.getgrnam("adm").gr_gid
        by_uwsgi = _account(api)
        by_gunicorn = credentials(api)
        by_worker = ProcessDriver._credentials(worker)
        assert (by_uwsgi["uid"], by_uwsgi["gid"]) == (uid, wanted)
        for creds in (by_gunicorn, by_worker):
            assert (creds["user"], creds["group"]) == (uid, wanted)
            assert sorted(creds["extra_groups"]) == sorted(int(g) for g in by_uwsgi["groups"])
            assert adm in creds["extra_groups"] and wanted in creds["extra_groups"]
            assert own not in creds["extra_groups"]
