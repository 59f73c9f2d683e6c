"""The daemon with real uWSGI vassals, driven by wsgictl, over real sockets."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from supervisor.observe.procs import alive
from support import APPS, Daemon, get_json, http_request, uwsgi_request, write_manifest, wsgictl_as

PROBE = APPS / "probe.py"


def two_apis(daemon, extra="", server=None):
    write_manifest(
        daemon.conf_dir,
        f"""
[services.alpha]
kind = "api"
app = "supervisor.demo.hello:application"
processes = 2
environment = {{ DEMO_NAME = "alpha" }}

[services.beta]
kind = "api"
app = "{PROBE}"
protocol = "http"
processes = 2
args = ["--config-file", "/etc/beta/beta.conf", "100%"]
{extra}

[services.beta.environment]
PROBE_SETTING = "from-the-manifest"
OS_BETA_CONFIG_DIR = "/etc/beta"
PYTHONWARNINGS = "ignore::UserWarning"
""",
        server=server,
    )


def test_apis_serve_on_their_sockets(daemon, server):
    two_apis(daemon, server=server)
    daemon.extra_args += ["--socket-group", "nogroup"]
    daemon.start()
    daemon.ctl("start", "alpha", "beta")  # already starting: waits until ready
    status = daemon.status()
    assert {s["state"] for s in status.values()} == {"running"}
    assert all(s["ready"] and s["pid"] for s in status.values())

    code, _, body = uwsgi_request(daemon.socket("alpha"), "/")
    assert code == 200 and body == b"hello from alpha\n"

    answer = get_json(daemon.socket("beta"), "/x?y=1", protocol="http")
    # environment is there at import time, and pyargv reaches sys.argv with '%' intact
    assert answer["env"] == {"PROBE_SETTING": "from-the-manifest", "OS_BETA_CONFIG_DIR": "/etc/beta"}
    assert answer["argv"][1:] == ["--config-file", "/etc/beta/beta.conf", "100%"]
    # PYTHON* variables reach the interpreter as it starts (the launcher execs a new one for them)
    assert answer["warnoptions"] == ["ignore::UserWarning"]
    assert answer["path_info"] == "/x" and answer["query"] == "y=1"

    for name in ("alpha", "beta"):
        mode = os.stat(daemon.socket(name)).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660, oct(mode)  # group-accessible, not world-writable
        assert os.stat(daemon.socket(name)).st_gid == 65534  # the front end's group (--socket-group)
    assert stat.S_IMODE(os.stat(daemon.runtime_dir / "control.sock").st_mode) == 0o660


def test_status_contract_and_exit_codes(daemon, server):
    two_apis(daemon, server=server)
    daemon.start()
    daemon.ctl("start", "alpha", "beta")
    result = daemon.ctl("status", "--json")
    services = json.loads(result.stdout)
    for s in services:
        for key in ("name", "kind", "state", "ready", "pid", "restarts", "socket"):
            assert key in s
        assert s["socket"] == str(daemon.socket(s["name"]))
        assert s["kind"] == "api"
    assert daemon.ctl("status", "alpha").returncode == 0
    table = daemon.ctl("status").stdout
    assert "NAME" in table and "alpha" in table and "running" in table

    unknown = daemon.ctl("status", "nope", check=False)
    assert unknown.returncode == 4 and "unknown service: nope" in unknown.stderr
    assert daemon.ctl("start", "nope", check=False).returncode == 4

    daemon.ctl("stop", "alpha")
    assert daemon.ctl("status", "alpha", check=False).returncode == 3
    assert daemon.ctl("status", check=False).returncode == 3


def test_unreachable_daemon_is_exit_1_with_a_message(tmp_path):
    import subprocess

    from support import WSGICTL

    result = subprocess.run([str(WSGICTL), "--runtime-dir", str(tmp_path), "status"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "is wsgi-supervisor running?" in result.stderr


def test_each_verb_touches_only_its_service(daemon, server):
    two_apis(daemon, server=server)
    daemon.start()
    daemon.ctl("start", "alpha", "beta")
    before = daemon.status()
    beta_pid = before["beta"]["pid"]
    beta_inode = os.stat(daemon.socket("beta")).st_ino

    # reload: a new vassal took over on the same socket, which never closed
    alpha_inode = os.stat(daemon.socket("alpha")).st_ino
    daemon.ctl("reload", "alpha")
    after = daemon.status()
    assert after["alpha"]["state"] == "running"
    assert after["alpha"]["pid"] != before["alpha"]["pid"]
    retired = time.monotonic() + 10  # the old vassal retires behind the new one, once it has paused
    while alive(before["alpha"]["pid"]) and time.monotonic() < retired:
        time.sleep(0.02)
    assert not alive(before["alpha"]["pid"])
    assert os.stat(daemon.socket("alpha")).st_ino == alpha_inode
    assert uwsgi_request(daemon.socket("alpha"))[0] == 200
    assert after["alpha"]["restarts"] == 0  # a reload is not a restart
    before = after

    # restart: a new master on the same socket
    daemon.ctl("restart", "alpha")
    after = daemon.status()
    assert after["alpha"]["state"] == "running"
    assert after["alpha"]["pid"] != before["alpha"]["pid"]
    assert os.stat(daemon.socket("alpha")).st_ino == alpha_inode
    assert uwsgi_request(daemon.socket("alpha"))[0] == 200

    # stop: socket gone, the master gone
    old = after["alpha"]["pid"]
    daemon.ctl("stop", "alpha")
    after = daemon.status()
    assert after["alpha"]["state"] == "stopped" and after["alpha"]["pid"] is None
    assert not daemon.socket("alpha").exists()
    assert not alive(old)

    # start again
    daemon.ctl("start", "alpha")
    after = daemon.status()
    assert after["alpha"]["state"] == "running"
    assert uwsgi_request(daemon.socket("alpha"))[0] == 200

    # beta never moved
    assert after["beta"]["pid"] == beta_pid
    assert os.stat(daemon.socket("beta")).st_ino == beta_inode
    assert after["beta"]["restarts"] == 0


def test_after_orders_readiness(daemon, server):
    # first is slow to be ready: uWSGI runs a hook once the app is loaded; gunicorn has no such hook
    # a manifest can set, so there the app takes a second to import
    if server == "uwsgi":
        slow = 'environment = { PROBE_DELAY = "1" }\nuwsgi = { "hook-post-app" = "exec:sleep 1" }'
    else:
        slow = 'environment = { PROBE_IMPORT_DELAY = "1" }'
    write_manifest(
        daemon.conf_dir,
        f"""
