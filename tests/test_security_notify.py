"""Security review, finding 4 and finding 9's worker half: who may speak for a worker service.

A worker's notify socket takes READY=1 and STATUS= only from the worker's own processes (its main
process and their descendants, running as the service's user), as the kernel vouches for them
(SCM_CREDENTIALS), never from an environment variable the sender sets itself. `wsgictl stack` of a
worker looks only at that tree. What a service chooses to say (STATUS=, log lines) is printed by
`wsgictl` with its control characters made visible, never raw to the terminal.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import time

import pytest
from attacker import SYSTEM_PYTHON, as_user, local_user

from support import Daemon, write_manifest

VICTIM_USER = "wsgi-h3-notify-svc"
OTHER_USER = "wsgi-h3-notify-other"
ATTACKER = "wsgi-h3-notify-attacker"
TAG = "WSGI_SUPERVISOR_SERVICE"  # what the daemon once took a sender's word on
FORGED = "\x1b]0;pwned\x07\x1b[2Jforged"

# The worker that never sends READY=1 on its own: SIGUSR1 has it send a STATUS= with escape
# sequences (also a marker: every datagram sent before it has been read), SIGUSR2 has a child
# of it send READY=1.
VICTIM = r"""
import os, signal, socket, time
def send(message):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])
    finally:
        s.close()
said = 0
def own_status(*_):
    global said
    said += 1
    send(f"STATUS=own {said} \x1b[31mred\x1b[0m")
def child_ready(*_):
    if os.fork() == 0:
        send("READY=1")
        while True:
            time.sleep(1)
signal.signal(signal.SIGUSR1, own_status)
signal.signal(signal.SIGUSR2, child_ready)
print("victim up\twith \x1b[31mred\x1b[0m", flush=True)
while True:
    time.sleep(1)
