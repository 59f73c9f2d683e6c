"""Three real hosts behind HAProxy, reached by Ansible over SSH and scraped by one Prometheus.

Each host is a systemd container on a private bridge (tests/fleet.py) running the daemon with the
same manifest and nginx in front from `wsgictl proxy-config nginx --vhost`. Run alone with
`pytest -m fleet`.
"""

import collections
import json
import os
import shutil
import threading
import time

import pytest
from fleet import CTL, RUN, fleet_fixture, report

MISSING = [p for p in ("systemd-nspawn", "haproxy", "prometheus", "/usr/sbin/sshd") if shutil.which(p) is None]
pytestmark = [
    pytest.mark.fleet,
    # `make test` installs them: in CI a missing one fails the test instead of skipping it
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"needs {MISSING} (make setup-test)"),
]

MANIFEST = """
[services.hello]
kind = "api"
app = "supervisor.demo.hello:application"
processes = 2
mount = "/hello"
"""


# HAProxy asks each host's daemon whether its API should get requests (README: Health and drain)
fleet = fleet_fixture(MANIFEST, check_path="/health/hello")


def served_by(fleet, count: int) -> collections.Counter:
    """`count` GETs of /hello through HAProxy, one connection each: which host answered each."""
    hosts = collections.Counter()
    for _ in range(count):
        status, headers, body = fleet.get("/hello")
        assert status == 200 and body == b"hello from wsgi-supervisor\n", (status, body)
        hosts[headers["X-Served-By"]] += 1
    return hosts


def test_three_hosts_behind_haproxy(fleet, pytestconfig):
    began = time.monotonic()
    names = {h.name for h in fleet.hosts}

    # Ansible over SSH (the real connection) on every host: the API runs on each
    status = fleet.ansible("fleet", "ansible.builtin.command", f"{CTL} --runtime-dir {RUN} status --json").check()
    assert set(status.results) == names, status.stdout
    for host, result in status.results.items():
        services = {s["name"]: s for s in json.loads(result["stdout"])}
        assert services["hello"]["state"] == "running", (host, services)
    ansible_took = time.monotonic() - began
    for host in fleet.hosts:  # the real connection: each sshd let root in from the LAN side
        assert f"Accepted publickey for root from {fleet.lan_address}" in host.journal("fleet-sshd", 1000), host.name

    # through HAProxy, every host answers, round robin
    sent = 60
    answered = served_by(fleet, sent)
    assert set(answered) == names and sum(answered.values()) == sent, answered

    # Prometheus scrapes the three daemons: their requests add up to what was sent
    def total():
        result = fleet.promql('sum(wsgi_requests_total{service="hello"})')
        return result and float(result[0]["value"][1])

    deadline = time.monotonic() + 30
    while total() != sent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert total() == sent
    per_host = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in fleet.promql('sum by (instance) (wsgi_requests_total{service="hello"})')
    }
    assert per_host == {f"{h.address}:9180": answered[h.name] for h in fleet.hosts}
    assert float(fleet.promql("sum(wsgi_requests_total)")[0]["value"][1]) == sent

    # one host's daemon stops, under load: HAProxy takes it out within its checks, and no
    # request fails meanwhile (the ones that met the host going down are sent to another)
    down = fleet.hosts[-1]
    failures, done = [], threading.Event()

    def load():
        n = 0
        while not done.is_set() and n < 2000:
            n += 1
            try:
                status, _, _ = fleet.get("/hello", timeout=5)
                if status != 200:
                    failures.append(status)
            except OSError as e:
                failures.append(repr(e))
        return n

    loads = [fleet.lan_submit(load) for _ in range(2)]
    time.sleep(0.5)
    stopping = time.monotonic()
    down.run("systemctl", "stop", "wsgi-supervisor")
    stopped = time.monotonic()
    while fleet.haproxy_states()[down.name] != "DOWN":
        assert time.monotonic() - stopped < 10, fleet.haproxy_states()
        time.sleep(0.05)
    noticed = time.monotonic() - stopped
    time.sleep(0.5)
    done.set()
    under_load = sum(f.result() for f in loads)
    # `fall` failed checks `inter` apart, the first up to `inter` after the stop, plus a check's time-out
    bound = fleet.check_interval * (fleet.fall + 1) + 1.0
    report(
        pytestconfig,
        f"{down.name}: systemctl stop took {stopped - stopping:.2f}s, HAProxy had it DOWN {noticed:.2f}s later "
        f"(bound {bound:.1f}s); {under_load} requests meanwhile, {len(failures)} failed",
    )
    assert noticed < bound
    assert not failures, f"{len(failures)} of {under_load} requests failed: {failures[:5]}"
    answered = served_by(fleet, 30)
    assert set(answered) == names - {down.name}, answered

    # a playbook over SSH brings it back (idempotent: only that host changes), HAProxy routes to it again
    playbook = fleet.playbook(
        """
- hosts: fleet
  gather_facts: false
  tasks:
    - name: the daemon runs
      ansible.builtin.systemd_service:
        name: wsgi-supervisor
        state: started
"""
    ).check()
    changed = {h for h, r in playbook.results.items() if r.get("changed")}
    assert changed == {down.name}, playbook.stdout
    deadline = time.monotonic() + 20
    while fleet.haproxy_states()[down.name] != "UP":
        assert time.monotonic() < deadline, fleet.haproxy_states()
        time.sleep(0.1)
    assert set(served_by(fleet, 30)) == names
    report(pytestconfig, f"test body {time.monotonic() - began:.1f}s (the ansible status run {ansible_took:.1f}s)")
