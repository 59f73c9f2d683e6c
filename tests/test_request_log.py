"""The request lines of both servers: latency and responses (metrics, status), request ids,
lines left out of the log (health probes, request_log_skip), and `--log-format json`."""

import json
import subprocess

import pytest
from test_metrics import free_port, scrape, value

from supervisor import request_marks as marks
from supervisor.manifest.loading import load
from supervisor.manifest.models import ManifestError
from supervisor.observe.latency import BUCKETS, RequestCounts
from supervisor.uwsgi.core import parse_request
from support import APPS, Daemon, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"


def test_request_line_fields_and_the_format_of_an_earlier_daemon():
    req = parse_request("GET 404 1500 12 127.0.0.1 req-7c1e - /v3/auth tokens?x=1")
    assert (req.status, req.request_id, req.probe, req.path) == (404, "req-7c1e", False, "/v3/auth tokens?x=1")
    probe = parse_request("GET 200 900 2 - - probe /healthcheck")
    assert probe.probe and probe.request_id is None and probe.path == "/healthcheck"
    old = parse_request("GET 200 1500 12 127.0.0.1 /v3/auth tokens?x=1")  # a vassal of an earlier daemon
    assert old.path == "/v3/auth tokens?x=1" and old.request_id is None and not old.probe


def test_request_id_and_probe_marks():
    both = [("X-Request-Id", "other"), ("x-openstack-request-id", "req-1")]
    assert marks.request_id(both) == "req-1"  # oslo's header first, whatever its case
    assert marks.request_id([("X-Request-Id", " a b ")]) == "ab"  # one token in the line
    assert marks.request_id([("Content-Type", "text/plain"), ("X-Request-Id", "-")]) is None
    token = "f" * 32
    assert marks.origin({marks.PROBE_ENVIRON: token}, token) == "probe"
    assert marks.origin({marks.PROBE_ENVIRON: "0" * 32, "HTTP_USER_AGENT": marks.PROBE_AGENT}, token) == "-"
    assert marks.origin({marks.PROBE_ENVIRON: ""}, "") == "-"


def test_latency_buckets_are_cumulative_and_bounds_inclusive():
    counts = RequestCounts()
    for status, seconds in ((200, 0.005), (200, 0.3), (404, 0.02), (503, 40.0), (101, 0.001)):
        counts.observe(status, seconds)
    latency = counts.latency()
    assert latency["le"] == list(BUCKETS) and len(latency["counts"]) == len(BUCKETS) + 1
    assert latency["counts"][0] == 1  # 0.005 is in the le=0.005 bucket
    assert latency["counts"][BUCKETS.index(0.025)] == 2 and latency["counts"][BUCKETS.index(0.5)] == 3
    assert latency["counts"][-2] == 3 and latency["counts"][-1] == 4  # 40 s only in +Inf; a 1xx in none
    assert counts.responses() == {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}


def test_request_log_skip_is_checked(tmp_path):
    (tmp_path / "a.toml").write_text(
        f'[services.api]\nkind = "api"\napp = "{PROBE}"\nrequest_log_skip = ["healthcheck", "/ok"]\n'
    )
    with pytest.raises(ManifestError) as err:
        load(tmp_path, check_host=False)
    assert "key 'request_log_skip'" in str(err.value) and "'healthcheck' is not a path prefix" in str(err.value)


def manifest(server: str) -> str:
    return f"""
[services.api]
kind = "api"
server = "{server}"
app = "{PROBE}"
processes = 2
mount = "/api"
health = "/healthcheck"
health_interval = 0.2
request_log_skip = ["/lb-check"]
"""


