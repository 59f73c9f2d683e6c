"""`preload = true`: the app loaded once in the master, warmed up and frozen, and forked into the workers;
the fork-safety guard that loads it in each worker instead when the master holds a thread or a socket.

Every answer of tests/apps/preload_probe.py says which process imported the app and how many objects its
worker inherited frozen: an app that was not forked from its master cannot name the master's pid.
"""

import contextlib
import socket
import threading

import pytest
from attacker import local_user, os_user_ids, owner_of, user_venv

from supervisor import preload
from supervisor.observe.procs import descendants
from support import APPS, get_json, service_venv, write_manifest

PROBE = APPS / "preload_probe.py"


def manifest(server: str, hold: str = "", max_requests: int | None = None) -> str:
    text = f"""
[services.api]
kind = "api"
server = "{server}"
app = "{PROBE}"
processes = 2
preload = true
warmup = ["/", "/boom"]
environment = {{ PRELOAD_HOLD = "{hold}" }}
"""
    if max_requests is not None:
        if server == "uwsgi":
            text += f'uwsgi = {{ "max-requests" = {max_requests}, "min-worker-lifetime" = 1 }}\n'
        else:
            text += f"gunicorn = {{ max_requests = {max_requests} }}\n"
    return text


def answers(daemon, n: int) -> list[dict]:
    return [get_json(daemon.socket("api"), "/") for _ in range(n)]


def answers_until(daemon, bound: int):
    """Answers one after another, at most `bound` of them (the bound is only a hang check)."""
    for _ in range(bound):
        yield get_json(daemon.socket("api"), "/")


def started(daemon, text: str) -> dict:
    write_manifest(daemon.conf_dir, text)
    daemon.start()
    daemon.ctl("start", "api", "--timeout", "60")
    return daemon.status()["api"]


def assert_forked_from(master: int, seen: list[dict]) -> None:
    for answer in seen:
        assert answer["loaded_in"] == master != answer["pid"], answer
        assert answer["frozen"] > 0, answer  # gc.freeze() ran in the master before this worker was forked
        assert answer["warmed"] == ["/", "/boom"], answer  # warmed up in the master, before the fork
        # vassal_boot.py ran in the master (uWSGI imports it there with the app): still a blocking stdout
        assert answer["stdout_blocks"], answer


def test_workers_share_the_app_their_master_loaded_after_a_respawn_and_a_reload(daemon, server):
    s = started(daemon, manifest(server, max_requests=3))
    assert s["preload"] == "shared"
    master = s["pid"]
    first = answers(daemon, 4)
    assert_forked_from(master, first)
    assert {a["pid"] for a in first} <= {w["pid"] for w in daemon.status()["api"]["workers"]}
    out = daemon.ctl("status", "api").stdout
    assert "preload: shared" in out
    assert "warm-up GET /boom raised RuntimeError: warm-up path that fails" in out  # logged, and the start went on

    # max_requests: each worker ends after 3 requests; the ones the master forks anew share too
    # (uWSGI lets a worker go only once it has lived min-worker-lifetime: requests until a new one answers)
    old = {a["pid"] for a in first}
    respawned = next((a for a in answers_until(daemon, 3000) if a["pid"] not in old), None)
    assert respawned is not None, "no worker was replaced after max_requests"
    assert_forked_from(master, [respawned])

    daemon.ctl("reload", "api", "--timeout", "60")
    s = daemon.status()["api"]
    assert s["pid"] != master and s["preload"] == "shared"
    assert_forked_from(s["pid"], answers(daemon, 4))


