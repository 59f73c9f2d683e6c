"""One log pipeline: journald (a real one), files, the in-memory tail and `wsgictl logs`."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import APPS, ROOT, WSGICTL, Daemon, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"
WORKER = APPS / "worker.py"

MANIFEST = f"""
[services.api]
kind = "api"
app = "{PROBE}"
processes = 1

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{WORKER}"]
notify = true
environment = {{ WORKER_NOTIFY_AFTER = "0.2" }}
"""


def journal(journal_dir: Path, *args: str) -> list[dict]:
    out = subprocess.run(
        ["journalctl", "-D", str(journal_dir), "-o", "json", "--no-pager", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_line_reaches_a_real_journald_with_its_fields(tmp_path, server):
    journal_dir = tmp_path / "journal"
    d = Daemon(
        tmp_path,
        wrapper=[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            str(ROOT / "tests" / "journal-ns"),
            str(journal_dir),
        ],
        extra_args=["--quiet"],
    )
    write_manifest(d.conf_dir, MANIFEST, server=server)
    d.start()
    try:
        d.ctl("start", "api", "conductor")
        assert uwsgi_request(d.socket("api"), "/log?hello-journal")[0] == 200
        time.sleep(0.5)
    finally:
        d.stop()

    entries = journal(journal_dir)
    api = [e for e in entries if e.get("WSGI_SERVICE") == "api"]
    worker = [e for e in entries if e.get("WSGI_SERVICE") == "conductor"]
    for e in api + worker:
        assert e["OBJECT_SYSTEMD_UNIT"] == f"wsgi@{e['WSGI_SERVICE']}.service"
    assert {e["WSGI_KIND"] for e in api} == {"api"} and {e["WSGI_KIND"] for e in worker} == {"worker"}

    def one(entries, text):
        found = [e for e in entries if text in e["MESSAGE"]]
        assert found, f"no entry with {text!r}"
        return found[0]

    # the app's own output, the server's messages, the request log: same service, same pipeline
    imported = one(api, "probe app imported")
    assert imported["SYSLOG_IDENTIFIER"] == "api"
    spawned = "spawned uWSGI worker 1" if server == "uwsgi" else "Booting worker with pid"
    assert one(api, spawned)["SYSLOG_IDENTIFIER"] == "api"
    asked = one(api, "ERROR probe asked to log: hello-journal")
    assert asked["PRIORITY"] == "3"
    request = one(api, "GET /log")
    assert request["REQUEST_METHOD"] == "GET" and request["REQUEST_STATUS"] == "200"
    assert request["REQUEST_PATH"] == "/log?hello-journal" and int(request["REQUEST_DURATION_US"]) >= 0
    assert request["WSGI_STREAM"] == "request"
    # the worker's lines, with the level read from the line
    assert one(worker, "ERROR: a line at error level")["PRIORITY"] == "3"
    assert one(worker, "starting, argv=")["SYSLOG_IDENTIFIER"] == "conductor"
    # the daemon about a service, under that service's unit
    state = one(worker, "starting -> running")
    assert state["SYSLOG_IDENTIFIER"] == "wsgi-supervisor"
    # and the daemon itself
    assert any(e.get("SYSLOG_IDENTIFIER") == "wsgi-supervisor" and "emperor started" in e["MESSAGE"] for e in entries)

    # journalctl -u wsgi@NAME shows that service's lines
    by_unit = journal(journal_dir, "-u", "wsgi@api.service")
    assert any("probe app imported" in e["MESSAGE"] for e in by_unit)
    assert not any(e.get("WSGI_SERVICE") == "conductor" for e in by_unit)


def test_files_one_format_rotated_by_size(tmp_path, server):
    logs = tmp_path / "logs"
    d = Daemon(
        tmp_path, extra_args=["--log-dir", str(logs), "--log-max-bytes", "40000", "--log-keep", "3", "--journal", "no"]
    )
    write_manifest(
        d.conf_dir,
        MANIFEST
        + f"""
