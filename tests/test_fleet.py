"""Three real hosts behind HAProxy, rolled by Ansible over SSH, scraped by one Prometheus.

Each host is a systemd container on a private bridge (tests/fleet.py) running the daemon with the
same manifest and nginx in front from `wsgictl proxy-config nginx --vhost`; HAProxy asks each
daemon's /health/api. Under steady load through HAProxy: a rolling reload, a rolling restart and a
manifest change (contrib/ansible/rolling.yml) fail no request; a daemon stopped with --stop-drain
fails none; a host killed outright costs only the requests it had in flight. The tests run in
this order on one fleet, the kill last. Alone: `pytest -m fleet`.
"""

import collections
import contextlib
import json
import os
import shutil
import threading
import time

import pytest
import tomli_w
from fleet import CTL, ROOT, RUN, fleet_fixture, http_get, report

MISSING = [p for p in ("systemd-nspawn", "haproxy", "prometheus", "/usr/sbin/sshd") if shutil.which(p) is None]
pytestmark = [
    pytest.mark.fleet,
    # `make test` installs them: in CI a missing one fails the test instead of skipping it
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"needs {MISSING} (make setup-test)"),
]

# the probe app: /sleep?S holds a worker S seconds, and every answer says which pid served it
API = {"kind": "api", "app": str(ROOT / "tests/apps/probe.py"), "processes": 2, "threads": 2, "mount": "/api"}
# the harness's manifest file, which the role is told to write (wsgi_supervisor_manifest_name)
MANIFEST_NAME = "fleet.toml"
STOP_DRAIN = 3.0  # seconds out of rotation before a stopping daemon stops its services

fleet = fleet_fixture(
    tomli_w.dumps({"services": {"api": API}}),
    check_path="/health/api",  # HAProxy asks each host's daemon (docs/health.md)
    daemon_args=("--stop-drain", str(STOP_DRAIN)),
)


class Load:
    """`clients` clients through HAProxy, each sending one request at a time until the block ends:
    how many each host served, and every failure (a status other than 200, or an error)."""

    def __init__(self, fleet, clients: int = 4, path: str = "/api/sleep?0.02"):
        self.fleet, self.clients, self.path = fleet, clients, path
        self.served: collections.Counter[str] = collections.Counter()
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._done = threading.Event()

    def __enter__(self) -> "Load":
        self._futures = [self.fleet.lan_submit(self._client) for _ in range(self.clients)]
        deadline = time.monotonic() + 10
        while self.total < self.clients * 3:  # every client is under way
            assert time.monotonic() < deadline and not self.failed, self.failed
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)  # the load goes on a little after the operation
        self._done.set()
        for future in self._futures:
            future.result()

    def _client(self) -> None:
        while not self._done.is_set():
            try:
                status, headers, body = http_get(self.fleet.lan_address, self.fleet.lan_port, self.path)
            except OSError as e:
                failure = repr(e)
            else:
                failure = None if status == 200 else f"{status} from {headers.get('X-Served-By')}: {body[:100]!r}"
            with self._lock:
                if failure is None:
                    self.served[headers["X-Served-By"]] += 1
                else:
                    self.failed.append(failure)

    @property
    def total(self) -> int:
        return sum(self.served.values()) + len(self.failed)

    def says(self) -> str:
        return f"{self.total} requests ({dict(sorted(self.served.items()))}), {len(self.failed)} failed"


class RotationWatch:
    """HAProxy's view of each host, every 50 ms while the block runs."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.seen: list[dict[str, str]] = []
        self._done = threading.Event()

    def __enter__(self) -> "RotationWatch":
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(OSError):
                self.seen.append(self.fleet.haproxy_states())
            time.sleep(0.05)

    def out_in_turn(self) -> list[str]:
        """The hosts in the order they went out of rotation (each counted once per time out)."""
        order, out = [], set()
        for states in self.seen:
            now = {h for h, s in states.items() if not s.startswith("UP")}
            order += sorted(now - out)
            out = now
        return order

    def most_out_at_once(self) -> int:
        return max((sum(not s.startswith("UP") for s in states.values()) for states in self.seen), default=0)


def all_up(fleet, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while set(fleet.haproxy_states().values()) != {"UP"}:
        assert time.monotonic() < deadline, fleet.haproxy_states()
        time.sleep(0.1)


def answers(fleet, host, path: str = "/api/env") -> dict:
    """What the API says, asked on the host's own nginx (not through HAProxy)."""
    status, _, body = fleet.get(path, port=fleet.nginx_port, address=host.address)
    assert status == 200, (host.name, status, body)
    return json.loads(body)


