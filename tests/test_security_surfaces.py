"""Security review (issue 26), findings 7, 8 and 10: what the daemon's unauthenticated surfaces give away.

7: `/health` bodies and the log files reached plain local users with an app's secrets in them.
8: one health-probe token for every service let a compromised service hide its requests to another.
10: the metrics listener took connections without bound, into `Too many open files`.

Each test plays the attacker: a real unprivileged local user, or code run inside a compromised API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from attacker import COMPROMISED, SYSTEM_PYTHON, as_user, local_user, python_as, run_in_api, user_venv

import supervisor.uwsgi.launcher as launcher
from supervisor import request_marks as marks
from supervisor.logs.pipeline import Drops, FileSink
from supervisor.state.service import LogLine
from support import APPS, Daemon, free_port, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"
SECRET = "hunter2-S3cret"
DATABASE = f"mysql+pymysql://nova:{SECRET}@10.0.0.5/nova"


def ask(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- 7: /health names a state, never the reason -------------------------------------------------


def test_a_local_user_reading_health_sees_the_state_not_the_apps_secret(tmp_path, server):
    port = free_port()
    d = Daemon(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
    write_manifest(
        d.conf_dir,
        f"""
[services.nova]
kind = "api"
app = "{PROBE}"
environment = {{ PROBE_FAIL_IMPORT = "cannot reach {DATABASE}" }}
start_limit = 1

