"""Issue 26, gunicorn: what a service's own user, and the code of a compromised API, can get of root.

Each test plays the attacker: a real system user that owns its service's directory, and a worker of
tests/apps/compromised.py that runs what a request sends. The service runs on Debian's Python (a venv
any user may run).
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from attacker import (
    COMPROMISED,
    PLANTED,
    SHADOWED,
    local_user,
    os_user_ids,
    owned_dir,
    owner_of,
    run_in_api,
    tree,
    user_venv,
)

import supervisor.gunicorn.board as board
from supervisor.gunicorn.arbiters import heads, read_board
from support import Daemon, uwsgi_request, write_manifest

USER = "wsgi-h1-gu"
EXTRA_GROUP = "wsgi-h1-gu-extra"


@pytest.fixture
def service_user():
    with local_user(USER) as name:
        subprocess.run(["groupadd", "--system", EXTRA_GROUP], capture_output=True, check=False)
        subprocess.run(["usermod", "-aG", EXTRA_GROUP, name], check=True)
        try:
            yield name
        finally:
            subprocess.run(["groupdel", EXTRA_GROUP], capture_output=True, check=False)


@pytest.fixture
def home(service_user):
    """The service's own directory (its `chdir`, as /var/lib/<service> is): owned by the service's user."""
    with owned_dir(service_user, "wsgi-h1-home-") as path:
        yield path


def manifest(user: str, chdir: Path | None = None, venv: Path | None = None, processes: int = 1) -> str:
    lines = [
        "[services.api]",
        'kind = "api"',
        'server = "gunicorn"',
        f'app = "{COMPROMISED}"',
        f"processes = {processes}",
        f'user = "{user}"',
        f'venv = "{venv or user_venv()}"',
        "stop_timeout = 2",
    ]
    if chdir is not None:
        lines.append(f'chdir = "{chdir}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def api(tmp_path, service_user, home):
    d = Daemon(tmp_path, extra_args=["--sample-interval", "0.3"])
    write_manifest(d.conf_dir, manifest(service_user, chdir=home))
    try:
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        yield d
    finally:
        d.stop()


def test_modules_the_user_plants_in_its_chdir_never_run_as_root(api, home, service_user):
    sock = api.socket("api")
    planted = run_in_api(
        sock,
        f"""
        for name in {SHADOWED!r}:
            with open(os.path.join(os.getcwd(), name + ".py"), "w") as f:
                f.write({PLANTED!r})
        result = os.getcwd()
        """,
    )
    assert planted["error"] is None, planted["error"]
    assert planted["result"] == str(home)
    first = api.status("api")["api"]["pid"]
    # the worker exits with status 3: gunicorn halts ("Worker failed to boot"), and the daemon starts it again
    run_in_api(sock, "import threading\nthreading.Timer(0.3, os._exit, (3,)).start()")
    api.wait_for(
        lambda s: s["api"]["state"] == "running" and s["api"]["pid"] not in (None, first),
        timeout=60,
        what="a new arbiter",
    )
    assert run_in_api(sock, "import pickle, platform, socketserver\nresult = 1")["result"] == 1
    marks = sorted(p.name for p in home.glob("ran-*"))
    uid, _gid = os_user_ids(service_user)
    as_root = [m for m in marks if m.endswith("-uid0")]
    assert not as_root, f"the service's own modules ran as root: {as_root}"
    assert marks and all(m.endswith(f"-uid{uid}") for m in marks), marks


def test_every_process_of_the_tree_runs_as_the_user_with_its_groups(api, service_user, home):
    uid, gid = os_user_ids(service_user)
    groups = sorted(set(os.getgrouplist(service_user, gid)))
    assert grp.getgrnam(EXTRA_GROUP).gr_gid in groups
    pids = tree(api)
    assert len(pids) >= 2
    for pid in pids:
        assert owner_of(pid) == (uid, gid, groups), f"pid {pid} ({psutil.Process(pid).cmdline()})"
        assert psutil.Process(pid).cwd() == str(home)


def test_a_compromised_worker_gets_nothing_of_roots_group(api, service_user, tmp_path):
    secret_dir = Path(tempfile.mkdtemp(prefix="wsgi-h1-root-", dir="/tmp"))
    try:
        os.chmod(secret_dir, 0o770)
        secret = secret_dir / "secret"
        secret.write_text("root's\n")
        os.chmod(secret, 0o640)
        os.chmod(secret_dir, 0o771)  # the user may reach the file by its name, as root's group may read it
        answer = run_in_api(
            api.socket("api"),
            f"""
            result = {{}}
            try:
                result["read"] = open({str(secret)!r}).read()
            except OSError as exc:
                result["read"] = type(exc).__name__
            try:
                open({str(secret_dir / "planted")!r}, "w").close()
                result["write"] = "written"
            except OSError as exc:
                result["write"] = type(exc).__name__
            """,
        )
        uid, gid = os_user_ids(service_user)
        assert (answer["uid"], answer["gid"]) == (uid, gid)
        assert 0 not in answer["groups"]
        assert answer["result"] == {"read": "PermissionError", "write": "PermissionError"}
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)


# the worker looks for a handle on its scoreboard, anywhere its user can reach one, and grows the file
GROW = """
import glob
tried = {}
for link in glob.glob("/proc/self/fd/*"):  # a descriptor it holds: grown in place
    try:
        if os.readlink(link).endswith(".board"):
            os.ftruncate(int(link.rsplit("/", 1)[1]), 64 << 30)
            tried[link] = "grown"
    except OSError as exc:
        tried[link] = type(exc).__name__
