"""`wsgictl stack NAME`: every worker's Python stack (py-spy, run by the daemon), labelled with what it serves."""

import contextlib
import os
import re
import sys
import threading

import pytest

import supervisor.gunicorn.board as board
from support import APPS, Daemon, uwsgi_request, write_manifest

STUCK = APPS / "stuck.py"
MANIFEST = f"""
[services.api]
kind = "api"
app = "{STUCK}"
processes = 2
stop_timeout = 1

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{STUCK}"]
ready_after = 0.2
stop_timeout = 1

[services.idle]
kind = "api"
app = "{STUCK}"
enabled = false
"""


@pytest.fixture
def stuck(tmp_path, server):
    d = Daemon(tmp_path, extra_args=["--sample-interval", "0.5"])
    write_manifest(d.conf_dir, MANIFEST, server=server)
    try:
        d.start()
        d.ctl("start", "api", "conductor")
        yield d
    finally:
        d.stop()


def blocks(output: str) -> dict[str, str]:
    """Each process's label line -> the stack printed under it."""
    parts = re.split(r"^--- (.*)$", output, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def hang(d: Daemon) -> threading.Thread:
    def request():
        with contextlib.suppress(OSError):  # the test stops the service under it at the end
            uwsgi_request(d.socket("api"), "/stuck?30", timeout=60)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    d.wait_for(lambda s: any(w["status"] == "busy" for w in s["api"].get("workers", ())), what="a busy worker")
    return thread


def test_stack_shows_the_busy_worker_stuck_in_its_function_with_the_request(stuck):
    thread = hang(stuck)
    workers = {w["pid"] for w in stuck.status("api")["api"]["workers"]}
    result = stuck.ctl("stack", "api")
    found = blocks(result.stdout)
    assert len(found) == 2, result.stdout
    busy_labels = [label for label in found if "busy: GET /stuck?30" in label]
    assert len(busy_labels) == 1, result.stdout
    busy = busy_labels[0]
    pid = int(re.search(r"pid (\d+)", busy).group(1))
    assert pid in workers
    assert "stuck_in_here" in found[busy] and f"Process {pid}" in found[busy]
    (other,) = [label for label in found if label != busy]
    assert other.endswith(": idle") and "stuck_in_here" not in found[other]
    stuck.ctl("stop", "api")
    thread.join(30)


@pytest.mark.parametrize("server", ["uwsgi"])  # no API involved
def test_stack_of_a_worker_service_and_the_errors(stuck):
    main = stuck.status("conductor")["conductor"]["pid"]
    result = stuck.ctl("stack", "conductor")
    (label,) = blocks(result.stdout)
    assert label.startswith(f"conductor main process (pid {main})")
    assert "stuck_in_here" in result.stdout
    unknown = stuck.ctl("stack", "nope", check=False)
    assert unknown.returncode == 4 and "unknown service: nope" in unknown.stderr
    stopped = stuck.ctl("stack", "idle", check=False)
    assert stopped.returncode == 3 and "idle is not running (it is stopped)" in stopped.stderr


SLEEPER = """
[services.sleeper]
kind = "worker"
command = ["/bin/sleep", "300"]
user = "nobody"
ready_after = 0.2
"""


def test_a_daemon_that_may_not_attach_says_what_to_do(tmp_path):
    """Without CAP_SYS_PTRACE, root may not read the memory of another user's process: py-spy is refused."""
    d = Daemon(tmp_path, wrapper=["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"])
    write_manifest(d.conf_dir, SLEEPER)
    try:
        d.start()
        d.ctl("start", "sleeper")
        refused = d.ctl("stack", "sleeper", check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "permission denied" in refused.stderr and "CAP_SYS_PTRACE" in refused.stderr
        assert "ptrace_scope" in refused.stderr
    finally:
        d.stop()


def test_a_scoreboard_keeps_each_workers_request_and_older_boards_still_read(tmp_path):
    fd = board.make_file(tmp_path / "new.board", 2)
    live = board.map_fd(fd, 2)
    os.close(fd)
    board.start(live, 2, 1234)
    board.set_request(live, 1, "GET /stuck?30")
    data = bytes(live)
    assert board.read_requests(data, 2) == ["", "GET /stuck?30"]
    board.set_request(live, 1, "")
    assert board.read_requests(bytes(live), 2) == ["", ""]
    old = data[: board.size_for(2)]  # an arbiter started before the field existed
    assert board.read(old)[0] == 1234 and board.read_requests(old, 2) == ["", ""]
    board.unmap(live)
