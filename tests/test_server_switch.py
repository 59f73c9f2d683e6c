"""An API moved from one WSGI server to the other by a manifest change, under load: nothing fails."""

import psutil
import pytest

from support import APPS, Load, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"


def manifest(server):
    return f"""
[services.moving]
kind = "api"
server = "{server}"
app = "{PROBE}"
processes = 2
"""


def server_header(daemon) -> str | None:
    _, headers, _ = uwsgi_request(daemon.socket("moving"), "/")
    return {k.lower(): v for k, v in headers.items()}.get("server")


@pytest.mark.parametrize(("before", "after"), [("uwsgi", "gunicorn"), ("gunicorn", "uwsgi")])
def test_moving_an_api_to_another_server_fails_no_request(daemon, before, after):
    write_manifest(daemon.conf_dir, manifest(before))
    daemon.start()
    daemon.ctl("start", "moving")
    old = daemon.status("moving")["moving"]
    inode = daemon.socket("moving").stat().st_ino
    with Load(daemon.socket("moving"), threads=4) as load:
        load.wait_for_requests(200)
        write_manifest(daemon.conf_dir, manifest(after))
        out = daemon.ctl("reload-config").stdout
        assert "1 changed" in out
        daemon.wait_for(
            lambda status: status["moving"]["pid"] != old["pid"] and status["moving"]["state"] == "running",
            what=f"moving running under {after}",
        )
        load.wait_for_requests(200)
    assert load.failures == [], load.failures[:5]
    assert daemon.socket("moving").stat().st_ino == inode  # the very socket, handed over
    # gunicorn names itself in a Server header; uWSGI's vassal does not
    assert (server_header(daemon) == "gunicorn") == (after == "gunicorn")
    daemon.wait_for(lambda _: not psutil.pid_exists(old["pid"]), what="the old server gone")


def test_a_drained_api_stays_drained_under_its_new_server(daemon):
    """Drained is the operator's intent for the service: a move to another server keeps it."""
    write_manifest(daemon.conf_dir, manifest("uwsgi"))
    daemon.start()
    daemon.ctl("start", "moving")
    daemon.ctl("drain", "moving")
    write_manifest(daemon.conf_dir, manifest("gunicorn"))
    daemon.ctl("reload-config")
    daemon.wait_for(lambda s: s["moving"]["server"] == "gunicorn" and s["moving"]["ready"], what="moved")
    assert daemon.status("moving")["moving"]["draining"] is True