def test_latency_responses_ids_and_skipped_lines(tmp_path, server):
    port = free_port()
    logs = tmp_path / "logs"
    args = ["--metrics-listen", f"127.0.0.1:{port}", "--log-dir", str(logs), "--journal", "no", "--log-format", "json"]
    d = Daemon(tmp_path, extra_args=args)
    write_manifest(d.conf_dir, manifest(server))
    d.start()
    try:
        d.ctl("start", "api")
        sock = d.socket("api")
        asked = {
            "/api/": 200,
            "/api/rid?req-5d1bd1a2-aaaa": 200,
            "/api/xrid?abc-123": 200,
            "/api/status?404": 404,
            "/api/status?500": 500,
            "/api/status?302": 302,
            "/api/sleep?0.3": 200,
            "/api/lb-check": 200,
            "/api/lb-check?deep": 200,
        }
        for path, code in asked.items():
            assert uwsgi_request(sock, path)[0] == code, path
        # a client cannot pass for the daemon's probe: not by its User-Agent, nor by a guessed token
        posing = {"User-Agent": "wsgi-supervisor-health", "X-Wsgi-Supervisor-Probe": "0" * 32}
        assert uwsgi_request(sock, "/api/healthcheck?posing", headers=posing)[0] == 200
        asked["/api/healthcheck?posing"] = 200
        d.wait_for(lambda st: st["api"].get("responses", {}).get("2xx") == 7, what="every request counted")
        s = d.status()["api"]
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        d.ctl("daemon-reexec")  # the next daemon carries the counts on
        again = d.status()["api"]
    finally:
        d.stop()
    assert_counted(s, again, text)
    assert_logged(logs, d, asked)


def assert_counted(s: dict, again: dict, text: str) -> None:
    # status --json: every request but the daemon's own health probes (which ran every 0.2 s meanwhile)
    assert s["responses"] == {"2xx": 7, "3xx": 1, "4xx": 1, "5xx": 1}
    assert s["latency"]["le"] == list(BUCKETS) and s["latency"]["counts"][-1] == 10
    assert s["latency"]["counts"][BUCKETS.index(0.25)] <= 9  # the 0.3 s sleep is above 0.25
    assert s["latency"]["sum"] >= 0.3
    assert again["responses"] == s["responses"] and again["latency"]["counts"] == s["latency"]["counts"]
    # the same numbers in a real scrape, which promtool accepts
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert value(text, "wsgi_responses_total", service="api", code="2xx") == 7
    assert value(text, "wsgi_responses_total", service="api", code="5xx") == 1
    assert value(text, "wsgi_request_duration_seconds_count", service="api", code="2xx") == 7
    assert value(text, "wsgi_request_duration_seconds_bucket", service="api", code="2xx", le="+Inf") == 7
    assert value(text, "wsgi_request_duration_seconds_bucket", service="api", code="2xx", le="0.25") <= 6
    assert value(text, "wsgi_request_duration_seconds_bucket", service="api", code="4xx", le="30.0") == 1


def assert_logged(logs, d: Daemon, asked: dict[str, int]) -> None:
    # --log-format json: one object a line, journald's field names
    entries = [json.loads(line) for line in (logs / "api.log").read_text().splitlines()]
    requests = [e for e in entries if e.get("WSGI_STREAM") == "request"]
    paths = [e["REQUEST_PATH"] for e in requests]
    assert sorted(paths) == sorted(p for p in asked if "lb-check" not in p)  # skipped: counted, not logged
    assert [p for p in paths if "healthcheck" in p] == ["/api/healthcheck?posing"]  # the daemon's probes: neither
    by_path = {e["REQUEST_PATH"]: e for e in requests}
    assert by_path["/api/rid?req-5d1bd1a2-aaaa"]["REQUEST_ID"] == "req-5d1bd1a2-aaaa"
    assert by_path["/api/xrid?abc-123"]["REQUEST_ID"] == "abc-123"
    assert "REQUEST_ID" not in by_path["/api/"]
    assert by_path["/api/status?500"]["REQUEST_STATUS"] == "500" and by_path["/api/status?500"]["PRIORITY"] == "4"
    for e in requests:
        assert e["WSGI_SERVICE"] == "api" and e["SYSLOG_IDENTIFIER"] == "api" and int(e["__REALTIME_TIMESTAMP"]) > 0
    assert "req-5d1bd1a2-aaaa" in by_path["/api/rid?req-5d1bd1a2-aaaa"]["MESSAGE"]
    # and the console too: JSON objects only
    console = [json.loads(line) for line in d.log_path.read_text().splitlines() if line.strip()]
    assert any(e.get("REQUEST_ID") == "req-5d1bd1a2-aaaa" for e in console)
    assert any(e["MESSAGE"] == "api: starting -> running" for e in console)