@contextlib.contextmanager
def memcached_stand_in():
    """A loopback port that accepts and holds connections, as memcached would; yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(srv.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        thread.join(5)
        for conn in held:
            conn.close()


@pytest.mark.parametrize("hold", ["socket", "thread"])
def test_a_master_holding_a_socket_or_a_thread_after_the_import_is_not_forked(daemon, server, hold):
    with memcached_stand_in() as port:
        s = started(daemon, manifest(server, f"socket:{port}" if hold == "socket" else "thread"))
        why = (
            f"the app connected to 127.0.0.1:{port} at import"
            if hold == "socket"
            else "the app started a thread (import-time-poller) at import"
        )
        assert s["preload"] == f"refused: {why}"
        assert f"preload refused: {why}" in daemon.ctl("status", "api").stdout
        seen = answers(daemon, 6)
        # the service serves, every worker with an app of its own: imported there, nothing frozen, no warm-up
        assert all(a["loaded_in"] == a["pid"] != s["pid"] and a["frozen"] == 0 and a["warmed"] == [] for a in seen)
        assert s["state"] == "running" and s["restarts"] == 0


@pytest.fixture(scope="session")
def sqlalchemy_venv():
    """A venv with SQLAlchemy: placement's, which the placement tests make anyway."""
    return service_venv("placement", "openstack-placement")


@pytest.mark.parametrize("keep", [False, True], ids=["pooled", "checked-out"])
def test_a_pooled_database_connection_is_closed_before_the_fork_and_a_kept_one_refused(
    daemon, server, sqlalchemy_venv, tmp_path, keep
):
    db = tmp_path / "app.sqlite"
    s = started(
        daemon,
        f"""
[services.api]
kind = "api"
server = "{server}"
app = "{APPS / "preload_pool.py"}"
venv = "{sqlalchemy_venv}"
processes = 2
preload = true
environment = {{ POOL_DB = "{db}", POOL_KEEP = "{"1" if keep else ""}" }}
""",
    )
    seen = answers(daemon, 4)
    assert all(a["rows"] == 1 for a in seen)  # the workers connect anew and query the same database
    if keep:
        assert s["preload"].startswith(f"refused: the app opened {db} (fd "), s["preload"]
        assert all(a["loaded_in"] == a["pid"] for a in seen)
    else:
        # the engine's idle connection was closed in the master (Engine.dispose()): nothing held, forked
        assert s["preload"] == "shared"
        assert all(a["loaded_in"] == s["pid"] != a["pid"] and a["frozen"] > 0 for a in seen)


def test_the_guard_names_what_the_app_added_and_the_daemon_reads_its_verdict(tmp_path):
    """In this process: what a master would hold after an import, said as the log and status say it."""
    before = preload.Holdings.now()
    assert preload.refusals(before, "at import") == []
    with socket.socket() as listening, open(tmp_path / "app.log", "w"):
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        said = preload.refusals(before, "at import")
    assert [r.split(" (fd ")[0] for r in said] == [
        f"the app holds a socket bound to 127.0.0.1:{port} at import",
        f"the app opened {tmp_path / 'app.log'}",
    ]
    assert preload.refusals(before, "at import") == []  # closed again: nothing held
    line = preload.refused_line(said)
    assert preload.verdict(line) == "refused: " + "; ".join(said)
    assert preload.verdict(preload.shared_line(12)) == "shared"
    assert preload.verdict("GET / 200") is None


@pytest.mark.parametrize("hold", ["", "thread"], ids=["shared", "refused"])
def test_a_service_with_user_preloads_as_that_user_and_relaunches_as_that_user(daemon, server, hold):
    """The master imports the app as the service's user, and a refused preload starts it again
    (uWSGI then reads its vassal file again from the descriptor the launcher opened)."""
    with local_user("wsgi-h9-preload") as user:
        uid, _ = os_user_ids(user)
        s = started(
            daemon,
            manifest(server, hold) + f'user = "{user}"\nvenv = "{user_venv()}"\nstop_timeout = 2\n',
        )
        assert s["preload"] == (
            "shared" if not hold else "refused: the app started a thread (import-time-poller) at import"
        )
        seen = answers(daemon, 4)
        if hold:
            assert all(a["loaded_in"] == a["pid"] for a in seen)
        else:
            assert_forked_from(s["pid"], seen)
        tree = [s["pid"], *descendants(s["pid"])]
        assert len(tree) >= 3 and {owner_of(pid)[0] for pid in tree} == {uid}
        daemon.ctl("stop", "api")