[services.chatty]
kind = "worker"
command = ["{sys.executable}", "{WORKER}"]
environment = {{ WORKER_BURST = "3000" }}
ready_after = 0.1
""",
        server=server,
    )
    d.start()
    try:
        d.ctl("start", "api", "conductor", "chatty")
        uwsgi_request(d.socket("api"), "/")
        d.wait_for(lambda s: (logs / "chatty.log").exists() and "burst done" in (logs / "chatty.log").read_text())
    finally:
        d.stop()
    rotated = sorted(p.name for p in logs.glob("chatty.log*"))
    assert rotated == ["chatty.log", "chatty.log.1", "chatty.log.2", "chatty.log.3"]
    assert all(p.stat().st_size <= 40000 + 200 for p in logs.glob("chatty.log*"))
    api_lines = (logs / "api.log").read_text().splitlines()
    request = next(line for line in api_lines if " request " in line)
    # time, service, stream, level, text
    _stamp, service, stream, level, text = request.split(" ", 4)
    assert service == "api" and stream == "request" and level == "INFO" and text.startswith("GET / 200")
    assert (logs / "conductor.log").read_text().count("ERROR: a line at error level") == 1
    assert "emperor started" in (logs / "wsgi-supervisor.log").read_text()


def test_logs_follow_and_interleave(daemon, server):
    write_manifest(daemon.conf_dir, MANIFEST, server=server)
    daemon.start()
    daemon.ctl("start", "api", "conductor")
    recent = daemon.ctl("logs", "api", "conductor", "-n", "200").stdout.splitlines()
    services = {line.split()[1] for line in recent}
    assert services == {"api", "conductor"}
    stamps = [line.split()[0] for line in recent]
    assert stamps == sorted(stamps)  # one stream, in time order

    follower = subprocess.Popen(
        [str(WSGICTL), "--runtime-dir", str(daemon.runtime_dir), "logs", "api", "-n", "0", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        uwsgi_request(daemon.socket("api"), "/followed")
        deadline = time.monotonic() + 10
        seen = ""
        while time.monotonic() < deadline and "GET /followed" not in seen:
            seen += follower.stdout.readline()
        assert "GET /followed 200" in seen
    finally:
        follower.terminate()
        follower.wait(5)


@pytest.mark.busy
def test_a_burst_of_100000_lines_arrives_whole(tmp_path):
    logs = tmp_path / "logs"
    d = Daemon(
        tmp_path, extra_args=["--log-dir", str(logs), "--quiet", "--journal", "no", "--log-max-bytes", "100000000"]
    )
    write_manifest(
        d.conf_dir,
        f"""
[services.burst]
kind = "worker"
command = ["{sys.executable}", "{WORKER}"]
environment = {{ WORKER_BURST = "100000" }}
ready_after = 0.1
""",
    )
    d.start()
    try:
        d.wait_for(
            lambda s: (logs / "burst.log").exists() and "burst done" in (logs / "burst.log").read_text(),
            timeout=120,
            what="the burst to be written",
        )
    finally:
        d.stop()
    numbers = [
        int(line.rsplit(" ", 1)[1]) for line in (logs / "burst.log").read_text().splitlines() if "burst line" in line
    ]
    assert numbers == list(range(100000))


@pytest.mark.busy
def test_an_api_that_prints_100000_lines_at_import_loses_none_and_lives(tmp_path, server):
    """uWSGI gives workers a non-blocking stdout; a fast writer would crash on BlockingIOError."""
    logs = tmp_path / "logs"
    args = ["--log-dir", str(logs), "--quiet", "--journal", "no", "--log-max-bytes", "100000000"]
    d = Daemon(tmp_path, extra_args=args)
    loud = APPS / "loud.py"
    write_manifest(d.conf_dir, f'[services.loud]\nkind = "api"\napp = "{loud}"\nprocesses = 1\n', server=server)
    d.start()
    try:
        d.ctl("start", "loud", "--timeout", "120")
        assert uwsgi_request(d.socket("loud"))[0] == 200
    finally:
        d.stop()
    lines = (logs / "loud.log").read_text().splitlines()
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines if "loud line" in line]
    assert numbers == list(range(100000))
    assert any("loud done" in line for line in lines)


def test_a_full_disk_costs_log_lines_not_services(tmp_path, server):
    logs = tmp_path / "logs"
    logs.mkdir()
    # a real full disk: a small tmpfs, filled up but for room set aside in conductor.log (a link to
    # /dev/full would be refused: log files are never opened through a link)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(logs)], check=True)
    d = Daemon(tmp_path, extra_args=["--log-dir", str(logs), "--journal", "no"])
    try:
        (logs / "conductor.log").touch()
        subprocess.run(["fallocate", "--keep-size", "-l", "128k", str(logs / "conductor.log")], check=True)
        subprocess.run(["dd", "if=/dev/zero", f"of={logs / 'filler'}", "bs=4k"], capture_output=True, check=False)
        write_manifest(d.conf_dir, MANIFEST, server=server)
        d.start()
        d.ctl("start", "api", "conductor")
        for _ in range(5):
            assert uwsgi_request(d.socket("api"), "/")[0] == 200
        assert d.status()["api"]["state"] == "running"
        out = d.ctl("logs", "wsgi-supervisor", "-n", "500").stdout
        assert "log files: dropped lines" in out and "No space left on device" in out
        ping = json.loads(
            subprocess.run(
                [str(WSGICTL), "--runtime-dir", str(d.runtime_dir), "status", "--json"], capture_output=True, text=True
            ).stdout
        )
        assert ping  # the daemon still answers
        assert (logs / "conductor.log").read_text()  # other services' files are written
    finally:
        try:
            d.stop()
        finally:
            subprocess.run(["umount", str(logs)], check=False)
