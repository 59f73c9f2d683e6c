"""A quiet console, nothing lost: the servers' banners and routine notices are kept at debug
priority in the log, off the daemon's console and off `wsgictl logs` unless `-v`."""

import pytest

from supervisor.gunicorn.noise import is_noise as gunicorn_noise
from supervisor.uwsgi.noise import is_noise as uwsgi_noise
from support import APPS, Daemon, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"
# lines each server writes at every start, which a person does not need to read
BANNER = {
    "uwsgi": ("detected binary path", "*** Starting uWSGI", "uWSGI running as root", "mapped "),
    "gunicorn": ("Booting worker with pid", "Listening at: unix:", "Starting gunicorn"),
}


@pytest.mark.parametrize(
    "line",
    [
        "*** WARNING: you are running uWSGI as root !!! (use the --uid flag) *** ",
        "mapped 403029 bytes (393 KB) for 2 cores",
        "Wed Dec  2 12:59:25 2026 - *** worker 2 suspended ***",
        "Wed Dec  2 12:59:18 2026 - [emperor] vassal hello.ini has been spawned",
        "announcing my loyalty to the Emperor...",
    ],
)
def test_uwsgi_routine_lines(line):
    assert uwsgi_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        "DAMN ! worker 1 (pid: 4242) died, killed by signal 9 :( trying respawn ...",
        "*** HARAKIRI ON WORKER 1 (pid: 4242, try: 1) ***",
        "unable to load app 0 (mountpoint='') (callable not found or import error)",
        "2026-12-02 12:59:18.123 4242 INFO placement.requestlog [req-1 - - - - - -] 127.0.0.1 GET /",
        "running migrations",
        "Wed Dec  2 12:59:18 2026 - [emperor] vassal api.ini sent no heartbeat in last 30 seconds, brutally respawning",
        "[emperor] unloyal bad behaving vassal found: api.ini throttling it...",
    ],
)
def test_what_tells_of_trouble_or_comes_from_the_app_is_not_routine(line):
    assert not uwsgi_noise(line) and not gunicorn_noise(line)


def test_gunicorn_routine_lines_are_its_info_ones():
    assert gunicorn_noise("[2026-12-02 12:59:18 +0000] [13425] [INFO] Booting worker with pid: 13425")
    assert not gunicorn_noise("[2026-12-02 12:59:18 +0000] [13425] [ERROR] Exception in worker process")
    assert not gunicorn_noise("[2026-12-02 12:59:18 +0000] [13425] [WARNING] Worker exiting (pid: 13425)")


def test_console_shows_a_handful_of_lines_and_the_log_keeps_the_rest(tmp_path, server):
    logs = tmp_path / "logs"
    d = Daemon(tmp_path, extra_args=["--log-dir", str(logs), "--journal", "no"])
    services = "".join(
        f'\n[services.{name}]\nkind = "api"\napp = "{PROBE}"\nprocesses = 2\n' for name in ("alpha", "beta")
    )
    write_manifest(d.conf_dir, services, server=server)
    d.start()
    try:
        d.ctl("start", "alpha", "beta")
        assert uwsgi_request(d.socket("alpha"), "/hello-console")[0] == 200
        d.wait_for(lambda st: st["alpha"].get("responses"), what="the request counted")
        hidden = d.ctl("logs", "alpha", "-n", "200").stdout
        shown = d.ctl("logs", "-v", "alpha", "-n", "200").stdout
    finally:
        d.stop()
    console = d.log_path.read_text().splitlines()
    for banner in BANNER[server]:
        assert not any(banner in line for line in console), banner
        assert banner not in hidden and banner in shown, banner
    # what a person needs is there: state changes, the app's own output, the request
    assert any("alpha: starting -> running" in line for line in console)
    assert any(line.startswith("alpha") and "probe app imported" in line for line in console)
    assert any(line.startswith("alpha") and "GET /hello-console 200" in line for line in console)
    for name in ("alpha", "beta"):
        own = [line for line in console if line.startswith(f"{name} ")]
        assert len(own) <= 8, own  # a handful a service: the app's import in each worker, requests
    # nothing lost: the files have every banner line, at debug level
    text = (logs / "alpha.log").read_text().splitlines()
    for banner in BANNER[server]:
        kept = [line for line in text if banner in line]
        assert kept and all(line.split(" ", 4)[3] == "DEBUG" for line in kept), banner
