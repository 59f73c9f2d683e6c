"""The attacker's side of the security tests: real unprivileged users, a compromised app, a venv they may run.

Every finding of the security review is played with these: a local user with no rights, a service's own
user running code inside a compromised API (tests/apps/compromised.py), a member of the control group.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from supervisor.observe.procs import descendants
from support import APPS, ROOT, SERVER_PACKAGES, http_request, scripts_run, uwsgi_request

COMPROMISED = APPS / "compromised.py"
# Debian's own Python: the suite's venv links to an interpreter under /root (0700), which no other user may run
SYSTEM_PYTHON = "/usr/bin/python3"


@contextlib.contextmanager
def local_user(name: str, home: Path | None = None) -> Iterator[str]:
    """A real system user with no rights (its own primary group), removed afterwards with its processes' files."""
    subprocess.run(["userdel", name], capture_output=True, check=False)  # a run that was killed left it behind
    args = ["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin"]
    if home is not None:
        args += ["--home-dir", str(home), "--create-home"]
    else:
        args += ["--no-create-home"]
    subprocess.run([*args, name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


@contextlib.contextmanager
def owned_dir(user: str, prefix: str) -> Iterator[Path]:
    """A directory of the user's own (its `chdir`, as /var/lib/<service> is), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    uid, gid = os_user_ids(user)
    os.chown(path, uid, gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def user_venv() -> Path:
    """A venv with both servers on Debian's Python, which any user may run: made once under .cache/, kept."""
    venv = ROOT / ".cache" / "system-python-venv"
    marker = venv / ".ready"
    wanted = " ".join(SERVER_PACKAGES)
    if not marker.exists() or marker.read_text() != wanted or not scripts_run(venv):
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *SERVER_PACKAGES], check=True)
        marker.write_text(wanted)
    return venv


# a module the service's user plants in its own directory: it leaves a mark saying whom it ran as, then
# puts the real module in its place, so that the process goes on as if nothing happened
PLANTED = """\
import importlib, os, sys
_here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(_here, "ran-%s-uid%d" % (__name__, os.getuid())), "w").close()
_path = list(sys.path)
sys.path[:] = [p for p in _path if os.path.abspath(p or os.curdir) != _here]
del sys.modules[__name__]
try:
    _real = importlib.import_module(__name__)
finally:
    sys.path[:] = _path
sys.modules[__name__] = _real
globals().update({k: v for k, v in vars(_real).items() if k not in ("__file__", "__spec__", "__loader__")})
"""
SHADOWED = ("platform", "pickle", "_compat_pickle", "socketserver", "copyreg", "selectors")


def tree(d, name: str = "api") -> list[int]:
    """The service's main process (a vassal's master, an arbiter) and every process below it."""
    main = d.status(name)[name]["pid"]
    return [main, *descendants(main)]


def run_in_api(sock: Path, source: str, protocol: str = "uwsgi", timeout: float = 30.0) -> dict:
    """Have the compromised API behind `sock` run `source` in one of its workers; its JSON answer."""
    body = textwrap.dedent(source).encode()
    if protocol == "http":
        status, _headers, data = http_request(sock, "/run", method="POST", body=body, timeout=timeout)
    else:
        status, _headers, data = uwsgi_request(sock, "/run", method="POST", body=body, timeout=timeout)
    assert status == 200, data[:2000]
    return json.loads(data)


def as_user(user: str, *argv: str, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
    """A command run as `user` (its own group, no supplementary groups), from /."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        user=user,
        group=user,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        timeout=timeout,
        **kwargs,
    )


def python_as(user: str, source: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Python source run by Debian's Python as `user`: a local attacker's script."""
    return as_user(user, SYSTEM_PYTHON, "-c", textwrap.dedent(source), timeout=timeout)


def owner_of(pid: int) -> tuple[int, int, list[int]]:
    """(real uid, real gid, supplementary groups) of a live process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0]), [int(g) for g in fields.get("Groups", [])]


def os_user_ids(name: str) -> tuple[int, int]:
    """(uid, primary gid) of a user."""
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


__all__ = [
    "COMPROMISED",
    "PLANTED",
    "SHADOWED",
    "SYSTEM_PYTHON",
    "as_user",
    "local_user",
    "os_user_ids",
    "owned_dir",
    "owner_of",
    "python_as",
    "run_in_api",
    "tree",
    "user_venv",
]