links = glob.glob("/proc/%d/fd/*" % os.getppid())
paths = [line.split()[-1] for line in open("/proc/self/maps") if line.rstrip().endswith(".board")]
for where in links + paths:  # one it may open again: its arbiter's, or the file's path
    try:
        if where.startswith("/proc/") and not os.readlink(where).endswith(".board"):
            continue
        fd = os.open(where, os.O_RDWR)
    except OSError as exc:
        tried[where] = type(exc).__name__
        continue
    try:
        os.ftruncate(fd, 64 << 30)
        tried[where] = "grown"
    except OSError as exc:
        tried[where] = type(exc).__name__
    finally:
        os.close(fd)
result = tried
"""


def daemon_rss(d: Daemon) -> int:
    return psutil.Process(d.proc.pid).memory_info().rss


def test_a_worker_cannot_make_the_daemon_read_a_huge_board(api):
    sock = api.socket("api")
    answer = run_in_api(sock, GROW)
    assert answer["error"] is None, answer["error"]
    grown = [where for where, what in answer["result"].items() if what == "grown"]
    before = api.status("api")["api"]["requests"]
    for _ in range(5):
        assert uwsgi_request(sock, "/")[0] == 200
    # figures that go on (a daemon stuck reading the file whole, or out of memory, froze them), a small daemon
    api.wait_for(lambda s: s["api"]["requests"] >= before + 5, timeout=20, what="the requests counted")
    assert daemon_rss(api) < 300 * 1024 * 1024
    assert not grown, f"the worker grew the board through {grown}: {answer['result']}"


def test_the_daemon_reads_only_what_the_slots_need_of_a_grown_board(tmp_path):
    """Whatever size the file has (a sparse 64 GiB one here), a read takes the slots' bytes, at once."""
    path = tmp_path / "api.board"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, board.board_size(3))
        live = board.map_fd(fd, 3)
    finally:
        os.close(fd)
    board.start(live, 3, 4321)
    board.claim(live, 0, 4322, time.time())
    board.set_state(live, 0, board.READY)
    board.count(live, 0, 7, 1, 0, 100, 700)
    with open(path, "r+b") as f:
        f.truncate(64 << 30)
    started = time.monotonic()
    stats = read_board(path)
    assert time.monotonic() - started < 0.5
    assert stats is not None and stats.pid == 4321
    assert [(w.pid, w.requests, w.exceptions) for w in stats.workers] == [(4322, 7, 1)]
    board.unmap(live)


