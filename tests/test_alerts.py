"""The alerting rules and the Grafana dashboard in contrib/: valid, proven by promtool's unit tests, on real names."""

import contextlib
import json
import math
import re
import runpy
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from support import APPS, ROOT, Daemon, free_port, uwsgi_request, write_manifest

PROMETHEUS = ROOT / "contrib" / "prometheus"
GRAFANA = ROOT / "contrib" / "grafana"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_accepts_the_rules():
    check = promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_unit_tests_of_the_rules_pass():
    run = promtool("test", "rules", "alerts.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_tested_both_firing_and_silent():
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "never seen firing"
    assert names - silent == set(), "never seen silent"


def test_every_alert_tells_where_and_what_to_run():
    for rule in alerts():
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        if "$labels.service" in text:
            for command in ("wsgictl status {{ $labels.service }}", "journalctl -u wsgi@{{ $labels.service }}"):
                assert command in " ".join(text.split()), (rule["alert"], command)
        else:
            assert "journalctl -u wsgi-supervisor" in text, rule["alert"]


# what PromQL writes around metric names: words that are not names
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan", "atan2"}
GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; Grafana's `$variables` and `label_values()` allowed."""
    expr = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers and ranges
    expr = re.sub(GROUPING, " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        is_function = expr[m.end() :].lstrip().startswith("(")
        if not is_function and m.group() not in KEYWORDS:
            names.add(m.group())
    return names


def test_metric_names_are_found_in_expressions():
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(wsgi_a_bucket{service="$service"}[$__rate_interval])))'
        " / on (service) group_left (kind) b:c:rate5m > 2 unless ignoring(code) up offset 5m"
    )
    assert metric_names(expr) == {"wsgi_a_bucket", "b:c:rate5m", "up"}
    assert metric_names('label_values(wsgi_service_info{instance=~"$instance"}, service)') == {"wsgi_service_info"}


def panels(within: list[dict]) -> list[dict]:
    return [p for panel in within for p in (panel, *panels(panel.get("panels", [])))]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((GRAFANA / "wsgi-supervisor.json").read_text())
    exprs = [target["expr"] for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])]
    return exprs + [v["query"] for v in dashboard["templating"]["list"] if "label_values" in str(v.get("query"))]


def test_the_dashboard_is_what_make_dashboard_writes():
    made = runpy.run_path(str(GRAFANA / "make_dashboard.py"))["dashboard"]
    assert (GRAFANA / "wsgi-supervisor.json").read_text() == json.dumps(made, indent=2) + "\n", (
        "run python contrib/grafana/make_dashboard.py"
    )


