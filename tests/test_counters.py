"""Counters that never go down and count every request, across reloads, re-execs and daemon restarts;
requests a stop had to cut are said and counted; every line of a reload belongs to its service."""

import threading
import time

from test_metrics import scrape, value

from support import APPS, Daemon, free_port, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"


def one_api(daemon, extra="", server=None):
    write_manifest(
        daemon.conf_dir,
        f"""
[services.api]
kind = "api"
app = "{PROBE}"
{extra or "processes = 2"}
""",
        server=server,
    )


def requests_total(daemon) -> int:
    return daemon.status()["api"]["requests"]


def send(daemon, n):
    for _ in range(n):
        assert uwsgi_request(daemon.socket("api"))[0] == 200


def wait_total(daemon, n, timeout=20.0):
    """Wait for the daemon's total to reach n (the sampler runs every --sample-interval)."""
    daemon.wait_for(lambda s: s["api"]["requests"] >= n, timeout, f"{n} requests counted")
    assert requests_total(daemon) == n


def test_totals_are_exact_across_reloads_reexec_and_restart(tmp_path, server):
    daemon = Daemon(tmp_path, extra_args=["--sample-interval", "1"])
    try:
        one_api(daemon, server=server)
        daemon.start()
        daemon.wait_state("api", "running")
        send(daemon, 30)
        wait_total(daemon, 30)

        # a burst right before a reload: the old vassal's last requests count once it retires
        send(daemon, 7)
        daemon.ctl("reload", "api")
        send(daemon, 3)
        daemon.ctl("reload", "api")
        wait_total(daemon, 40)

        # an upgrade in place keeps the totals (they are in the state file, not only in memory)
        daemon.ctl("daemon-reexec")
        daemon.wait_control()
        daemon.wait_state("api", "running")
        assert requests_total(daemon) == 40
        send(daemon, 5)
        wait_total(daemon, 45)

        # so does a clean restart of the daemon on the same runtime dir (every vassal new)
        daemon.stop(remove=False)
        daemon.start()
        daemon.wait_state("api", "running")
        assert requests_total(daemon) == 45
        send(daemon, 1)
        wait_total(daemon, 46)
    finally:
        daemon.stop()


def test_a_request_cut_by_a_reload_is_said_and_counted(tmp_path, server):
    port = free_port()
    daemon = Daemon(tmp_path, extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
    try:
        cut_by_a_reload(daemon, port, server)
    finally:
        daemon.stop()


def cut_by_a_reload(daemon, port, server):
    one_api(daemon, "stop_timeout = 1\nthreads = 2", server)
    daemon.start()
    daemon.wait_state("api", "running")
    outcome = {}

    def long_request():
        try:
            outcome["status"] = uwsgi_request(daemon.socket("api"), "/sleep?6", timeout=20)[0]
        except OSError as exc:
            outcome["error"] = exc

    client = threading.Thread(target=long_request)
    client.start()
    time.sleep(0.5)  # the request is in the worker now
    daemon.ctl("reload", "api")
    client.join(20)
    assert "error" in outcome or outcome.get("status") != 200  # the client saw it cut
    s = daemon.wait_for(lambda s: s["api"]["requests_killed"] == 1, what="a killed request counted")["api"]
    assert s["state"] == "running"
    logs = daemon.ctl("logs", "api", "-n", "200").stdout
    assert "1 request still in flight ended (raise stop_timeout for long requests)" in logs
    assert value(scrape(f"http://127.0.0.1:{port}/metrics"), "wsgi_requests_killed_total", service="api") == 1
    assert uwsgi_request(daemon.socket("api"))[0] == 200


def test_every_line_of_a_reload_belongs_to_the_service(daemon, server):
    one_api(daemon, server=server)
    daemon.start()
    daemon.wait_state("api", "running")
    daemon.ctl("reload", "api")
    logs = daemon.ctl("logs", "-v", "api", "-n", "200").stdout  # -v: these are the servers' routine lines
    # the first lines of the second instance: the vassal's, or the second arbiter's
    if server == "uwsgi":
        assert "getting INI configuration from" in logs and "api.b.ini" in logs
        first = "getting INI configuration"
    else:
        pid = daemon.status()["api"]["pid"]
        assert f"Listening at: unix:{daemon.socket('api')} ({pid})" in logs
        first = "Starting gunicorn"
    daemon_lines = daemon.ctl("logs", "-v", "wsgi-supervisor", "-n", "200").stdout
    assert first not in daemon_lines and "has_emperor mode" not in daemon_lines
