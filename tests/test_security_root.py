"""Issue 23, uWSGI: a service with `user` runs as that user, and starts without `chdir`.

The attacker is the service's own user, running code inside a compromised API (tests/apps/compromised.py)
on Debian's Python (a venv any user may run). Production APIs each run as their own user, most of them
with no `chdir`: systemd starts a service in `/` unless told otherwise, and so must the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from attacker import (
    COMPROMISED,
    PLANTED,
    SHADOWED,
    SYSTEM_PYTHON,
    local_user,
    os_user_ids,
    owned_dir,
    owner_of,
    run_in_api,
    tree,
    user_venv,
)

from supervisor.observe.procs import descendants
from support import ROOT, SERVER_PACKAGES, Daemon, uwsgi_request, write_manifest

USER = "wsgi-h9-root-uw"


def manifest(user: str, chdir: Path | None = None, processes: int = 2, pythonpath: Path | None = None) -> str:
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
    if pythonpath is not None:
        lines.append(f'environment = {{ PYTHONPATH = "{pythonpath}" }}')
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


def test_no_process_of_the_service_runs_as_root_master_included(api, service_user):
    uid, gid = os_user_ids(service_user)
    groups = sorted(set(os.getgrouplist(service_user, gid)))
    pids = tree(api)
    assert len(pids) >= 3  # the master and its two workers
    owners = {pid: owner_of(pid) for pid in pids}
    assert all(owner == (uid, gid, groups) for owner in owners.values()), owners
    # what the daemon needs of the master still works: its stats (the requests counted), its logger (the
    # worker's lines, through the master's log pipe), its FIFO (a graceful stop)
    before = api.status("api")["api"]["requests"]
    assert run_in_api(api.socket("api"), "print('wsgi-h9 line from a worker', flush=True)")["error"] is None
    api.wait_for(lambda s: s["api"]["requests"] > before, timeout=20, what="the request counted")
    deadline = time.monotonic() + 20
    while "wsgi-h9 line from a worker" not in api.ctl("logs", "api", "-n", "200").stdout:
        assert time.monotonic() < deadline, api.ctl("logs", "-v", "api", "-n", "200").stdout
        time.sleep(0.1)
    master = pids[0]
    api.ctl("stop", "api")
    assert api.status("api")["api"]["state"] == "stopped"
    assert not psutil.pid_exists(master) or psutil.Process(master).status() == psutil.STATUS_ZOMBIE
    assert "master FIFO" not in api.output()  # the daemon wrote its commands there (no warning)


@pytest.fixture
def home(service_user):
    """The service's own directory (its `chdir`, as /var/lib/<service> is): owned by the service's user."""
    with owned_dir(service_user, "wsgi-h9-home-") as path:
        yield path


# the module every Python start imports from its path: the service's PYTHONPATH (its own dir, as a
# deployment that keeps its code there sets it) comes first
SITE = (
    "import os\nopen(os.path.join(os.path.dirname(__file__), 'ran-sitecustomize-uid%d' % os.getuid()), 'w').close()\n"
)


def test_modules_the_user_plants_in_its_chdir_never_run_as_root(tmp_path, service_user, home):
    d = Daemon(tmp_path, extra_args=["--sample-interval", "0.3"])
    write_manifest(d.conf_dir, manifest(service_user, chdir=home, processes=1, pythonpath=home))
    try:
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        sock = d.socket("api")
        planted = run_in_api(
            sock,
            f"""
            for name in {SHADOWED!r}:
                with open(os.path.join(os.getcwd(), name + ".py"), "w") as f:
                    f.write({PLANTED!r})
            with open("sitecustomize.py", "w") as f:
                f.write({SITE!r})
            result = os.getcwd()
            """,
        )
        assert planted["error"] is None, planted["error"]
        assert planted["result"] == str(home)
        first = d.status("api")["api"]["pid"]
        d.ctl("restart", "api", "--timeout", "60")
        d.wait_for(lambda s: s["api"]["state"] == "running" and s["api"]["pid"] != first, what="a new master")
        assert run_in_api(sock, "import pickle, platform, socketserver\nresult = 1")["result"] == 1
        marks = sorted(p.name for p in home.glob("ran-*"))
        uid, _gid = os_user_ids(service_user)
        as_root = [m for m in marks if m.endswith("-uid0")]
        assert not as_root, f"the service's own modules ran as root: {as_root}"
        assert marks and all(m.endswith(f"-uid{uid}") for m in marks), marks
    finally:
        d.stop()


def placement_user_venv() -> Path:
    """openstack-placement with both servers on Debian's Python, which any user may run (made once, kept)."""
    venv = ROOT / ".cache" / "placement-user-venv"
    marker = venv / ".ready"
    wanted = " ".join(("openstack-placement", *SERVER_PACKAGES))
    if not marker.exists() or marker.read_text().strip() != wanted:
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *wanted.split()], check=True)
        marker.write_text(wanted)
    return venv