[services.first]
kind = "api"
app = "{PROBE}"
{slow}

[services.second]
kind = "api"
app = "{PROBE}"
after = ["first"]
""",
        server=server,
    )
    daemon.start()
    daemon.ctl("start", "second")
    status = daemon.status()
    assert status["first"]["state"] == status["second"]["state"] == "running"
    # second was not even asked for before first was ready
    assert status["second"]["since"] >= status["first"]["since"]


def test_killed_master_comes_back(daemon, server):
    two_apis(daemon, server=server)
    daemon.start()
    daemon.ctl("start", "alpha")
    pid = daemon.status()["alpha"]["pid"]
    os.kill(pid, signal.SIGKILL)
    daemon.wait_for(
        lambda s: s["alpha"]["state"] == "running" and s["alpha"]["pid"] not in (None, pid), what="alpha back"
    )
    assert daemon.status()["alpha"]["restarts"] >= 1
    assert uwsgi_request(daemon.socket("alpha"))[0] == 200


def test_app_that_fails_to_import_backs_off_then_fails_then_starts(daemon, tmp_path, server):
    flag = tmp_path / "database-down"
    flag.write_text("")
    write_manifest(
        daemon.conf_dir,
        f"""
[services.broken]
kind = "api"
app = "{PROBE}"
processes = 1
start_limit = 5
environment = {{ PROBE_FAIL_IF_EXISTS = "{flag}" }}
""",
        server=server,
    )
    daemon.start()
    s = daemon.wait_state("broken", "backoff")
    assert "the app failed to load" in s["reason"]
    assert s["next_retry"] is not None and s["pid"] is None
    detail = daemon.ctl("status", "broken", check=False).stdout
    assert "next try in" in detail
    assert "refuses to import while" in detail  # the last lines show the traceback
    s = daemon.wait_state("broken", "failed", timeout=60)
    assert "gave up after 5 failed starts (start_limit)" in s["reason"]
    assert f"RuntimeError: probe app refuses to import while {flag} exists" in s["reason"]
    assert not daemon.socket("broken").exists()
    assert daemon.ctl("status", "broken", check=False).returncode == 3

    time.sleep(1.5)
    assert daemon.status()["broken"]["state"] == "failed"  # it stays down: no retry loop, no CPU spin

    flag.unlink()  # the operator fixes the cause
    daemon.ctl("start", "broken")
    assert daemon.status()["broken"]["state"] == "running"
    assert uwsgi_request(daemon.socket("broken"))[0] == 200


def test_an_api_that_needs_what_comes_later_comes_up_by_itself(daemon, tmp_path, server):
    """After a reboot the database may come up minutes after the APIs: no limit unless asked for."""
    needed = tmp_path / "database-up"
    write_manifest(
        daemon.conf_dir,
        f"""
