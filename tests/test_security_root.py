"""Issue 23, uWSGI: a service with `user` runs as that user, and starts without `chdir`.

The attacker is the service's own user, running code inside a compromised API (tests/apps/compromised.py)
on Debian's Python (a venv any user may run). Production APIs each run as their own user, most of them
with no `chdir`: systemd starts a service in `/` unless told otherwise, and so must the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from attacker import COMPROMISED, local_user, os_user_ids, run_in_api, user_venv

from supervisor.observe.procs import descendants
from support import Daemon, write_manifest

USER = "wsgi-h9-root-uw"


def manifest(user: str, chdir: Path | None = None, processes: int = 2) -> str:
    lines = [
        "[services.api]",
        'kind = "api"',
        'server = "uwsgi"',
        f'app = "{COMPROMISED}"',
        f"processes = {processes}",
        f'user = "{user}"',
        f'venv = "{user_venv()}"',
        "stop_timeout = 2",
    ]
    if chdir is not None:
        lines.append(f'chdir = "{chdir}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def service_user():
    with local_user(USER) as name:
        yield name


@pytest.fixture
def api(tmp_path, service_user):
    """A uWSGI API with `user` and no `chdir`."""
    d = Daemon(tmp_path, extra_args=["--sample-interval", "0.3"])
    write_manifest(d.conf_dir, manifest(service_user))
    try:
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        yield d
    finally:
        d.stop()


def tree(d: Daemon) -> list[int]:
    master = d.status("api")["api"]["pid"]
    return [master, *descendants(master)]


def test_a_service_with_user_and_no_chdir_serves_from_the_root_dir(api, service_user):
    answer = run_in_api(api.socket("api"), "result = os.getcwd()")
    uid, gid = os_user_ids(service_user)
    assert answer["error"] is None, answer["error"]
    assert (answer["uid"], answer["gid"]) == (uid, gid)
    assert answer["result"] == "/"
    for pid in tree(api):
        assert psutil.Process(pid).cwd() == "/", f"pid {pid} ({psutil.Process(pid).cmdline()})"
    assert api.status("api")["api"]["state"] == "running"


def test_each_worker_can_read_its_own_working_directory(api):
    """What the placement API's workers did at start (os.getcwd() through a relative import): it worked."""
    answer = run_in_api(api.socket("api"), "result = sorted(os.listdir('.'))[:3]")
    assert answer["error"] is None, answer["error"]
    assert answer["result"] == sorted(os.listdir("/"))[:3]


def cwds(d: Daemon) -> dict[int, str]:
    return {pid: psutil.Process(pid).cwd() for pid in tree(d)}


def test_reload_restart_and_adoption_keep_the_service_in_the_root_dir(api):
    sock = api.socket("api")
    before = api.status("api")["api"]
    api.ctl("reload", "api")
    after = api.wait_for(
        lambda s: s["api"]["state"] == "running" and s["api"]["pid"] != before["pid"], what="a new instance"
    )["api"]
    assert run_in_api(sock, "result = os.getcwd()")["result"] == "/"
    api.ctl("restart", "api")
    after = api.wait_for(
        lambda s: s["api"]["state"] == "running" and s["api"]["pid"] != after["pid"], what="a new master"
    )["api"]
    assert set(cwds(api).values()) == {"/"}
    # the daemon dies; the next one adopts the running vassal, and still stops it
    api.remember_processes()
    api.proc.kill()
    api.proc.wait()
    api.log.close()
    api.start()
    adopted = api.wait_state("api", "running", timeout=60)
    assert adopted["pid"] == after["pid"]
    assert run_in_api(sock, "result = os.getcwd()")["result"] == "/"
    api.ctl("stop", "api")
    assert not psutil.pid_exists(after["pid"]) or psutil.Process(after["pid"]).status() == psutil.STATUS_ZOMBIE