PLACEMENT_HEADERS = {"x-auth-token": "admin", "OpenStack-API-Version": "placement latest"}


def test_real_placement_runs_as_its_own_user_without_chdir(tmp_path, service_user, home):
    """As an operator runs it: its own user, no `chdir`. Its workers failed to start (PermissionError: '.')."""
    venv = placement_user_venv()
    (home / "placement.conf").write_text(
        f"[api]\nauth_strategy = noauth2\n[placement_database]\n"
        f"connection = sqlite:///{home}/placement.sqlite\nsync_on_startup = True\n"
    )
    d = Daemon(tmp_path)
    write_manifest(
        d.conf_dir,
        f"""
[services.placement]
kind = "api"
app = "placement.wsgi.api:application"
venv = "{venv}"
processes = 2
user = "{service_user}"
environment = {{ OS_PLACEMENT_CONFIG_DIR = "{home}" }}
""",
    )
    try:
        d.start()
        d.ctl("start", "placement", "--timeout", "90")
        status, _, body = uwsgi_request(d.socket("placement"), "/resource_providers", headers=PLACEMENT_HEADERS)
        assert status == 200, body
        assert json.loads(body) == {"resource_providers": []}
        uid, _gid = os_user_ids(service_user)
        master = d.status("placement")["placement"]["pid"]
        for pid in (master, *descendants(master)):
            assert owner_of(pid)[0] == uid
            assert psutil.Process(pid).cwd() == "/"
    finally:
        d.stop()


def test_the_masters_own_dir_gives_its_user_nothing_of_roots(api, service_user):
    """The master's dir (stats socket, master FIFO) is its user's now: what the user puts there in place
    of the FIFO never makes the daemon write into a file of root's, and the service still stops."""
    victim_dir = Path(tempfile.mkdtemp(prefix="wsgi-h9-victim-", dir="/tmp"))
    try:
        victim = victim_dir / "root-file"
        victim.write_text("root's\n")
        os.chmod(victim, 0o600)
        fifo = api.runtime_dir / "stats" / "api" / "master.fifo"
        answer = run_in_api(
            api.socket("api"),
            f"""
            os.unlink({str(fifo)!r})
            os.symlink({str(victim)!r}, {str(fifo)!r})
            result = sorted(os.listdir({str(fifo.parent)!r}))
            """,
        )
        assert answer["error"] is None, answer["error"]
        assert answer["result"] == ["master.fifo", "stats.sock"]
        # no other dir of the runtime dir is open to the user
        listing = run_in_api(api.socket("api"), f"result = os.listdir({str(api.runtime_dir / 'stats')!r})")
        assert "PermissionError" in (listing["error"] or "")
        master = api.status("api")["api"]["pid"]
        api.ctl("stop", "api")
        assert api.status("api")["api"]["state"] == "stopped"
        assert not psutil.pid_exists(master) or psutil.Process(master).status() == psutil.STATUS_ZOMBIE
        assert victim.read_text() == "root's\n"
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)
