"""Prometheus metrics: a real scrape linted by promtool, a real Prometheus, numbers that are true."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from support import APPS, free_port, metrics_daemon, uwsgi_request

PROBE = APPS / "probe.py"
MANIFEST = f"""
[services.api]
kind = "api"
app = "{PROBE}"
processes = 1
mount = "/api"

[services.other]
kind = "api"
app = "{PROBE}"
processes = 2

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{APPS / "worker.py"}"]
ready_after = 0.2
"""


@pytest.fixture
def served(tmp_path, server):
    """The manifest's services running under `server`, metrics on a port of their own."""
    with metrics_daemon(tmp_path, MANIFEST, server) as d:
        yield d


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def value(text: str, name: str, **labels) -> float | None:
    """The first sample of `name` carrying all of `labels`."""
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, number = line.rsplit(" ", 1)
            got = series[len(name) + 1 : -1].split(",")
            if all(f'{k}="{v}"' in got for k, v in labels.items()):
                return float(number)
    return None


def test_a_real_scrape_passes_promtool(served):
    uwsgi_request(served.socket("api"), "/")
    text = scrape(served.metrics_url)
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for name in (
        "wsgi_service_info",
        "wsgi_service_up",
        "wsgi_service_state",
        "wsgi_service_restarts_total",
        "wsgi_service_start_time_seconds",
        "wsgi_service_ready_duration_seconds",
        "wsgi_requests_total",
        "wsgi_exceptions_total",
        "wsgi_workers",
        "wsgi_listen_queue_length",
        "wsgi_listen_queue_max",
        "wsgi_resident_memory_bytes",
        "wsgi_service_memory_bytes",
        "wsgi_harakiri_total",
        "wsgi_worker_respawns_total",
        "wsgi_cpu_seconds_total",
        "wsgi_supervisor_build_info",
        "wsgi_supervisor_config_last_reload_successful",
        "wsgi_supervisor_config_last_reload_success_timestamp_seconds",
        "wsgi_supervisor_log_lines_dropped_total",
        "process_resident_memory_bytes",
    ):
        assert f"\n{name}" in "\n" + text, name
    assert value(text, "wsgi_service_up", service="conductor", kind="worker") == 1
    assert value(text, "wsgi_service_state", service="api", state="running") == 1
    assert value(text, "wsgi_service_state", service="api", state="failed") == 0
    assert 'mount="/api"' in text
    # the worker's process tree is measured too
    assert value(text, "wsgi_resident_memory_bytes", service="conductor") > 1_000_000
    # and an API's, with its workers by what they do, whichever server runs it
    served.wait_for(lambda s: s["other"]["rss_bytes"] > 1_000_000, what="the API's processes measured")
    text = scrape(served.metrics_url)
    assert value(text, "wsgi_resident_memory_bytes", service="other") > 1_000_000
    assert sum(value(text, "wsgi_workers", service="other", status=st) for st in ("idle", "busy")) == 2


def test_status_json_and_metrics_agree(served):
    for _ in range(7):
        uwsgi_request(served.socket("api"), "/")
    served.wait_for(lambda s: s["api"]["requests"] == 7, what="7 requests counted")
    status = served.status()
    text = scrape(served.metrics_url)
    for name, s in status.items():
        assert value(text, "wsgi_service_up", service=name) == (1.0 if s["state"] == "running" else 0.0)
        assert value(text, "wsgi_service_restarts_total", service=name) == s["restarts"]
    assert value(text, "wsgi_requests_total", service="api") == 7


def test_queue_depth_is_read_from_the_kernel(served):
    """One worker held busy and N more requests waiting on its socket: the metric shows N."""
    sock = served.socket("api")
    holder = threading.Thread(target=uwsgi_request, args=(sock, "/sleep?4"), kwargs={"timeout": 30})
    holder.start()
    served.wait_for(lambda s: any(w["status"] == "busy" for w in s["api"].get("workers", [])), what="busy")
    waiting = []
    for _ in range(4):
        c = socket.socket(socket.AF_UNIX)
        c.connect(str(sock))
        waiting.append(c)
    try:
        text = scrape(served.metrics_url)
        assert value(text, "wsgi_listen_queue_length", service="api") == 4
        assert value(text, "wsgi_listen_queue_max", service="api") >= 100
        assert value(text, "wsgi_listen_queue_length", service="other") == 0
    finally:
        for c in waiting:
            c.close()
        holder.join()


def test_counters_never_go_down_across_reload_and_restart(served):
    for _ in range(5):
        uwsgi_request(served.socket("other"), "/")
    served.wait_for(lambda s: s["other"]["requests"] == 5, what="5 requests")
    before = value(scrape(served.metrics_url), "wsgi_requests_total", service="other")
    served.ctl("reload", "other")
    served.ctl("restart", "other")
    uwsgi_request(served.socket("other"), "/")
    served.wait_for(lambda s: s["other"]["requests"] == 6, what="6 requests")
    text = scrape(served.metrics_url)
    assert before == 5 and value(text, "wsgi_requests_total", service="other") == 6
    assert value(text, "wsgi_service_restarts_total", service="other") == 1


def test_a_real_prometheus_scrapes_every_service(served, tmp_path):
    prom_port = free_port()
    target = served.metrics_url.split("/")[2]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: wsgi\n    static_configs:\n      - targets: ['{target}']\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def query(q: str) -> list[dict]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]

    def until(q, check, timeout=40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = query(q)
                if check(result):
                    return result
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{q}: not as expected")

    try:
        up = until("wsgi_service_up", lambda r: len(r) == 3)
        assert {r["metric"]["service"] for r in up} == {"api", "other", "conductor"}
        assert all(r["value"][1] == "1" for r in up)
        until('rate(wsgi_requests_total{service="api"}[5s])', lambda r: r and float(r[0]["value"][1]) == 0)
        for _ in range(50):
            uwsgi_request(served.socket("api"), "/")
        until('rate(wsgi_requests_total{service="api"}[5s])', lambda r: r and float(r[0]["value"][1]) > 0)
    finally:
        prom.terminate()
        prom.wait(10)