def test_three_hosts_behind_haproxy(fleet, pytestconfig):
    began = time.monotonic()
    names = {h.name for h in fleet.hosts}

    # Ansible over SSH (the real connection) on every host: the API runs on each
    status = fleet.ansible("fleet", "ansible.builtin.command", f"{CTL} --runtime-dir {RUN} status --json").check()
    assert set(status.results) == names, status.stdout
    for host, result in status.results.items():
        services = {s["name"]: s for s in json.loads(result["stdout"])}
        assert services["api"]["state"] == "running", (host, services)
    for host in fleet.hosts:  # the real connection: each sshd let root in from the LAN side
        assert f"Accepted publickey for root from {fleet.lan_address}" in host.journal("fleet-sshd", 1000), host.name

    # through HAProxy, every host answers, round robin
    sent = 60
    answered = collections.Counter()
    for _ in range(sent):
        status, headers, body = fleet.get("/api/hi")
        assert status == 200 and json.loads(body)["path_info"] == "/hi", (status, body)
        answered[headers["X-Served-By"]] += 1
    assert set(answered) == names and sum(answered.values()) == sent, answered

    # Prometheus scrapes the three daemons: their requests add up to what was sent
    def total():
        result = fleet.promql('sum(wsgi_requests_total{service="api"})')
        return result and float(result[0]["value"][1])

    deadline = time.monotonic() + 30
    while total() != sent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert total() == sent
    per_host = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in fleet.promql('sum by (instance) (wsgi_requests_total{service="api"})')
    }
    assert per_host == {f"{h.address}:9180": answered[h.name] for h in fleet.hosts}
    report(pytestconfig, f"basics {time.monotonic() - began:.1f}s")


@pytest.mark.parametrize("action", ["reload", "restart"])
def test_a_rolling_action_under_load_fails_no_request(fleet, pytestconfig, action):
    all_up(fleet)
    pids = {h.name: h.status()["api"]["pid"] for h in fleet.hosts}
    began = time.monotonic()
    with RotationWatch(fleet) as watch, Load(fleet) as load:
        fleet.rollout({"wsgi_rolling_service": "api", "wsgi_rolling_action": action}).check()
    took = time.monotonic() - began
    report(pytestconfig, f"rolling {action}: {took:.1f}s; {load.says()}")
    assert not load.failed, load.failed[:5]
    # one host at a time went out of HAProxy's rotation, each once, in the inventory's order
    assert watch.out_in_turn() == ["h1", "h2", "h3"], watch.seen[::10]
    assert watch.most_out_at_once() == 1
    assert set(load.served) == {h.name for h in fleet.hosts}
    for host in fleet.hosts:
        api = host.status()["api"]
        assert api["state"] == "running" and api["ready"] and not api["draining"], (host.name, api)
        if action == "restart":
            assert api["pid"] != pids[host.name], host.name
    assert set(fleet.haproxy_states().values()) == {"UP"}


def test_a_manifest_change_rolled_out_by_the_role_fails_no_request(fleet, pytestconfig):
    all_up(fleet)
    changed = API | {"environment": {"PROBE_RELEASE": "2"}}
    began = time.monotonic()
    with RotationWatch(fleet) as watch, Load(fleet) as load:
        fleet.rollout(
            {
                "wsgi_rolling_service": "api",
                "wsgi_rolling_action": "manifest",
                "wsgi_supervisor_services": {"api": changed},
                "wsgi_supervisor_manifest_name": MANIFEST_NAME,
            }
        ).check()
    report(pytestconfig, f"rolling manifest change: {time.monotonic() - began:.1f}s; {load.says()}")
    assert not load.failed, load.failed[:5]
    assert watch.out_in_turn() == ["h1", "h2", "h3"], watch.seen[::10]
    assert watch.most_out_at_once() == 1
    for host in fleet.hosts:  # the change is what each host serves now
        assert answers(fleet, host)["env"] == {"PROBE_RELEASE": "2"}, host.name


def test_a_daemon_stopped_with_stop_drain_fails_no_request(fleet, pytestconfig):
    all_up(fleet)
    down = fleet.hosts[-1]
    with Load(fleet) as load:
        stopping = time.monotonic()
        down.run("systemctl", "stop", "wsgi-supervisor")
        took = time.monotonic() - stopping
        # HAProxy had it out before its services stopped: the drain outlasts fall checks inter apart
        assert fleet.haproxy_states()[down.name].startswith("DOWN")
    report(pytestconfig, f"{down.name}: systemctl stop took {took:.2f}s (--stop-drain {STOP_DRAIN}); {load.says()}")
    assert not load.failed, load.failed[:5]
    assert took >= STOP_DRAIN
    assert load.served[down.name] > 0  # it served until HAProxy had taken it out

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
    assert {h for h, r in playbook.results.items() if r.get("changed")} == {down.name}, playbook.stdout
    all_up(fleet)


def test_a_host_killed_outright_costs_only_its_requests_in_flight(fleet, pytestconfig):
    """Last: the host stays dead. Each client has one request in flight at most, so no more than
    `clients` may fail; what reached the dead host afterwards was refused and sent elsewhere."""
    all_up(fleet)
    victim = fleet.hosts[0]
    with Load(fleet) as load:
        time.sleep(0.5)
        killed = time.monotonic()
        victim.kill()
        while not fleet.haproxy_states()[victim.name].startswith("DOWN"):
            assert time.monotonic() - killed < 10, fleet.haproxy_states()
            time.sleep(0.02)
        noticed = time.monotonic() - killed
        before = sum(load.served.values())
        time.sleep(1)
    # `fall` failed checks `inter` apart, the first up to `inter` after the kill, plus a check's time-out
    bound = fleet.check_interval * (fleet.fall + 1) + 1.0
    report(
        pytestconfig,
        f"{victim.name} killed: HAProxy had it DOWN {noticed:.2f}s later (bound {bound:.1f}s); "
        f"{load.says()}: {load.failed}",
    )
    assert noticed < bound
    assert len(load.failed) <= load.clients, load.failed
    assert all(f.startswith(("502", "503")) for f in load.failed), load.failed  # HAProxy's answers, not hangs
    assert sum(load.served.values()) > before + 10  # the other two went on serving