FORGE = """
import ctypes, struct
(line,) = [line for line in open("/proc/self/maps") if line.rstrip().endswith(".board")]
start = int(line.split("-")[0], 16)
slots = struct.unpack_from("=I", ctypes.string_at(start + 16, 4))[0]
for index, pid in ((slots - 1, 1), (slots - 2, {daemon})):
    slot = struct.pack("=qIIQQQQQd", pid, 2, 1, 0, 0, 0, 0, 0, 0.0)
    ctypes.memmove(start + 64 + 64 * index, slot, len(slot))
    request = b"GET /forged".ljust(256, b"\\0")
    ctypes.memmove(start + 64 + 64 * slots + 256 * index, request, 256)
result = slots
"""


def test_forged_worker_pids_in_the_board_are_never_trusted(api):
    forged = {1, api.proc.pid}
    answer = run_in_api(api.socket("api"), FORGE.format(daemon=api.proc.pid))
    assert answer["error"] is None, answer["error"]
    deadline = time.monotonic() + 30
    while "forged, ignored" not in api.output() and time.monotonic() < deadline:
        time.sleep(0.1)  # a sample has read the board
    status = api.status("api")["api"]
    assert not forged & {w["pid"] for w in status["workers"]}, status["workers"]
    assert len([w for w in status["workers"] if w["pid"]]) == 1
    stack = api.ctl("stack", "api", check=False)
    reached = [pid for pid in forged if f"(pid {pid})" in stack.stdout or f"pid {pid}:" in stack.stderr]
    assert not reached, stack.stdout + stack.stderr
    assert stack.returncode == 0 and "SyncWorker.run" in stack.stdout, stack.stdout + stack.stderr  # the real one
    for pid in forged:
        assert api.output().count(f"names pid {pid} as a worker") == 1, api.output()  # said once


def test_a_venv_the_user_cannot_run_is_a_clear_reason(tmp_path, service_user):
    """The suite's own venv links to an interpreter under /root (0700): the service's user may not run it."""
    d = Daemon(tmp_path)
    venv = Path(sys.executable).parent.parent
    write_manifest(d.conf_dir, manifest(service_user, venv=venv))
    try:
        d.start()
        started = d.ctl("start", "api", "--timeout", "20", check=False)
        assert started.returncode != 0, started.stdout
        reason = d.status("api")["api"]["reason"] or ""
        assert f"is not executable by user {service_user}" in reason, reason
        assert "venv's python" in reason, reason
    finally:
        d.stop()


def test_a_user_service_without_chdir_starts_in_the_root_dir(tmp_path, service_user):
    d = Daemon(tmp_path)
    write_manifest(d.conf_dir, manifest(service_user))
    try:
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        answer = run_in_api(d.socket("api"), "result = os.getcwd()")
        assert answer["result"] == "/"
        with contextlib.suppress(psutil.Error):
            assert psutil.Process(d.status("api")["api"]["pid"]).cwd() == "/"
    finally:
        d.stop()


