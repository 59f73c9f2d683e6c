"""Bad input never gets further than a clear error: the manifest loader and the control socket."""

import json
import socket
import string
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.manifest.loading import load
from supervisor.manifest.models import ManifestError
from support import APPS, write_manifest

KEYS = [
    "kind",
    "app",
    "command",
    "args",
    "processes",
    "threads",
    "venv",
    "environment",
    "protocol",
    "mount",
    "user",
    "group",
    "after",
    "uwsgi",
    "stop_timeout",
    "start_timeout",
    "enabled",
    "notify",
    "ready_after",
    "request_log",
    "harakiri",
    "max_rss_mb",
    "chdir",
    "stop_signal",
]
scalars = (
    st.text(max_size=30)
    | st.sampled_from(
        ["api", "worker", "http", "uwsgi", "a.b:c", "/x", "$(HOME)", "@(x)", "\n[uwsgi]\nx=1", "${HOME}", "$${x}"]
    )
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
service_tables = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), values, max_size=8)
defaults_tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)  # a file's [defaults]
NAMES = st.text(alphabet=string.ascii_lowercase + "-_Z9 .", max_size=12)
documents = st.dictionaries(
    st.sampled_from(["services", "service", "x", "defaults"]),
    st.dictionaries(
        st.text(alphabet=string.ascii_lowercase + "-_Z9 .", max_size=12), service_tables | values, max_size=4
    )
    | values,
    max_size=2,
) | st.fixed_dictionaries(  # a file whose services take its [defaults]
    {
        "defaults": defaults_tables,
        "services": st.dictionaries(
            st.text(alphabet=string.ascii_lowercase + "-", max_size=8), service_tables, max_size=3
        ),
    }
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict) -> str:
    lines = []
    for top, body in doc.items():
        if isinstance(body, dict) and all(isinstance(t, dict) for t in body.values()):
            for name, table in body.items():
                lines.append(f"[{json.dumps(top)}.{json.dumps(name)}]")
                lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{json.dumps(top)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents | st.text(max_size=200).map(lambda t: {"raw": t}))
def test_any_document_gives_a_manifest_or_located_errors(tmp_path, doc):
    text = doc["raw"] if set(doc) == {"raw"} else to_toml(doc)
    (tmp_path / "fuzz.toml").write_text(text)
    try:
        manifest = load(tmp_path)
    except ManifestError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file.endswith("fuzz.toml") and problem.message
            assert str(problem).startswith(problem.file)
    else:
        assert all(name for name in manifest.services)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from support import Daemon

    d = Daemon(tmp_path_factory.mktemp("fuzz"))
    write_manifest(d.conf_dir, f'[services.api]\nkind = "api"\napp = "{APPS / "probe.py"}"\nprocesses = 1\n')
    d.start()
    d.ctl("start", "api")
    yield d
    d.stop()


def exchange(path, data: bytes, timeout=5.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def answers(d) -> bool:
    reply = exchange(d.runtime_dir / "control.sock", b'{"cmd": "ping"}\n')
    return json.loads(reply.splitlines()[0])["ok"] is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | st.dictionaries(st.text(max_size=8), values, max_size=4).map(lambda d: json.dumps(d).encode() + b"\n")
    | st.sampled_from(
        [
            b'{"cmd": "start", "services": "api"}\n',
            b'{"cmd": "stop", "services": [1]}\n',
            b"[]\n",
            b'{"cmd": "logs", "n": -1}\n',
            b'{"cmd": "status", "services": ["' + b"x" * 300 + b'"]}\n',
            b'{"cmd": "launch", "service": "api", "instance": "zz"}\n',
            b'{"cmd": "watch"}\n',
            b"\xff\xfe\n",
            b'{"cmd": "status"',
            b"\n\n\n",
        ]
    )
)
def test_garbage_on_the_control_socket_gets_an_error_and_harms_nothing(running, data):
    reply = exchange(running.runtime_dir / "control.sock", data)
    for line in reply.splitlines():
        message = json.loads(line)  # every answer is well-formed
        assert "ok" in message or "state" in message or "text" in message
    assert answers(running)


def test_huge_and_slow_clients_do_not_block_others(running):
    path = running.runtime_dir / "control.sock"
    huge = exchange(path, b"x" * (10 * 1024 * 1024), timeout=20)
    assert b"larger than" in huge
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(path))
    slow.sendall(b'{"cmd": "stat')  # and then nothing
    try:
        started = time.monotonic()
        threads = [threading.Thread(target=answers, args=(running,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert answers(running) and time.monotonic() - started < 5
        assert running.status()["api"]["state"] == "running"
    finally:
        slow.close()