"""

# Sends READY=1 and a forged STATUS= to the socket argv[1], 20 times; prints what the kernel said;
# then stays alive argv[2] seconds, so that a daemon that looks the sender up finds it.
SENDER = r"""
import socket, sys, time
outcome = set()
for _ in range(20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(("READY=1\nSTATUS=" + FORGED).encode(), sys.argv[1])
        outcome.add("sent")
    except OSError as exc:
        outcome.add(type(exc).__name__)
    finally:
        s.close()
    time.sleep(0.05)
print("sender:", " ".join(sorted(outcome)), flush=True)
time.sleep(float(sys.argv[2]))
""".replace("FORGED", repr(FORGED))

# Run in another service (or by a local user): on SIGUSR1 (at once for a local user), start SENDER
# with the victim's environment tag, as a compromised process would.
FORGER = r"""
import os, signal, sys, time
sender, path, tag, stay = sys.argv[1:5]
def forge(*_):
    if os.fork() == 0:
        env = {"WSGI_SUPERVISOR_SERVICE": tag, "NOTIFY_SOCKET": path, "PATH": "/usr/bin:/bin"}
        os.execve(sys.executable, [sys.executable, "-c", sender, path, stay], env)
if len(sys.argv) > 5:
    forge()
    os.wait()
    sys.exit(0)
signal.signal(signal.SIGUSR1, forge)
print("forger up", flush=True)
while True:
    time.sleep(1)
"""


def toml(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string


def python_worker(name: str, source: str, *args: str, extra: str = "") -> str:
    command = ", ".join(toml(a) for a in (SYSTEM_PYTHON, "-c", source, *args))
    return f"""
[services.{name}]
kind = "worker"
command = [{command}]
stop_timeout = 3
{extra}
"""


def victim_manifest(user: str | None) -> str:
    """A notifying worker that never says READY=1 itself, and a worker that comes after it."""
    owner = f'user = "{user}"\n' if user else ""
    return python_worker("victim", VICTIM, extra=owner + "notify = true\nstart_timeout = 600") + python_worker(
        "dependent", "import time; time.sleep(3600)", extra='after = ["victim"]\nready_after = 0.1'
    )


def shown(d: Daemon) -> str:
    """Everything `wsgictl status` tells an operator, in every form."""
    return d.ctl("status", check=False).stdout + d.ctl("status", "victim", check=False).stdout


def marker(d: Daemon, pid: int, n: int) -> dict:
    """Have the victim itself send STATUS=own N; once it shows, every datagram sent before it was read."""
    os.kill(pid, signal.SIGUSR1)
    return d.wait_for(lambda s: (s["victim"].get("status_text") or "").startswith(f"own {n} "), what=f"own {n}")


def assert_not_ready(status: dict) -> None:
    victim, dependent = status["victim"], status["dependent"]
    assert victim["state"] == "starting" and not victim["ready"], victim
    assert dependent["state"] == "starting" and dependent["pid"] is None, dependent
    assert "forged" not in json.dumps(status)


def logs_of(d: Daemon, *names: str) -> str:
    return d.ctl("logs", "-v", "-n", "500", *names, check=False).stdout


def wait_log(d: Daemon, name: str, text: str, count: int = 1, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = logs_of(d, name)
        if found.count(text) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{text!r} x{count} not in the logs of {name}:\n{logs_of(d)}")


def started_victim(d: Daemon, manifest: str) -> int:
    write_manifest(d.conf_dir, manifest)
    d.start()
    s = d.wait_for(lambda s: s["victim"]["pid"] and s["victim"]["state"] == "starting", what="victim started")
    return s["victim"]["pid"]


@pytest.fixture
def users():
    """The three users, made before the daemon and removed after it (userdel refuses a user whose
    processes still run: a test names this fixture before `daemon`)."""
    with local_user(VICTIM_USER), local_user(OTHER_USER), local_user(ATTACKER):
        yield
    left = [name for name in (VICTIM_USER, OTHER_USER, ATTACKER) if _exists(name)]
    assert not left, f"users left behind: {left}"


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def test_a_local_user_can_neither_make_a_worker_ready_nor_set_its_status(users, daemon):
    pid = started_victim(daemon, victim_manifest(VICTIM_USER))
    path = daemon.runtime_dir / "notify" / "victim.sock"
    # the attacker carries the victim's environment tag, and stays alive while the daemon looks
    tag = f"{daemon.runtime_dir}:victim"
    attack = as_user(ATTACKER, SYSTEM_PYTHON, "-c", FORGER, SENDER, str(path), tag, "3", "now", timeout=60)
    assert attack.returncode == 0 and "sender:" in attack.stdout, attack.stdout + attack.stderr
    during = shown(daemon)
    status = marker(daemon, pid, 1)
    assert_not_ready(status)
    assert "forged" not in during and "pwned" not in during, during
    assert "forged" not in shown(daemon) and "forged" not in logs_of(daemon)


def test_a_socket_its_owner_opened_to_everyone_still_hears_only_the_service(users, daemon):
    pid = started_victim(daemon, victim_manifest(VICTIM_USER))
    path = daemon.runtime_dir / "notify" / "victim.sock"
    os.chmod(path, 0o666)  # as the service's user may do to the socket it owns
    tag = f"{daemon.runtime_dir}:victim"
    attack = as_user(ATTACKER, SYSTEM_PYTHON, "-c", FORGER, SENDER, str(path), tag, "3", "now", timeout=60)
    assert "sender: sent" in attack.stdout, attack.stdout + attack.stderr  # it reached the socket, this time
    assert_not_ready(marker(daemon, pid, 1))
    said = [line for line in logs_of(daemon, "victim").splitlines() if "dropped a notification" in line]
    assert len(said) == 1 and "not the service's user" in said[0], said
    assert "forged" not in shown(daemon) and "forged" not in logs_of(daemon)


def test_another_service_cannot_notify_for_a_worker_even_as_the_same_user(users, daemon):
    path = daemon.runtime_dir / "notify" / "victim.sock"
    tag = f"{daemon.runtime_dir}:victim"
    manifest = victim_manifest(VICTIM_USER)
    for name, user in (("other", OTHER_USER), ("sibling", VICTIM_USER)):
        manifest += python_worker(
            name, FORGER, SENDER, str(path), tag, "3600", extra=f'user = "{user}"\nready_after = 0.1'
        )
    pid = started_victim(daemon, manifest)
    s = daemon.wait_for(lambda s: s["other"]["ready"] and s["sibling"]["ready"], what="the forgers up")
    for name in ("other", "sibling"):
        os.kill(s[name]["pid"], signal.SIGUSR1)
    # the other user may not even send; the same user's datagrams (20 of them) reach the daemon
    assert "sender: PermissionError" in wait_log(daemon, "other", "sender:")
    assert "sender: sent" in wait_log(daemon, "sibling", "sender:")
    status = marker(daemon, pid, 1)
    assert_not_ready(status)
    assert "forged" not in shown(daemon)
    # what was refused is said in the service's log once, not once per datagram
    said = [line for line in logs_of(daemon, "victim").splitlines() if "dropped a notification" in line]
    assert len(said) == 1, said
    assert "not the main process" in said[0]
    assert "forged" not in logs_of(daemon)


def test_the_worker_itself_and_its_children_still_notify_and_its_escapes_show_as_text(users, daemon):
    pid = started_victim(daemon, victim_manifest(VICTIM_USER))
    marker(daemon, pid, 1)
    table, detail = daemon.ctl("status", check=False).stdout, daemon.ctl("status", "victim", check=False).stdout
    for text in (table, detail):
        assert "\x1b" not in text, repr(text)
        assert "own 1 \\x1b[31mred\\x1b[0m" in text, text
    as_json = daemon.ctl("status", "--json", check=False).stdout  # JSON escapes them itself
    victim = next(s for s in json.loads(as_json) if s["name"] == "victim")
    assert "\x1b" not in as_json and victim["status_text"] == "own 1 \x1b[31mred\x1b[0m"
    logs = wait_log(daemon, "victim", "victim up")
    assert "\x1b" not in logs and "victim up\twith \\x1b[31mred\\x1b[0m" in logs, repr(logs)
    os.kill(pid, signal.SIGUSR2)  # a child of the worker says READY=1
    s = daemon.wait_for(lambda s: s["victim"]["ready"] and s["dependent"]["state"] == "running", what="ready")
    assert s["victim"]["state"] == "running" and s["dependent"]["pid"]


def test_stack_of_a_worker_reaches_only_its_own_processes(users, daemon):
    # the worker (root's) has a child that runs as another user: in its tree, yet not the service's
    source = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], user={ATTACKER!r})
print("child", child.pid, flush=True)
while True:
    time.sleep(1)
"""
    write_manifest(daemon.conf_dir, python_worker("victim", source, extra="ready_after = 0.1"))
    daemon.start()
    main = daemon.wait_state("victim", "running")["pid"]
    child = wait_log(daemon, "victim", "child ").split("child ")[1].split()[0]
    # a local user's process that carries the victim's environment tag
    impostor = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", "import time; time.sleep(600)"],
        user=ATTACKER,
        group=ATTACKER,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin", TAG: f"{daemon.runtime_dir}:victim"},
    )
    try:
        out = daemon.ctl("stack", "victim", check=False)
        looked_at = re.findall(r"^--- victim .*\(pid (\d+)\)", out.stdout, flags=re.M)
        assert looked_at == [str(main)], out.stdout + out.stderr
        assert str(impostor.pid) not in out.stdout + out.stderr and f"pid {child}" not in out.stdout + out.stderr
    finally:
        impostor.kill()
        impostor.wait()
