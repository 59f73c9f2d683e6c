"""The app's own health check as readiness, drain, and what a load balancer asks (/health/NAME: a state,
never the reason, which wsgictl status shows)."""

import asyncio
import signal
import urllib.error
import urllib.request

import pytest

from supervisor.manifest.models import ApiService
from supervisor.observe.health import check
from support import APPS, Daemon, free_port, uwsgi_request, write_manifest

HEALTH = APPS / "health.py"
SERVERS = ["uwsgi", "gunicorn"]


def manifest(server, flag, path="/healthcheck", extra=""):
    return f"""
[services.api]
kind = "api"
server = "{server}"
app = "{HEALTH}"
processes = 1
mount = "/api"
health = "{path}"
health_interval = 0.2
health_timeout = 0.5
health_threshold = 2
environment = {{ HEALTH_FLAG = "{flag}" }}
{extra}
"""


def ask(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--sample-interval", "0.5"])
    d.port = port
    yield d
    d.stop()


@pytest.mark.parametrize("server", SERVERS)
def test_a_failing_health_check_turns_ready_off_and_never_restarts(served, tmp_path, server):
    flag = tmp_path / "disable"
    write_manifest(served.conf_dir, manifest(server, flag))
    served.start()
    served.ctl("start", "api")
    served.wait_for(lambda s: s["api"]["ready"], what="ready once /healthcheck answers 200")
    assert served.status("api")["api"]["health"] == "ok"
    assert ask(served.port, "/health/api") == (200, "api: ok\n")
    pid = served.status("api")["api"]["pid"]

    flag.write_text("")  # the operator disables it, as oslo.middleware's disable_by_file does
    served.wait_for(lambda s: not s["api"]["ready"], what="not ready while /healthcheck answers 503")
    api = served.status("api")["api"]
    assert api["state"] == "running" and api["pid"] == pid and api["restarts"] == 0
    assert api["reason"] == api["health"] == "health check: 503 from /healthcheck"
    assert ask(served.port, "/health/api") == (503, "api: not ready\n")  # the reason: on the control socket
    assert ask(served.port, "/health")[0] == 503
    metrics = ask(served.port, "/metrics")[1]
    assert 'wsgi_service_up{kind="api",service="api"} 0.0' in metrics
    assert uwsgi_request(served.socket("api"), "/api/hi")[0] == 200  # it still serves what reaches it
    assert "not ready: health check: 503 from /healthcheck" in served.ctl("logs", "api").stdout

    flag.unlink()
    served.wait_for(lambda s: s["api"]["ready"], what="ready again once it recovers")
    assert ask(served.port, "/health/api")[0] == 200 and ask(served.port, "/health")[0] == 200
    assert served.status("api")["api"]["pid"] == pid


@pytest.mark.parametrize(
    ("path", "extra", "says"),
    [
        ("/nope", "", "health check: 404 from /nope — is the path right?"),
        ("/moved", "", "health check: 302 from /moved — is the path right?"),
        ("/slowhealth", "", "health check: no answer from /slowhealth within 0.5s"),
    ],
)
def test_a_wrong_health_check_says_why_and_restarts_nothing(served, tmp_path, path, extra, says):
    write_manifest(served.conf_dir, manifest("uwsgi", tmp_path / "flag", path, extra))
    served.start()
    served.ctl("start", "api")
    served.wait_for(lambda s: s["api"].get("health") == says, what=says)
    api = served.status("api")["api"]
    assert api["state"] == "running" and not api["ready"] and api["restarts"] == 0
    assert ask(served.port, "/health/api") == (503, "api: not ready\n")


def test_an_app_that_closes_the_connection_is_a_reason(tmp_path):
    """The prober against a real socket whose peer hangs up without a word."""
    path = tmp_path / "closing.sock"

    async def run():
        server = await asyncio.start_unix_server(lambda r, w: w.close(), path=str(path))
        async with server:
            service = ApiService(kind="api", app="x:y", health="/healthcheck", protocol="http")
            return await check(path, service)

    assert asyncio.run(run()) == "health check: the app closed the connection without answering /healthcheck"


@pytest.mark.parametrize("server", SERVERS)
def test_drain_takes_it_out_of_rotation_and_survives_a_daemon_restart(served, tmp_path, server):
    write_manifest(served.conf_dir, manifest(server, tmp_path / "flag"))
    served.start()
    served.ctl("start", "api")
    served.wait_for(lambda s: s["api"]["ready"], what="ready")
    assert served.ctl("drain", "api").stdout == "api: drained\n"
    assert served.status("api")["api"]["draining"] is True
    assert ask(served.port, "/health/api") == (503, "api: drained\n")
    assert uwsgi_request(served.socket("api"), "/api/hi")[0] == 200  # it keeps serving

    served.proc.send_signal(signal.SIGKILL)  # draining is operator intent, like a stop
    served.proc.wait()
    served.start()
    served.wait_for(lambda s: s["api"]["ready"], what="adopted and ready")
    assert served.status("api")["api"]["draining"] is True
    assert ask(served.port, "/health/api")[0] == 503

    served.ctl("undrain", "api")
    assert ask(served.port, "/health/api") == (200, "api: ok\n")
    assert 'wsgi_service_drained{kind="api",service="api"} 0.0' in ask(served.port, "/metrics")[1]


def test_restart_with_drain_is_out_of_rotation_first_and_back_after(served, tmp_path):
    write_manifest(served.conf_dir, manifest("gunicorn", tmp_path / "flag"))
    served.start()
    served.ctl("start", "api")
    served.wait_for(lambda s: s["api"]["ready"], what="ready")
    import subprocess

    from support import WSGICTL

    restart = subprocess.Popen(
        [str(WSGICTL), "--runtime-dir", str(served.runtime_dir), "restart", "--drain", "1", "api"],
        stdout=subprocess.PIPE,
        text=True,
    )
    served.wait_for(lambda s: s["api"]["draining"], what="drained before the restart")
    assert ask(served.port, "/health/api")[0] == 503
    assert restart.wait(30) == 0
    assert served.status("api")["api"]["draining"] is False
    served.wait_for(lambda s: s["api"]["ready"], what="ready after the restart")
    assert ask(served.port, "/health/api")[0] == 200


def test_stop_drain_takes_the_host_out_of_rotation_before_the_services_stop(tmp_path):
    """--stop-drain: after SIGTERM every /health answers 503 while the API still serves; then it stops."""
    port = free_port()
    d = Daemon(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--stop-drain", "30"])
    write_manifest(d.conf_dir, manifest("uwsgi", tmp_path / "flag"))
    try:
        d.start()
        d.ctl("start", "api")
        d.wait_for(lambda s: s["api"]["ready"], what="ready")
        assert ask(port, "/health/api") == (200, "api: ok\n")

        d.proc.send_signal(signal.SIGTERM)
        leaving = "the daemon is stopping (--stop-drain): out of rotation, still serving"
        d.wait_for(lambda s: ask(port, "/health/api")[0] == 503, what="out of rotation after SIGTERM")
        assert ask(port, "/health/api") == (503, f"api: {leaving}\n")
        assert ask(port, "/health") == (503, f"host: {leaving}\n")
        assert uwsgi_request(d.socket("api"), "/api/hi")[0] == 200  # still serving meanwhile
        assert d.proc.poll() is None

        d.proc.send_signal(signal.SIGTERM)  # a second one ends the wait: the services stop now
        assert d.proc.wait(20) == 0
        assert "out of rotation for 30s first (--stop-drain), still serving" in d.output()
    finally:
        d.stop()