def test_every_dashboard_expression_is_promql(tmp_path):
    """promtool parses each one, with Grafana's variables given values as Grafana would."""
    grafana = {"$__rate_interval": "1m", "$instance": "ctl1:9180", "$service": "keystone"}
    exprs = [e for e in dashboard_exprs() if not e.startswith("label_values(")]
    for variable, value in grafana.items():
        exprs = [e.replace(variable, value) for e in exprs]
    rules = [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert check.returncode == 0, check.stdout + check.stderr


MANIFEST = f"""
[services.api]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1

[services.green]
kind = "api"
server = "gunicorn"
app = "{APPS / "probe.py"}"
processes = 1

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{APPS / "worker.py"}"]
ready_after = 0.2

[services.broken]
kind = "api"
app = "{APPS / "probe.py"}"
environment = {{ PROBE_FAIL_IMPORT = "a database that never answers" }}
start_limit = 1
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A daemon with an API under each server (each has served a request), a worker, and an API failed for good."""
    port = free_port()
    d = Daemon(
        tmp_path_factory.mktemp("host"),
        extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--sample-interval", "0.5"],
    )
    write_manifest(d.conf_dir, MANIFEST)
    try:
        d.start()
        d.ctl("start", "api", "green", "conductor")
        d.wait_state("broken", "failed")
        for name in ("api", "green"):
            uwsgi_request(d.socket(name), "/")
        d.wait_for(lambda s: s["api"]["requests"] == 1 and s["green"]["requests"] == 1, what="both requests counted")
        d.metrics_address = f"127.0.0.1:{port}"
        yield d
    finally:
        d.stop()


def exported_names(text: str) -> set[str]:
    """Every series name of a scrape, a histogram's _bucket, _sum and _count included."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_the_rules_and_the_dashboard_use_only_names_the_daemon_exports(host):
    scrape = get(f"http://{host.metrics_address}/metrics")
    known = exported_names(scrape) | {"up"} | {rule["record"] for rule in rules() if "record" in rule}
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    assert all(metric_names(expr) for expr in exprs)
    unknown = {expr: sorted(metric_names(expr) - known) for expr in exprs if metric_names(expr) - known}
    assert not unknown, f"not exported: {sorted(set().union(*unknown.values()))}, in {list(unknown)}"


@pytest.fixture
def prometheus(host, tmp_path):
    """A real Prometheus scraping `host` every second under the job name the rules expect, with the rules loaded."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROMETHEUS / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "wsgi-supervisor", "static_configs": [{"targets": [host.metrics_address]}]}
                ],
            }
        )
    )
    args = [f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    prom = subprocess.Popen(
        ["prometheus", *args, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield lambda path: json.loads(get(f"http://127.0.0.1:{port}/api/v1/{path}"))["data"]
    finally:
        prom.terminate()
        prom.wait(10)


def until(ask, check, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check(answer := ask()):
                return answer
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_real_prometheus_evaluates_the_rules_on_a_real_daemon(prometheus):
    """Every rule evaluates without error on real series, and only the failed service raises an alert."""
    alerts = until(
        lambda: prometheus("alerts")["alerts"],
        lambda found: any(a["labels"]["alertname"] == "WsgiServiceFailed" for a in found),
        "WsgiServiceFailed pending",
    )
    assert [(a["labels"]["alertname"], a["labels"].get("service"), a["state"]) for a in alerts] == [
        ("WsgiServiceFailed", "broken", "pending")  # for: 1m
    ]
    assert alerts[0]["labels"]["job"] == "wsgi-supervisor" and alerts[0]["labels"]["instance"]
    groups = until(
        lambda: prometheus("rules")["groups"],
        lambda groups: all(rule["health"] != "unknown" for group in groups for rule in group["rules"]),
        "every rule evaluated",
    )
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for g in groups for rule in g["rules"]}
    assert set(health) == {rule.get("alert") or rule["record"] for rule in rules()}
    assert {name: h for name, h in health.items() if h != ("ok", "")} == {}
    ratios = until(
        lambda: prometheus("query?query=instance_service:wsgi_listen_queue:ratio")["result"],
        lambda result: {r["metric"]["service"] for r in result} >= {"api", "green"},
        "the queue ratio recorded for both APIs",
    )
    assert all(r["value"][1] == "0" for r in ratios)


def test_the_latency_and_5xx_rules_record_what_real_requests_took(host, prometheus):
    def recorded(rule: str) -> dict[str, float]:
        return {r["metric"]["service"]: float(r["value"][1]) for r in prometheus(f"query?query={rule}")["result"]}

    def p99_after_more_requests() -> dict[str, float]:
        for name in ("api", "green"):  # again and again: a rate needs two scrapes that differ
            uwsgi_request(host.socket(name), "/")
        return recorded("instance_service:wsgi_request_duration_seconds:p99_5m")

    until(
        p99_after_more_requests,
        lambda p99: all(p99.get(name, math.nan) > 0 for name in ("api", "green")),
        "a p99 recorded for both APIs",
    )
    ratio = recorded("instance_service:wsgi_responses_5xx:ratio_rate5m")
    assert (ratio.get("api"), ratio.get("green")) == (0.0, 0.0)