[services.late]
kind = "api"
app = "{PROBE}"
processes = 1
enabled = false
backoff_max = 2
environment = {{ PROBE_NEEDS_FILE = "{needed}" }}
""",
        server=server,
    )
    daemon.start()
    started = daemon.ctl("start", "late", "--timeout", "3", check=False)
    assert started.returncode == 1
    assert "after 3s (" in started.stderr and "failed attempt" in started.stderr
    assert "the daemon keeps retrying" in started.stderr
    assert f"cannot import without {needed}" in started.stderr
    # past the five tries an earlier version stopped at, and still trying
    s = daemon.wait_for(lambda st: st["late"]["failures"] > 6, timeout=90, what="more than six failed starts")["late"]
    assert s["state"] in ("backoff", "starting")
    if s["state"] == "backoff":
        assert f"attempt {s['failures']} failed, next in" in s["reason"]
        assert 0 < s["next_retry"] - time.time() <= 2  # capped at backoff_max
    needed.write_text("")
    s = daemon.wait_state("late", "running", timeout=30)
    assert s["reason"] is None
    assert uwsgi_request(daemon.socket("late"))[0] == 200


def test_a_bad_uwsgi_option_is_not_retried(daemon):
    write_manifest(
        daemon.conf_dir,
        f"""
[services.typo]
kind = "api"
app = "{PROBE}"
processes = 1
uwsgi = {{ "no-such-option-here" = 1 }}
""",
    )
    daemon.start()
    s = daemon.wait_state("typo", "failed")
    assert "unknown uWSGI option 'no-such-option-here'" in s["reason"]
    assert "fix the manifest" in s["reason"]
    assert s["failures"] == 1


def test_stop_during_backoff_and_unknown_socket_in_use(daemon, server):
    import socket as sk

    two_apis(daemon, server=server)
    daemon.runtime_dir.mkdir(exist_ok=True)
    squatter = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    squatter.bind(str(daemon.socket("alpha")))
    squatter.listen()
    try:
        daemon.start()
        s = daemon.wait_state("alpha", "failed")
        assert "already in use by another process" in s["reason"]
        assert daemon.status()["beta"]["state"] in ("starting", "running")
    finally:
        squatter.close()
    daemon.ctl("start", "alpha")
    assert uwsgi_request(daemon.socket("alpha"))[0] == 200


def test_clean_shutdown_leaves_nothing(daemon, server):
    two_apis(daemon, server=server)
    daemon.start()
    daemon.ctl("start", "alpha", "beta")
    daemon.ctl("reload", "alpha")  # a second instance, and the first one retired
    daemon.ctl("stop", "beta")
    rd = daemon.runtime_dir
    leftover = [p.relative_to(rd).as_posix() for p in rd.rglob("*") if p.is_socket() or p.is_fifo()]
    # what only a vassal that is gone used is gone too
    in_use = sorted(p for p in leftover if "alpha" in p or "beta" in p)
    # a vassal has a master FIFO and a stats socket in a dir of its own, and a log FIFO; an arbiter its log FIFO
    vassal = ["alpha.sock", "fifo/alpha.b.log", "stats/alpha.b/master.fifo", "stats/alpha.b/stats.sock"]
    assert in_use == (vassal if server == "uwsgi" else ["alpha.sock", "gunicorn/alpha.b.log"])
    assert [p.name for p in (rd / "stats").iterdir()] == (["alpha.b"] if server == "uwsgi" else [])
    try:
        took = daemon.stop(remove=False)
        assert took < 10
        leftover = [str(p) for p in daemon.runtime_dir.rglob("*") if p.is_socket() or p.is_fifo()]
        # the emperor's output FIFO stays: it is made once and reopened by the next daemon
        assert leftover == [str(daemon.runtime_dir / "daemon" / "emperor.log")]
    finally:
        shutil.rmtree(daemon.runtime_dir, ignore_errors=True)


def test_http_service_takes_a_body(daemon, server):
    two_apis(daemon, server=server)
    daemon.start()
    daemon.ctl("start", "beta")
    status, _, body = http_request(daemon.socket("beta"), "/upload", method="PUT", body=b"x" * 100000)
    assert status == 200 and json.loads(body)["body"] == 100000


def test_daemon_refuses_a_bad_manifest_and_says_why(daemon):
    write_manifest(daemon.conf_dir, '[services.x]\nkind = "api"\nprocesses = -1\n')
    daemon.start(wait=False)
    assert daemon.proc.wait(30) == 1
    out = daemon.output()
    assert "is not valid" in out
    assert "service 'x', key 'app'" in out and "service 'x', key 'processes'" in out
    assert not (daemon.runtime_dir / "control.sock").exists()


def test_control_socket_checks_who_is_asking(daemon):
    """A local user outside the control group is refused even if the socket's mode would let it in."""
    two_apis(daemon)
    daemon.start()
    os.chmod(daemon.runtime_dir, 0o755)
    os.chmod(daemon.runtime_dir / "control.sock", 0o666)
    as_nobody = wsgictl_as("nobody", "nogroup", daemon.runtime_dir, "status")
    assert as_nobody.returncode == 1
    assert "permission denied: not root and not in the control group" in as_nobody.stderr
    assert "refused a client with uid 65534" in daemon.output()