def test_a_user_service_keeps_everything_across_adoption_reload_restart_and_stop(tmp_path, service_user, home):
    """Run as its user, the tree still serves the held socket, logs, counts, and is adopted, reloaded, stopped."""
    d = Daemon(tmp_path, extra_args=["--sample-interval", "0.3"])
    write_manifest(d.conf_dir, manifest(service_user, chdir=home, processes=2))
    uid, _gid = os_user_ids(service_user)
    try:
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        sock = d.socket("api")
        before = d.status("api")["api"]
        assert uwsgi_request(sock, "/before")[0] == 200
        d.wait_for(lambda s: "GET /before" in d.ctl("logs", "api").stdout, what="the request line")
        # the daemon is killed: the arbiter goes on, its FIFO keeps the lines, the next daemon adopts it
        d.remember_processes()
        d.proc.kill()
        d.proc.wait()
        assert uwsgi_request(sock, "/while-away")[0] == 200
        d.start()
        d.ctl("start", "api", "--timeout", "60")
        after = d.wait_for(lambda s: s["api"]["state"] == "running", what="api adopted")["api"]
        assert after["pid"] == before["pid"]
        d.wait_for(lambda s: "GET /while-away" in d.ctl("logs", "api").stdout, what="the line kept in the FIFO")
        for _ in range(3):
            assert uwsgi_request(sock, "/after")[0] == 200
        d.wait_for(lambda s: s["api"]["requests"] >= 5, what="the requests counted")
        d.wait_for(lambda s: len([w for w in s["api"]["workers"] if w["pid"]]) == 2, what="both workers listed")
        # a reload: a second arbiter, as the user, on the same socket
        d.ctl("reload", "api", "--timeout", "60")
        reloaded = d.wait_for(lambda s: s["api"]["state"] == "running", what="api reloaded")["api"]
        assert reloaded["pid"] != before["pid"]
        assert owner_of(reloaded["pid"])[0] == uid
        assert uwsgi_request(sock, "/reloaded")[0] == 200
        d.ctl("restart", "api", "--timeout", "60")
        restarted = d.status("api")["api"]
        assert restarted["state"] == "running" and restarted["pid"] not in (before["pid"], reloaded["pid"])
        assert all(owner_of(pid)[0] == uid for pid in tree(d))
        d.ctl("stop", "api", "--timeout", "30")
        assert d.status("api")["api"]["state"] == "stopped"
    finally:
        d.stop()


def test_a_board_that_names_a_worker_does_not_make_it_the_arbiter(tmp_path):
    """With setproctitle, a next daemon finds an arbiter by its board: a worker writing its own pid there
    (it maps the board too) is not taken for one."""
    path = tmp_path / "api.board"
    fd = board.make_file(path, 1)
    live = board.map_fd(fd, 1)
    os.close(fd)
    board.start(live, 1, os.getpid())
    read_end, write_end = os.pipe()
    worker = os.fork()
    if worker == 0:  # the "worker": it inherits the map, and waits
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    try:
        os.close(read_end)
        assert heads(os.getpid(), path)
        assert not heads(worker, path)
    finally:
        os.close(write_end)
        os.waitpid(worker, 0)
        board.unmap(live)


# the worker looks for a read end of its instance's log FIFO: its own descriptors, its arbiter's (by
# /proc, and by pidfd_getfd), and the FIFO's path
STEAL_FIFO = """
import ctypes, glob, stat
libc = ctypes.CDLL(None, use_errno=True)
got = {}
def fifo(fd):
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode) and os.readlink("/proc/self/fd/%d" % fd).endswith(".log")
    except OSError:
        return False
for link in glob.glob("/proc/self/fd/*"):
    fd = int(link.rsplit("/", 1)[1])
    if fifo(fd):
        got["own fd %d" % fd] = True
try:
    got["arbiter's /proc fds"] = len(os.listdir("/proc/%d/fd" % os.getppid()))
except OSError as exc:
    got["arbiter's /proc fds"] = type(exc).__name__
pidfd = os.pidfd_open(os.getppid())
for target in range(64):
    fd = libc.syscall(438, pidfd, target, 0)
    if fd >= 0:
        if fifo(fd):
            got["arbiter's fd %d" % target] = True
        os.close(fd)
    elif ctypes.get_errno() == 1:
        got["pidfd_getfd"] = "EPERM"
os.close(pidfd)
result = got
"""


def test_a_worker_gets_no_end_of_the_log_fifo(api):
    answer = run_in_api(api.socket("api"), STEAL_FIFO)
    assert answer["error"] is None, answer["error"]
    stolen = [where for where, what in answer["result"].items() if what is True]
    assert not stolen, answer["result"]
    assert answer["result"]["arbiter's /proc fds"] == "PermissionError", answer["result"]