[services.fine]
kind = "api"
app = "{PROBE}"
""",
        server=server,
    )
    with local_user("wsgi-h5-reader") as reader:
        try:
            d.start()
            d.ctl("start", "fine")
            d.ctl("start", "nova", check=False)
            d.wait_for(lambda s: s["nova"]["state"] == "failed", what="nova failing to import")
            shown = d.ctl("status", "nova", check=False).stdout  # root, on the control socket: the reason
            assert "the app failed to load" in shown and SECRET in shown, shown

            script = f"""
                import urllib.error, urllib.request
                for path in ("/health/nova", "/health", "/health/nope"):
                    try:
                        answer = urllib.request.urlopen("http://127.0.0.1:{port}" + path, timeout=10)
                        code, body = answer.status, answer.read()
                    except urllib.error.HTTPError as exc:
                        code, body = exc.code, exc.read()
                    print(code, repr(body.decode()))
                """
            seen = python_as(reader, script)
            assert seen.returncode == 0, seen.stderr
            nova, host, unknown = seen.stdout.splitlines()
            assert nova == "503 'nova: failed\\n'" and unknown == "404 'not in the manifest\\n'"
            assert host.startswith(("200 'ok: ", "503 'nova: failed\\n")), host
            assert SECRET not in seen.stdout and "RuntimeError" not in seen.stdout
        finally:
            d.stop()


# -- 7: the log files are for the log group, and never written through a link ----------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def reachable_tmp():
    """A dir that other users can reach (pytest's own are under /tmp/pytest-of-root, 0700), removed after."""
    path = Path(tempfile.mkdtemp(prefix="wsgi-h5-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_log_files_are_closed_to_local_users_and_a_planted_link_is_never_followed(tmp_path, reachable_tmp):
    logs = reachable_tmp / "logs"
    logs.mkdir()
    logs.chmod(0o777)  # as an earlier version's dir, or an operator's, may be: anyone could plant a link
    (logs / "api.log").write_text("a line of an earlier daemon\n")
    (logs / "api.log").chmod(0o644)  # an earlier version made them 0644
    victim = reachable_tmp / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    target = victim / "shadow"
    target.write_text("root:the real content\n")
    args = ["--log-dir", str(logs), "--journal", "no", "--log-max-bytes", "3000"]
    d = Daemon(tmp_path, extra_args=args)
    write_manifest(
        d.conf_dir,
        f'[services.api]\nkind = "api"\napp = "{PROBE}"\n\n[services.b]\nkind = "api"\napp = "{PROBE}"\n',
    )
    with local_user("wsgi-h5-planter") as planter:
        planted = as_user(planter, "ln", "-s", str(target), str(logs / "b.log"))
        assert planted.returncode == 0, planted.stderr
        try:
            d.start()
            d.ctl("start", "api", "b")
            for _ in range(30):  # request lines for both, past a rotation
                for name in ("api", "b"):
                    served(d.socket(name), "/hello-" + "x" * 200)
            d.wait_for(lambda s: s["api"].get("responses", {}).get("2xx", 0) >= 30, what="requests counted")
            assert target.read_text() == "root:the real content\n"  # the link was not followed
            said(d, "b.log is a symbolic link: not followed")

            assert mode_of(logs) == 0o750 and logs.stat().st_uid == 0
            files = sorted(p.name for p in logs.iterdir() if p.name != "b.log")
            assert "api.log" in files and "api.log.1" in files, files  # rotated meanwhile
            for name in files:
                assert mode_of(logs / name) == 0o640, (name, oct(mode_of(logs / name)))
            for path in (logs / "api.log", logs / "wsgi-supervisor.log"):
                read = as_user(planter, "cat", str(path))
                assert read.returncode != 0 and "Permission denied" in read.stderr

        finally:
            d.stop()


def test_a_link_planted_while_the_daemon_writes_is_not_followed_at_rotation(tmp_path, reachable_tmp):
    """The log group may write into the dir here (an operator's choice, as a service's own log dir
    is its user's): its member replaces api.log by a link to a file that does not exist yet, so
    that the rotation's rename passes over it and its reopen would create the file as root."""
    logs = reachable_tmp / "logs"
    created = reachable_tmp / "cron.d-evil"  # what the daemon would create, with lines the attacker sent
    with local_user("wsgi-h5-planter2") as planter:
        args = ["--log-dir", str(logs), "--journal", "no", "--log-max-bytes", "3000"]
        args += ["--log-dir-mode", "0770", "--log-group", planter]
        d = Daemon(tmp_path, extra_args=args)
        write_manifest(d.conf_dir, f'[services.api]\nkind = "api"\napp = "{PROBE}"\n')
        try:
            d.start()
            d.ctl("start", "api")
            served(d.socket("api"), "/before")
            d.wait_for(lambda s: s["api"].get("responses", {}).get("2xx") == 1, what="a request counted")
            assert (logs / "api.log").is_file() and mode_of(logs) == 0o770
            swap = f"rm -f {logs / 'api.log'} && ln -s {created} {logs / 'api.log'}"
            planted = as_user(planter, "/bin/sh", "-c", swap)
            assert planted.returncode == 0, planted.stderr
            for _ in range(30):  # past --log-max-bytes: a rotation, then a reopen
                served(d.socket("api"), "/attacker-chosen-" + "y" * 200)
            d.wait_for(lambda s: s["api"]["responses"]["2xx"] == 31, what="every request counted")
            said(d, "api.log is a symbolic link: not followed")
            assert not created.exists(), created.read_text()[:300]
        finally:
            d.stop()


def test_a_log_file_a_local_user_made_for_the_daemon_gets_no_line(reachable_tmp):
    """In a dir anyone could write (as left by an earlier version), a local user makes api.log a
    file of their own, readable by them: the sink writes nothing into it, and closes the dir."""
    logs = reachable_tmp / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    drops = Drops()
    sink = FileSink(logs, drops, 10**6, 2)
    with local_user("wsgi-h5-owner") as owner:
        made = as_user(owner, "/bin/sh", "-c", f"umask 0; : > {logs / 'api.log'}")
        assert made.returncode == 0, made.stderr
        try:
            sink(LogLine(time.time(), "api", "o", f"connected to {DATABASE}"))
            sink(LogLine(time.time(), "b", "o", "a line of b"))
        finally:
            sink.close()
        assert (logs / "api.log").read_text() == ""  # the secret line went nowhere the user can read
        assert "Permission denied" in as_user(owner, "cat", str(logs / "api.log")).stderr  # the dir is closed
        assert drops.count == 1 and mode_of(logs) == 0o750
        assert (logs / "b.log").read_text().endswith("a line of b\n") and mode_of(logs / "b.log") == 0o640


def test_a_log_dir_that_holds_other_files_keeps_its_mode(reachable_tmp):
    """--log-dir /var/log by mistake: closing it would close the host's logs to syslog and others."""
    shared = reachable_tmp / "var-log"
    shared.mkdir()
    shared.chmod(0o775)
    (shared / "syslog").write_text("")
    sink = FileSink(shared, Drops(), 10**6, 2)
    try:
        sink(LogLine(time.time(), "api", "o", "a line"))
    finally:
        sink.close()
    assert mode_of(shared) == 0o775 and mode_of(shared / "api.log") == 0o640


def said(d: Daemon, text: str, timeout: float = 10.0) -> None:
    """The daemon's whole output (not only its tail: request lines scroll by) has `text`, within `timeout`."""
    deadline = time.monotonic() + timeout
    while text not in d.log_path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in d.log_path.read_text(errors="replace"), d.output()[-3000:]


def served(sock: Path, path: str) -> None:
    assert uwsgi_request(sock, path)[0] == 200


# -- 8: a probe token per instance ----------------------------------------------------------------

# what a compromised service does: find its own probe token (the wrapper's closure, the spec
# gunicorn was given, the environment), then send requests to another service with it
STEAL_AND_HIDE = """
import gc
found = set()
for obj in gc.get_objects():
    try:
        code = getattr(obj, "__code__", None)
        if code is not None and obj.__closure__ and "probe_token" in code.co_freevars:
            found.add(obj.__closure__[code.co_freevars.index("probe_token")].cell_contents)
        elif isinstance(obj, dict) and isinstance(obj.get("probe_token"), str):
            found.add(obj["probe_token"])
    except Exception:
        pass
for source in (os.environ, ):
    if source.get("WSGI_SUPERVISOR_PROBE_TOKEN"):
        found.add(source["WSGI_SUPERVISOR_PROBE_TOKEN"])
found.discard("")
sent = []
if TARGET:
    import struct
    for i in range(5):
        env = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/hidden-by-a", "PATH_INFO": "/hidden-by-a",
               "QUERY_STRING": "", "SERVER_NAME": "x", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "127.0.0.1", "HTTP_X_WSGI_SUPERVISOR_PROBE": " ".join(sorted(found))}
        body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
                        for k, v in env.items())
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(TARGET)
            s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        sent.append(data.split(b" ", 2)[1].decode())
result = {"tokens": sorted(found), "sent": sent}
"""


def steal(sock: Path, target: Path | None) -> dict:
    answer = run_in_api(sock, f"TARGET = {str(target) if target else ''!r}\n" + STEAL_AND_HIDE)
    assert answer["error"] is None, answer["error"]
    return answer["result"]


def test_a_services_own_probe_token_hides_nothing_of_another_service(tmp_path, server):
    venv = user_venv()
    with local_user("wsgi-h5-svc") as user:
        d = Daemon(tmp_path, extra_args=["--socket-group", user])
        tables = "".join(
            f"""
[services.{name}]
kind = "api"
app = "{COMPROMISED}"
venv = "{venv}"
user = "{user}"
group = "{user}"
health = "/healthcheck"
health_interval = 0.2
"""
            for name in ("a", "b")
        )
        write_manifest(d.conf_dir, tables, server=server)
        try:
            d.start()
            d.ctl("start", "a", "b")
            d.wait_for(lambda s: s["a"]["ready"] and s["b"]["ready"], what="both ready, their probes passing")
            stolen = steal(d.socket("a"), d.socket("b"))
            assert stolen["tokens"], "the compromised service found no token of its own"
            assert stolen["sent"] == ["200"] * 5
            # b's log and counts have them; b's own probes (every 0.2 s) are still left out
            d.wait_for(lambda s: s["b"].get("responses", {}).get("2xx") == 5, what="b counting a's 5 requests")
            time.sleep(1.0)
            assert d.status("b")["b"]["responses"]["2xx"] == 5
            assert d.ctl("logs", "b").stdout.count("/hidden-by-a") == 5

            d.ctl("restart", "a")
            d.wait_for(lambda s: s["a"]["ready"], what="a ready again")
            again = steal(d.socket("a"), None)
            assert again["tokens"] and not set(again["tokens"]) & set(stolen["tokens"])  # a new one

            d.ctl("stop", "a")  # a's token goes with its instance; b's stays for an adopting daemon
            deadline = time.monotonic() + 5
            while "a" in (kept := saved_tokens(d)) and time.monotonic() < deadline:
                time.sleep(0.1)
            b_tokens = {token for instances in kept.get("b", {}).values() for token in instances.values()}
            assert "a" not in kept and b_tokens and not b_tokens & set(stolen["tokens"])
        finally:
            d.stop()


@pytest.mark.parametrize(("before", "after"), [("uwsgi", "gunicorn"), ("gunicorn", "uwsgi")])
def test_the_probes_stay_unlogged_when_an_api_moves_to_the_other_server(daemon, before, after):
    """Both servers run instance "" of the service for a moment: the old one going must not take
    the new one's token with it (its probes would then be logged and counted as the app's)."""
    table = '[services.moving]\nkind = "api"\nserver = "{}"\napp = "{}"\nhealth = "/"\nhealth_interval = 0.1\n'
    write_manifest(daemon.conf_dir, table.format(before, PROBE))
    daemon.start()
    daemon.ctl("start", "moving")
    daemon.wait_for(lambda s: s["moving"]["ready"], what="ready")
    write_manifest(daemon.conf_dir, table.format(after, PROBE))
    daemon.ctl("reload-config")
    daemon.wait_for(lambda s: s["moving"]["server"] == after and s["moving"]["ready"], what=f"moved to {after}")
    time.sleep(2.0)  # 20 probes
    moved = daemon.status("moving")["moving"]
    assert not any(moved.get("responses", {}).values()), moved.get("responses")
    assert "GET / 200" not in daemon.ctl("logs", "moving", "-n", "50").stdout


def saved_tokens(d: Daemon) -> dict:
    return json.loads((d.runtime_dir / "daemon" / "state.json").read_text()).get("probe_tokens", {})


def test_the_launcher_sets_the_variable_the_wrapper_reads():
    assert launcher.TOKEN_VARIABLE == marks.TOKEN_VARIABLE
    assert launcher.probe_token(b'{"ok":true,"probe_token":"0a1b2c3d4e5f60718293a4b5c6d7e8f9"}') == (
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    )
    assert launcher.probe_token(b'{"ok":true}') == "" and launcher.probe_token(b'{"probe_token":"x y"}') == ""
    token = "f" * 32
    assert marks.origin({marks.PROBE_ENVIRON: f"{'0' * 32} {token}"}, token) == "probe"
    assert marks.origin({marks.PROBE_ENVIRON: "é" * 32}, token) == "-"


# -- 10: the metrics listener's connections are bounded -------------------------------------------

HOLD_IDLE = """
import select, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    conns.append(s)
print("open", flush=True)
poller = select.poll()
for s in conns:
    poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
closed, started, last = 0, time.monotonic(), 0.0
by_fd = {s.fileno(): s for s in conns}
while by_fd and time.monotonic() - started < float(sys.argv[3]):
    for fd, _ in poller.poll(200):
        s = by_fd.pop(fd, None)
        if s is not None:
            poller.unregister(fd)
            closed, last = closed + 1, time.monotonic() - started
print("closed", closed, round(last, 1), flush=True)
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_thousand_idle_connections_cannot_silence_metrics_or_health(tmp_path):
    port = free_port()
    # systemd's default soft limit, as the daemon had it when 1,100 idle connections took it down
    d = Daemon(
        tmp_path,
        extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--sample-interval", "0.5"],
        wrapper=["prlimit", "--nofile=1024:1024", "--"],
    )
    write_manifest(d.conf_dir, f'[services.api]\nkind = "api"\napp = "{PROBE}"\n')
    with local_user("wsgi-h5-flood") as flooder:
        try:
            d.start()
            d.ctl("start", "api")
            assert ask(port, "/health/api") == (200, "api: ok\n")
            baseline = open_fds(d.proc.pid)
            flood = subprocess.Popen(
                [SYSTEM_PYTHON, "-c", textwrap.dedent(HOLD_IDLE), str(port), "1100", "12"],
                stdout=subprocess.PIPE,
                text=True,
                user=flooder,
                group=flooder,
                extra_groups=[],
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
            )
            try:
                assert flood.stdout.readline() == "open\n"
                time.sleep(1.0)  # the daemon has accepted what it would
                held = open_fds(d.proc.pid)
                assert held < baseline + 300, (baseline, held)  # the cap (256), not 1,100
                code, text = ask(port, "/metrics")
                assert code == 200 and 'wsgi_service_up{kind="api",service="api"} 1.0' in text
                assert ask(port, "/health/api") == (200, "api: ok\n")
                assert ask(port, "/health")[0] == 200
                # what the daemon accepted it closes: at the cap to make room, the rest once idle for 5 s
                # (what the kernel's accept queue dropped in the burst the daemon never saw: not all 1,100)
                done = flood.stdout.readline().split()
                assert done[0] == "closed" and int(done[1]) >= 256, done
            finally:
                with contextlib.suppress(ProcessLookupError):
                    flood.kill()
                flood.wait(10)
            deadline = time.monotonic() + 10
            while open_fds(d.proc.pid) > baseline + 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert open_fds(d.proc.pid) <= baseline + 5, (baseline, open_fds(d.proc.pid))
            text = ask(port, "/metrics")[1]
            seen = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("wsgi_")}
            assert seen["wsgi_supervisor_listener_connections"] == 1  # this scrape
            refused, idle = (
                seen["wsgi_supervisor_listener_refused_total"],
                seen["wsgi_supervisor_listener_idle_closed_total"],
            )
            # every close the attacker saw is one of these (late accepts may have timed out since)
            assert refused >= 1 and refused + idle >= int(done[1]), (refused, idle, done)
            assert "Too many open files" not in d.log_path.read_text(errors="replace")
        finally:
            d.stop()