def test_control_group_members_are_let_in(tmp_path):

    d = Daemon(tmp_path, extra_args=["--control-group", "nogroup"])
    two_apis(d)
    d.start()
    try:
        os.chmod(d.runtime_dir, 0o755)
        result = wsgictl_as("nobody", "nogroup", d.runtime_dir, "status", "--json")
        assert result.returncode in (0, 3), result.stderr
        assert {s["name"] for s in json.loads(result.stdout)} == {"alpha", "beta"}
        assert os.stat(d.runtime_dir / "control.sock").st_gid == 65534
    finally:
        d.stop()


def test_ready_is_sent_once_every_service_runs(tmp_path, server):
    """Type=notify: READY=1 reaches $NOTIFY_SOCKET only when the boot start is done.

    --no-units keeps a host without systemd from being asked for wsgi@NAME units.
    """
    import socket as socketlib

    notify = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    d = Daemon(tmp_path, extra_args=["--no-units"], env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    two_apis(d, server=server)
    try:
        d.start(wait=False)
        with notify:
            message = ""
            while "READY=1" not in message.splitlines():  # STATUS= updates may come first
                message = notify.recv(4096).decode()
            assert "STATUS=2 running" in message, message
            states = {s["state"] for s in d.status().values()}
        assert states == {"running"}
        assert "systemctl" not in d.output()
    finally:
        d.stop()


def test_the_reason_is_the_exception_as_oslo_log_prints_it(daemon, server):
    """An excepthook like oslo.log's leaves no line starting with `TypeError:`; the banner must not stand in."""
    app = APPS / "oslo_like.py"
    write_manifest(daemon.conf_dir, f'[services.aodh]\nkind = "api"\napp = "{app}"\nprocesses = 1\n', server=server)
    daemon.start()
    s = daemon.wait_state("aodh", "backoff")
    assert s["reason"].startswith(
        "the app failed to load: TypeError: sequence item 0: expected str instance, bytes found"
    ), s["reason"]
    detail = daemon.ctl("status", "aodh", check=False).stdout
    assert "the app failed to load: TypeError: sequence item 0" in detail
    assert "machine:" not in s["reason"]


ASK_FOR_A_SOCKET = """
import json, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.settimeout(10)
try:
    conn.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": exc.strerror}))
    sys.exit()
conn.sendall(b'{"cmd":"launch","service":"alpha","instance":""}\\n')
data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
print(json.dumps({"reply": json.loads(data.split(b"\\n")[0]), "fds": len(fds)}))
"""


def ask_for_a_socket(path, user=None, group=None):
    import subprocess

    out = subprocess.run(
        ["/usr/bin/python3", "-c", ASK_FOR_A_SOCKET, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        **({"user": user, "group": group, "extra_groups": []} if user else {}),
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_only_the_emperors_launchers_get_an_api_socket(tmp_path):
    """A member of the control group cannot pose as a service's launcher: no socket, no new master."""
    d = Daemon(tmp_path, extra_args=["--control-group", "nogroup"])
    two_apis(d)
    d.start()
    try:
        d.ctl("start", "alpha")
        before = d.status()["alpha"]
        os.chmod(d.runtime_dir, 0o755)
        # the control socket lets the group in, but not for a launch
        on_control = ask_for_a_socket(d.runtime_dir / "control.sock", "nobody", "nogroup")
        assert on_control["fds"] == 0 and not on_control["reply"]["ok"]
        assert "'launch' is not a command of the control socket" in on_control["reply"]["error"]
        # the launch socket is root's alone
        launch = d.runtime_dir / "daemon" / "launch.sock"
        assert stat.S_IMODE(os.stat(launch).st_mode) == 0o600
        assert ask_for_a_socket(launch, "nobody", "nogroup") == {"connect": "Permission denied"}
        # and, should its mode be opened up, a process that the emperor did not start is refused, root or not
        os.chmod(launch, 0o666)
        for who in ({"user": "nobody", "group": "nogroup"}, {}):
            refused = ask_for_a_socket(launch, **who)
            assert refused["fds"] == 0 and not refused["reply"]["ok"]
            assert "only the launchers of the daemon's emperor" in refused["reply"]["error"]
        after = d.status()["alpha"]
        assert (after["pid"], after["state"], after["restarts"]) == (before["pid"], "running", before["restarts"])
        # the emperor's own launchers still get it: a master killed comes back on the same socket
        os.kill(before["pid"], signal.SIGKILL)
        d.wait_for(lambda s: s["alpha"]["state"] == "running" and s["alpha"]["pid"] != before["pid"], what="alpha back")
        assert uwsgi_request(d.socket("alpha"))[0] == 200
    finally:
        d.stop()


def test_a_daemon_out_of_file_descriptors_answers_again_once_they_are_back(daemon):
    """Issue 22: a daemon that had answered stopped answering (`wsgictl status` exited 1). One way:
    an accept that fails (no file descriptor left, as under systemd's default soft limit of 1024
    on a busy host) ended the control socket's accept loop for good. Clients that hold every
    descriptor for a while (here: many idle connections, under a lowered limit) must cost only that
    while: once they are gone, every status is answered again."""
    write_manifest(daemon.conf_dir, f'[services.api]\nkind = "api"\napp = "{APPS / "probe.py"}"\nprocesses = 1\n')
    daemon.start()
    daemon.ctl("start", "api")
    pid = daemon.proc.pid
    used = len(os.listdir(f"/proc/{pid}/fd"))
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={used + 16}:20000"], check=True)
    hogs = []
    try:
        for _ in range(40):  # more than the daemon can take: the last ones wait in the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(daemon.runtime_dir / "control.sock"))
            hogs.append(s)
        time.sleep(2)  # the daemon accepts what it can, then runs out
    finally:
        for s in hogs:
            s.close()
        subprocess.run(["prlimit", f"--pid={pid}", "--nofile=20000:20000"], check=True)
    deadline = time.monotonic() + 15
    while (r := daemon.ctl("status", "--json", check=False, timeout=30)).returncode not in (0, 3):
        assert time.monotonic() < deadline, f"the daemon stopped answering: {r.stderr}"
        time.sleep(0.5)
    for _ in range(5):
        assert daemon.ctl("status", "--json", check=False).returncode in (0, 3)
