"""contrib/ansible: the role's manifest rendering and check, and rolling.yml, run by ansible itself.

Everything here runs on this machine with the local connection: the manifest
is rendered by the role's own task (Ansible's templating and the role's
filter) and loaded with supervisor.manifest.loading; the role's stage-check-
move runs against a temporary conf dir; rolling.yml runs over two "hosts"
that are two daemons on private runtime dirs, with and without a real
HAProxy in front. What needs real hosts (SSH, systemd units, a venv
installed by the role) is the fleet test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.manifest.loading import load
from supervisor.manifest.models import ApiService, WorkerService
from support import APPS, BIN, ROOT, Daemon, free_port

CONTRIB = ROOT / "contrib" / "ansible"
ROLE = CONTRIB / "roles" / "wsgi_supervisor"
PLAYBOOK = BIN / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs ansible-core (pip install -e '.[test]')")

sys.path.insert(0, str(ROLE / "filter_plugins"))
sys.path.insert(0, str(CONTRIB / "roles" / "wsgi_rolling" / "filter_plugins"))
from wsgi_haproxy import wsgi_haproxy_late, wsgi_haproxy_rotation, wsgi_haproxy_status  # noqa: E402
from wsgi_supervisor_toml import (  # noqa: E402
    AnsibleFilterError,
    wsgi_supervisor_document,
    wsgi_supervisor_enabled,
    wsgi_supervisor_health_base,
    wsgi_supervisor_relative_paths,
    wsgi_supervisor_toml,
)


def run_playbook(tmp: Path, playbook: Path, *args: str, inventory: str = "localhost,", timeout: float = 300):
    """ansible-playbook with the local connection and this venv's Python; returns the CompletedProcess."""
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(CONTRIB / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOME": str(tmp / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / ".ansible" / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    cmd = [
        str(PLAYBOOK),
        "-i",
        inventory,
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-e",
        "ansible_become=false",
        str(playbook),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
    runs = len(list(tmp.glob("ansible-*.log")))
    (tmp / f"ansible-{runs + 1}.log").write_text(f"$ {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
    return result


def task(output: str, name: str) -> str:
    """What the output says under the (last) TASK line with this name."""
    sections = output.split("TASK [")
    found = [section for section in sections if section.split("]", 1)[0].endswith(name)]
    return found[-1] if found else ""


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok: n, changed: n, failed: n, ...}}."""
    hosts = {}
    lines = output.split("PLAY RECAP", 1)[-1].splitlines()[1:]
    for line in lines:
        if " : " not in line:
            continue
        host, counts = line.split(" : ", 1)
        hosts[host.strip()] = {k: int(v) for k, v in (part.split("=") for part in counts.split())}
    return hosts


# -- the TOML filter ----------------------------------------------------------------------------

keys = st.text(min_size=0, max_size=12)
scalars = (
    st.text(max_size=30)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_toml_filter_round_trips_anything_toml_holds(document):
    assert tomllib.loads(wsgi_supervisor_toml(document)) == document


def test_toml_filter_names_what_toml_cannot_hold():
    with pytest.raises(AnsibleFilterError, match=r"services\.keystone\.mount: TOML has no null"):
        wsgi_supervisor_toml({"services": {"keystone": {"kind": "api", "mount": None}}})
    with pytest.raises(AnsibleFilterError, match=r"services\.a\.args\.\[1\]: a set cannot"):
        wsgi_supervisor_toml({"services": {"a": {"args": ["x", {1}]}}})
    with pytest.raises(AnsibleFilterError, match="does not fit a TOML integer"):
        wsgi_supervisor_toml({"n": 2**64})
    with pytest.raises(AnsibleFilterError, match="keys are strings"):
        wsgi_supervisor_toml({"services": {1: {}}})


def test_relative_paths_and_enabled_services():
    services = {
        "a": {"kind": "api", "app": "a.wsgi:application"},
        "b": {"kind": "api", "app": "apps/b.py", "enabled": False},
        "c": {"kind": "api", "paste": "api-paste.ini"},
        "d": {"kind": "api", "paste": "config:/etc/d/paste.ini", "enabled": True},
        "e": {"kind": "api", "app": "/srv/e.py"},
    }
    assert wsgi_supervisor_relative_paths(services) == ["b.app = 'apps/b.py'", "c.paste = 'api-paste.ini'"]
    assert wsgi_supervisor_enabled(services) == ["a", "c", "d", "e"]


def test_where_the_host_answers_health():
    assert wsgi_supervisor_health_base("127.0.0.1:9180") == "http://127.0.0.1:9180"
    assert wsgi_supervisor_health_base("0.0.0.0:9180") == "http://127.0.0.1:9180"
    assert wsgi_supervisor_health_base(":9180") == "http://127.0.0.1:9180"
    assert wsgi_supervisor_health_base("[::]:9180") == "http://[::1]:9180"
    assert wsgi_supervisor_health_base("10.0.0.11:9180") == "http://10.0.0.11:9180"
    assert wsgi_supervisor_health_base("") == ""


# -- rendering through Ansible ----------------------------------------------------------------------

# as an operator writes them in group_vars: YAML's own strings, integers, booleans, lists and tables
SAMPLE_VARS = r"""
wsgi_supervisor_services:
  keystone:
    kind: api
    app: keystone.wsgi.api:application
    venv: /opt/openstack/keystone
    processes: 4
    threads: 1
    mount: /identity
    health: /healthcheck
    args: [--config-file, /etc/keystone/keystone.conf]
    environment:
      OS_KEYSTONE_CONFIG_FILES: /etc/keystone/keystone.conf;/etc/keystone/extra.conf
      ODD_KEY: 'quote " backslash \ tab	end'
      NEWLINE: "one\ntwo"
      EMPTY: ""
    user: keystone
    uwsgi:
      harakiri-verbose: true
      buffer-size: 65535
  placement:
    kind: api
    server: gunicorn
    app: placement.wsgi.api:application
    processes: "{{ 2 * 2 }}"
    protocol: http
    gunicorn: {max_requests: 5000, max_requests_jitter: 500}
    after: [keystone]
    request_log: false
    stop_timeout: 30
  nova-conductor:
    kind: worker
    command: [nova-conductor, --config-file, /etc/nova/nova.conf]
    notify: true
    enabled: false
    stop_signal: SIGINT
    ready_after: 1.5
"""


def render(tmp_path: Path, variables: str) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "vars.yml").write_text(variables)
    out = tmp_path / "out" / "services.toml"
    out.parent.mkdir()
    (tmp_path / "render.yml").write_text(
        """
- name: Render the manifest with the role's own task
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.include_role:
        name: wsgi_supervisor
        tasks_from: render.yml
"""
    )
    result = run_playbook(
        tmp_path, tmp_path / "render.yml", "-e", "@vars.yml", "-e", f"wsgi_supervisor_render_dest={out}"
    )
    return result, out


def test_the_rendered_manifest_is_what_the_variables_say(tmp_path):
    result, out = render(tmp_path, SAMPLE_VARS)
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(SAMPLE_VARS)["wsgi_supervisor_services"]
    services["placement"]["processes"] = 4  # templated by Ansible, to an integer
    assert tomllib.loads(out.read_text()) == {"services": services}

    manifest = load(out.parent, check_host=False)
    assert set(manifest.services) == {"keystone", "placement", "nova-conductor"}
    for name, table in services.items():
        model = ApiService if table["kind"] == "api" else WorkerService
        assert manifest.services[name] == model.model_validate(table), name
    keystone = manifest.services["keystone"]
    assert keystone.environment["ODD_KEY"] == 'quote " backslash \\ tab\tend'
    assert keystone.environment["NEWLINE"] == "one\ntwo"
    assert manifest.services["nova-conductor"].enabled is False


def test_the_document_puts_this_hosts_defaults_over_the_sources():
    source = '[defaults]\nvenv = "/opt/x"\nenvironment = { A = "source", B = "source" }\n\n'
    source += '[services.a]\nkind = "worker"\ncommand = ["a"]\n\n[services.b]\nkind = "worker"\ncommand = ["b"]\n'
    document = wsgi_supervisor_document(
        {"b": {"kind": "worker", "command": ["b2"]}, "c": {"kind": "worker", "command": ["c"]}},
        {"user": "svc", "environment": {"B": "host"}},
        source,
    )
    assert document == {
        "defaults": {"venv": "/opt/x", "user": "svc", "environment": {"A": "source", "B": "host"}},
        "services": {
            "a": {"kind": "worker", "command": ["a"]},
            "b": {"kind": "worker", "command": ["b2"]},
            "c": {"kind": "worker", "command": ["c"]},
        },
    }
    # without defaults, the file is what it was before [defaults] existed
    assert wsgi_supervisor_document({"a": {"kind": "worker", "command": ["a"]}}, {}, "") == {
        "services": {"a": {"kind": "worker", "command": ["a"]}}
    }
    with pytest.raises(AnsibleFilterError, match="wsgi_supervisor_manifest_source is not valid TOML"):
        wsgi_supervisor_document({}, {}, "[defaults")


def test_the_role_fills_an_openstack_manifests_defaults_for_this_host(tmp_path):
    """contrib/openstack/nova.toml with this host's venv, user and config dir: said once, in the inventory."""
    variables = {
        "wsgi_supervisor_manifest_source": str(ROOT / "contrib" / "openstack" / "nova.toml"),
        "wsgi_supervisor_defaults": {
            "venv": "/srv/venvs/nova",
            "user": "nova-svc",
            "environment": {"OS_NOVA_CONFIG_DIR": "/srv/etc/nova"},
        },
    }
    result, out = render(tmp_path, yaml.safe_dump(variables))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = load(out.parent, check_host=False)
    source = tomllib.loads((ROOT / "contrib" / "openstack" / "nova.toml").read_text())
    assert set(manifest.services) == set(source["services"])
    for service in manifest.services.values():
        assert (service.venv, service.user) == ("/srv/venvs/nova", "nova-svc")
        assert service.environment["OS_NOVA_CONFIG_DIR"] == "/srv/etc/nova"
    assert manifest.services["nova-conductor"].command == ("nova-conductor", "--config-file", "/srv/etc/nova/nova.conf")


def test_a_value_toml_cannot_hold_fails_the_render_naming_it(tmp_path):
    result, out = render(tmp_path, "wsgi_supervisor_services:\n  keystone:\n    kind: api\n    mount: null\n")
    assert result.returncode != 0
    assert "services.keystone.mount: TOML has no null" in result.stdout
    assert not out.exists()


# -- the role's check before anything changes ------------------------------------------------------


def role_playbook(tmp_path: Path) -> Path:
    path = tmp_path / "site.yml"
    path.write_text(
        """
- name: The role, as site.yml runs it
  hosts: all
  gather_facts: false
  roles:
    - role: wsgi_supervisor
"""
    )
    return path


def host_vars(base: Path, daemon: Daemon | None = None, metrics: int | None = None) -> dict:
    """The role's inputs for a host whose daemon is `daemon` (a test daemon, not under systemd)."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "wsgi_supervisor_install": False,
        "wsgi_supervisor_venv": sys.prefix,
        "wsgi_supervisor_manage_service": False,
        "wsgi_supervisor_conf_dir": str(daemon.conf_dir if daemon else base / "conf.d"),
        "wsgi_supervisor_staging_dir": str(base / "staging"),
        "wsgi_supervisor_runtime_dir": str(daemon.runtime_dir if daemon else base / "run"),
        "wsgi_supervisor_metrics_listen": f"127.0.0.1:{metrics}" if metrics else "",
        "wsgi_supervisor_ready_timeout": 60,
    }


def write_inventory(path: Path, hosts: dict[str, dict], services: dict, **group_vars) -> Path:
    inventory = {
        "all": {
            "children": {"wsgi_supervisor": {"hosts": hosts}},
            "vars": {"wsgi_supervisor_services": services, **group_vars},
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def probe_service(**extra) -> dict:
    return {"kind": "api", "app": str(APPS / "probe.py"), "processes": 1, **extra}


def test_a_manifest_that_fails_the_check_changes_nothing(tmp_path):
    conf = tmp_path / "h" / "conf.d"
    conf.mkdir(parents=True)
    other = '[services.other]\nkind = "api"\napp = "other.wsgi:application"\n'
    (conf / "other.toml").write_text(other)
    services = {
        "api": probe_service(processes="four", after=["nothere"]),
        "other": probe_service(),  # already defined in other.toml: only a check of the whole dir sees it
        "w": {"kind": "worker", "command": ["/no/such/program"]},
    }
    inventory = write_inventory(tmp_path / "inventory.yml", {"h": host_vars(tmp_path / "h")}, services)
    result = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert result.returncode != 0
    assert "wsgictl check refused the manifest; nothing was changed on h" in result.stdout
    for problem in (
        "service 'api', key 'processes': Input should be a valid integer",
        "service 'api', key 'after': names an unknown service 'nothere'",
        "service 'other': is already defined in",
        "service 'w', key 'command': program /no/such/program does not exist",
    ):
        assert problem in result.stdout, problem
    assert sorted(p.name for p in conf.iterdir()) == ["other.toml"]
    assert (conf / "other.toml").read_text() == other


def test_a_relative_app_path_is_refused_before_the_check(tmp_path):
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        {"h": host_vars(tmp_path / "h")},
        {"api": {"kind": "api", "app": "apps/probe.py"}},
    )
    result = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert result.returncode != 0
    assert "make them absolute: api.app = 'apps/probe.py'" in result.stdout
    assert not (tmp_path / "h" / "conf.d").exists()


# -- installing ------------------------------------------------------------------------------------------


def test_install_from_a_wheel_and_from_a_source_tree_once_with_the_packages_unit_templates(tmp_path):
    """The package carries its unit templates (a wheel under share/, a source tree in units/): the role takes
    them from the installation, copies none, and wsgictl units install works; a second run installs nothing
    again. (--no-deps: the dependencies are not what this is about.)"""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("wsgi_supervisor-*.whl")
    (tmp_path / "install.yml").write_text(
        """
- name: Install with the role's own tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install
      ansible.builtin.include_role:
        name: wsgi_supervisor
        tasks_from: install.yml
"""
    )
    for source in (wheel, ROOT):
        venv = tmp_path / f"venv-{source.suffix or 'tree'}"
        args = ["-e", f"wsgi_supervisor_venv={venv}", "-e", f"wsgi_supervisor_source={source}"]
        args += [
            "-e",
            "wsgi_supervisor_pip_extra_args=--no-deps",
            "-e",
            f"wsgi_supervisor_python={sys.base_prefix}/bin/python3",
        ]
        first = run_playbook(tmp_path, tmp_path / "install.yml", *args)
        assert first.returncode == 0, first.stdout
        assert "changed" in task(first.stdout, "Install wsgi-supervisor into the venv")
        assert "skipping" in task(first.stdout, "Provide the unit templates from the control node"), first.stdout
        units = venv / "share" / "wsgi-supervisor" / "units"
        assert sorted(p.name for p in units.iterdir()) == ["wsgi-supervisor.service", "wsgi@.service"]
        assert (units / "wsgi@.service").read_text() == (ROOT / "units" / "wsgi@.service").read_text()
        written = subprocess.run(
            [str(venv / "bin" / "wsgictl"), "units", "install", "--dest", str(tmp_path / f"units-{venv.name}")],
            capture_output=True,
            text=True,
        )
        assert written.returncode == 0, written.stderr
        unit = (tmp_path / f"units-{venv.name}" / "wsgi-supervisor.service").read_text()
        assert f"ExecStart={venv}/bin/wsgi-supervisor" in unit
        again = run_playbook(tmp_path, tmp_path / "install.yml", *args)
        assert again.returncode == 0 and recap(again.stdout)["localhost"]["changed"] == 0, again.stdout


# -- the role against a running daemon ---------------------------------------------------------------


def health(port: int, name: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/{name}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Host:
    """One "host" of a local fleet: a daemon on its own runtime dir, conf dir and metrics port."""

    def __init__(self, base: Path, name: str):
        self.name = name
        self.base = base / name
        self.base.mkdir()
        self.metrics = free_port()
        self.daemon = Daemon(self.base, extra_args=["--metrics-listen", f"127.0.0.1:{self.metrics}"])
        self.vars = host_vars(self.base, self.daemon, self.metrics)

    def status(self, name: str) -> dict:
        return self.daemon.status(name)[name]


@pytest.fixture
def fleet(tmp_path):
    hosts = [Host(tmp_path, "ctl1"), Host(tmp_path, "ctl2")]
    for h in hosts:
        h.daemon.start()
    yield hosts
    for h in hosts:
        h.daemon.stop()


def test_the_role_applies_a_manifest_change_and_waits_until_ready(tmp_path, fleet):
    ctl1 = fleet[0]
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, {"ctl1": ctl1.vars}, {"api": probe_service(), "idle": probe_service(enabled=False)})
    result = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert result.returncode == 0, result.stdout
    assert "Apply the manifest change" in result.stdout
    # the handler waited: the service is ready when the play ends
    api = ctl1.status("api")
    assert (api["state"], api["ready"]) == ("running", True)
    assert ctl1.status("idle")["state"] == "stopped"
    assert health(ctl1.metrics, "api")[0] == 200
    text = (ctl1.daemon.conf_dir / "ansible.toml").read_text()
    assert tomllib.loads(text)["services"]["api"] == probe_service()

    # again: nothing to do
    again = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout)["ctl1"]["changed"] == 0, again.stdout

    # a changed service restarts on its socket and is ready when the play ends
    pid = api["pid"]
    write_inventory(inventory, {"ctl1": ctl1.vars}, {"api": probe_service(processes=2)})
    changed = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert changed.returncode == 0, changed.stdout
    api = ctl1.status("api")
    assert (api["state"], api["ready"]) == ("running", True) and api["pid"] != pid
    assert "idle" not in ctl1.daemon.status()


# -- rolling.yml ----------------------------------------------------------------------------------------


def rolling(tmp_path: Path, inventory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_playbook(tmp_path, CONTRIB / "rolling.yml", *args, inventory=str(inventory), timeout=timeout)


def deploy(tmp_path: Path, fleet: list[Host], services: dict, **group_vars) -> Path:
    inventory = write_inventory(tmp_path / "inventory.yml", {h.name: h.vars for h in fleet}, services, **group_vars)
    result = run_playbook(tmp_path, role_playbook(tmp_path), inventory=str(inventory))
    assert result.returncode == 0, result.stdout
    return inventory


def daemon_said(host: Host, text: str) -> bool:
    return text in host.daemon.output()


@pytest.mark.parametrize("action", ["reload", "restart", "manifest"])
def test_rolling_action_without_haproxy(tmp_path, fleet, action):
    inventory = deploy(tmp_path, fleet, {"api": probe_service()}, wsgi_rolling_drain_wait=0)
    pids = {h.name: h.status("api")["pid"] for h in fleet}
    if action == "manifest":
        services = {"api": probe_service(processes=2)}
        write_inventory(inventory, {h.name: h.vars for h in fleet}, services, wsgi_rolling_drain_wait=0)
    result = rolling(tmp_path, inventory, "-e", "wsgi_rolling_service=api", "-e", f"wsgi_rolling_action={action}")
    assert result.returncode == 0, result.stdout
    for h in fleet:
        api = h.status("api")
        assert (api["state"], api["ready"], api["draining"]) == ("running", True, False), h.name
        assert api["pid"] != pids[h.name], h.name
        assert daemon_said(h, "drained: out of rotation") and daemon_said(h, "undrained: back in rotation")
        assert health(h.metrics, "api")[0] == 200
        if action == "manifest":
            assert daemon_said(h, "manifest applied: 1 changed")
            assert tomllib.loads((h.daemon.conf_dir / "ansible.toml").read_text())["services"]["api"]["processes"] == 2
    # one host after the other: ctl1 was back in rotation before ctl2 was drained
    order = [line for line in result.stdout.splitlines() if line.startswith(("TASK [Drain", "TASK [Undrain"))]
    assert len(order) == 4 and order[0].startswith("TASK [Drain") and order[1].startswith("TASK [Undrain"), order


def test_rolling_stops_at_the_host_whose_service_does_not_come_up(tmp_path, fleet):
    ctl1, ctl2 = fleet
    flag = tmp_path / "ctl1-breaks"
    services = {"api": probe_service(start_limit=1)}
    inventory = deploy(tmp_path, fleet, services, wsgi_rolling_drain_wait=0)
    before = {h.name: (h.status("api")["pid"], (h.daemon.conf_dir / "ansible.toml").read_text()) for h in fleet}

    # the new manifest passes the check everywhere, but its app will not import on ctl1
    flag.touch()
    changed = {"api": probe_service(start_limit=1, environment={"PROBE_FAIL_IF_EXISTS": str(flag)})}
    write_inventory(inventory, {h.name: h.vars for h in fleet}, changed, wsgi_rolling_drain_wait=0)
    result = rolling(tmp_path, inventory, "-e", "wsgi_rolling_service=api", "-e", "wsgi_rolling_action=manifest")
    assert result.returncode != 0
    stopped = (
        "the rollout stopped at ctl1 (the hosts after it are untouched), in the task: Fail when the daemon did not"
    )
    assert stopped in result.stdout
    assert "api stay drained here" in result.stdout
    counts = recap(result.stdout)
    assert counts["ctl1"]["failed"] == 1 and counts["ctl2"]["failed"] == 0
    # ctl1: changed, out of rotation; ctl2: exactly as it was, serving in rotation
    assert ctl1.status("api")["draining"] is True
    assert health(ctl1.metrics, "api")[0] == 503
    assert ctl2.status("api")["pid"] == before["ctl2"][0]
    assert (ctl2.daemon.conf_dir / "ansible.toml").read_text() == before["ctl2"][1]
    assert ctl2.status("api")["draining"] is False and health(ctl2.metrics, "api")[0] == 200


def test_a_manifest_that_fails_the_check_stops_the_rollout_before_any_host_changes(tmp_path, fleet):
    inventory = deploy(tmp_path, fleet, {"api": probe_service()}, wsgi_rolling_drain_wait=0)
    before = {h.name: (h.status("api")["pid"], (h.daemon.conf_dir / "ansible.toml").read_text()) for h in fleet}
    bad = {"api": probe_service(processes=0, harakiri="soon")}
    write_inventory(inventory, {h.name: h.vars for h in fleet}, bad, wsgi_rolling_drain_wait=0)
    result = rolling(tmp_path, inventory, "-e", "wsgi_rolling_service=api", "-e", "wsgi_rolling_action=manifest")
    assert result.returncode != 0
    assert "wsgictl check refused the manifest" in result.stdout
    assert "service 'api', key 'harakiri'" in result.stdout
    assert "Roll one host at a time" not in result.stdout
    for h in fleet:
        assert (h.status("api")["pid"], (h.daemon.conf_dir / "ansible.toml").read_text()) == before[h.name]
        assert not daemon_said(h, "drained: out of rotation")


# -- with a real HAProxy in front ----------------------------------------------------------------------------


def haproxy_stat(sock: Path) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


@pytest.fixture
def haproxy(tmp_path, fleet):
    """HAProxy on loopback with the backend haproxy.cfg.example describes: each host's server checked
    with GET /health/api on its daemon's metrics port."""
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy")
    sock = tmp_path / "haproxy.sock"
    servers = "\n".join(
        f"    server {h.name} 127.0.0.1:{h.metrics} check port {h.metrics}" for h in fleet
    )  # the traffic port does not matter here: only the checks are looked at
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend api
    option httpchk GET /health/api
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
{servers}
"""
    )
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def deploy_behind(haproxy: Path, tmp_path: Path, fleet: list[Host], wait: int, **group_vars) -> Path:
    """The probe service on every host, rolled with HAProxy asked on its stats socket for `wait` seconds."""
    return deploy(
        tmp_path,
        fleet,
        {"api": probe_service()},
        wsgi_rolling_haproxy_hosts=["localhost"],
        wsgi_rolling_haproxy_socket=str(haproxy),
        wsgi_rolling_haproxy_python=sys.executable,
        wsgi_rolling_haproxy_timeout=wait,
        **group_vars,
    )


def test_rolling_reload_waits_for_haproxy_to_take_each_host_out_and_back(tmp_path, fleet, haproxy):
    inventory = deploy_behind(haproxy, tmp_path, fleet, wait=30)

    def statuses() -> dict[str, str]:
        text = haproxy_stat(haproxy)
        return {h.name: wsgi_haproxy_status(text, "api", h.name) for h in fleet}

    deadline = time.monotonic() + 20
    while set(statuses().values()) != {"UP"}:
        assert time.monotonic() < deadline, statuses()
        time.sleep(0.1)

    seen: list[dict[str, str]] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen.append(statuses())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = rolling(tmp_path, inventory, "-e", "wsgi_rolling_service=api", "-e", "wsgi_rolling_action=reload")
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stdout
    assert "Ask HAProxy's stats socket until the server is in the wanted rotation state, which is out" in result.stdout
    # each host went out of rotation, never both at once, and both are back in it
    for h in fleet:
        assert any(s[h.name].startswith("DOWN") for s in seen), h.name
    assert not any(all(wsgi_haproxy_rotation(v, "out") for v in s.values()) for s in seen)
    assert statuses() == {"ctl1": "UP", "ctl2": "UP"}


def test_rolling_fails_when_haproxy_never_sees_the_host_go(tmp_path, fleet, haproxy):
    """A backend name that HAProxy does not have: the rollout stops on the first host, saying so, and puts
    nothing back in rotation there (wsgi_rolling_undrain_on_failure false)."""
    inventory = deploy_behind(haproxy, tmp_path, fleet, wait=2, wsgi_rolling_haproxy_backends={"api": "keystone"})
    result = rolling(tmp_path, inventory, "-e", "wsgi_rolling_service=api", "-e", "wsgi_rolling_action=restart")
    assert result.returncode != 0
    assert "HAProxy does not have ctl1 out of rotation after 2s:" in result.stdout
    assert "localhost: backend keystone, server ctl1: absent" in result.stdout
    assert fleet[0].status("api")["draining"] is True
    assert fleet[1].status("api")["draining"] is False


# -- the HAProxy filters ---------------------------------------------------------------------------------

STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
api,FRONTEND,,,0,0,262144,0,0,0,0,0,0,,,,,OPEN,
keystone,ctl1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1
keystone,ctl2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2,1
keystone,ctl3,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT (via keystone/ctl1),1
keystone,BACKEND,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,2
"""


def test_haproxy_filters():
    assert wsgi_haproxy_status(STAT, "keystone", "ctl1") == "UP"
    assert wsgi_haproxy_status(STAT, "keystone", "ctl2") == "DOWN 1/2"
    assert wsgi_haproxy_status(STAT, "keystone", "ctl4") == "absent"
    assert wsgi_haproxy_status("Unknown command\n", "keystone", "ctl1").startswith("no CSV from HAProxy")
    assert wsgi_haproxy_rotation("UP 1/3", "in") and not wsgi_haproxy_rotation("UP 1/3", "out")
    assert wsgi_haproxy_rotation("DOWN 1/2", "out") and wsgi_haproxy_rotation("MAINT (via x/y)", "out")
    assert not wsgi_haproxy_rotation("no check", "out") and not wsgi_haproxy_rotation("no check", "in")
    answers = [
        {"item": ["lb1", "keystone"], "stdout": STAT},
        {"item": ["http://lb2/stats", "keystone"], "content": STAT},
        {"item": ["lb3", "keystone"], "skipped": True},
    ]
    assert wsgi_haproxy_late(answers, {"keystone": "keystone"}, "ctl2", "out") == []
    assert wsgi_haproxy_late(answers, {"keystone": "keystone"}, "ctl2", "in") == [
        "lb1: backend keystone, server ctl2: DOWN 1/2",
        "http://lb2/stats: backend keystone, server ctl2: DOWN 1/2",
    ]


# -- the playbooks parse -----------------------------------------------------------------------------


@pytest.mark.parametrize("playbook", ["site.yml", "rolling.yml"])
def test_syntax_check(tmp_path, playbook):
    result = run_playbook(
        tmp_path, CONTRIB / playbook, "--syntax-check", inventory=str(CONTRIB / "inventory.example.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_inventory_renders_a_manifest_that_loads(tmp_path):
    inventory = yaml.safe_load((CONTRIB / "inventory.example.yml").read_text())
    services = inventory["all"]["children"]["wsgi_supervisor"]["vars"]["wsgi_supervisor_services"]
    result, out = render(tmp_path, yaml.safe_dump({"wsgi_supervisor_services": services}))
    assert result.returncode == 0, result.stdout
    manifest = load(out.parent, check_host=False)
    assert set(manifest.services) == set(services)
    assert json.loads(json.dumps(tomllib.loads(out.read_text())["services"])) == services


def test_ansible_lint_passes_when_it_is_installed():
    lint = shutil.which("ansible-lint")
    if lint is None:
        pytest.skip("ansible-lint is not installed (it is not in the test extras)")
    result = subprocess.run(
        [lint, "--offline", "--nocolor", "--format=pep8", "site.yml", "rolling.yml", "roles/"],
        capture_output=True,
        text=True,
        cwd=CONTRIB,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(CONTRIB / "roles")},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_haproxy_example_is_valid_and_checks_each_service_on_the_daemon():
    text = (CONTRIB / "haproxy.cfg.example").read_text()
    for line in (
        "option httpchk GET /health/keystone",
        "option httpchk GET /health/placement",
        "http-check expect status 200",
        "default-server inter 2s fall 2 rise 2",
        "server ctl1 10.0.0.11:80 check port 9180",
        "stats socket /run/haproxy/admin.sock",
    ):
        assert line in text, line
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy for haproxy -c")
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(CONTRIB / "haproxy.cfg.example")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the whole role under a real systemd (systemd-nspawn, as test_systemd.py) ------------------------------

SYSTEMD_INVENTORY = """
all:
  children:
    wsgi_supervisor:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: {python}
          ansible_become: false
      vars:
        wsgi_supervisor_install: false
        wsgi_supervisor_venv: {venv}
        wsgi_supervisor_metrics_listen: 127.0.0.1:{port}
        wsgi_supervisor_socket_group: root
        wsgi_supervisor_ready_timeout: 60
        wsgi_rolling_drain_wait: 0
        wsgi_supervisor_services:
          api:
            kind: api
            app: {app}
            processes: {processes}
"""


@pytest.fixture
def machine(tmp_path, monkeypatch):
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("needs systemd-container")
    import nspawn

    # services this host may have installed that only slow the container's boot down
    monkeypatch.setattr(nspawn, "MASKED", (*nspawn.MASKED, "ssh", "postgresql", "haproxy", "rabbitmq-server"))
    c = nspawn.Container("wsgiansible", [ROOT, Path(sys.base_prefix)], tmp_path / "console.log")
    try:
        c.start(timeout=180)
        yield c
    finally:
        c.stop()


def test_the_role_under_systemd_installs_units_starts_and_reloads(machine):
    c = machine

    def play(playbook: Path, processes: object = 1, port: int = 9180, *args: str):
        inventory = SYSTEMD_INVENTORY.format(
            python=sys.executable, venv=sys.prefix, port=port, app=APPS / "probe.py", processes=processes
        )
        c.write("/root/inventory.yml", inventory)
        return c.run(
            "env",
            "ANSIBLE_NOCOLOR=1",
            "ANSIBLE_DEPRECATION_WARNINGS=0",
            str(PLAYBOOK),
            "-i",
            "/root/inventory.yml",
            str(playbook),
            *args,
            check=False,
            timeout=400,
        )

    def status() -> dict:
        out = c.run(str(BIN / "wsgictl"), "status", "--json", "api", check=False).stdout
        return json.loads(out)[0]

    def health(port: int) -> str:
        code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/health/api').status)"
        return c.run(sys.executable, "-c", code, check=False).stdout.strip()

    first = play(CONTRIB / "site.yml")
    assert first.returncode == 0, first.stdout
    assert c.run("systemctl", "is-active", "wsgi-supervisor").stdout.strip() == "active"
    assert c.run("systemctl", "is-enabled", "wsgi-supervisor").stdout.strip() == "enabled"
    unit = c.run("systemctl", "cat", "wsgi-supervisor").stdout
    assert f'"{sys.prefix}/bin/wsgi-supervisor"' in unit and '"--metrics-listen" "127.0.0.1:9180"' in unit
    assert c.run("test", "-f", "/etc/systemd/system/wsgi@.service", check=False).returncode == 0
    api = status()
    assert (api["state"], api["ready"]) == ("running", True) and health(9180) == "200"

    again = play(CONTRIB / "site.yml")
    assert again.returncode == 0 and recap(again.stdout)["localhost"]["changed"] == 0, again.stdout

    # a manifest change: systemctl reload (the handler), the API restarted on its socket and ready
    changed = play(CONTRIB / "site.yml", 2)
    assert changed.returncode == 0, changed.stdout
    assert "Apply the manifest change (systemctl reload wsgi-supervisor)" in changed.stdout
    assert status()["pid"] != api["pid"] and status()["ready"] is True
    assert "manifest applied: 1 changed" in c.run("journalctl", "-u", "wsgi-supervisor", "-o", "cat").stdout

    # one that fails the check changes nothing, and the daemon keeps serving what it had
    pid = status()["pid"]
    conf = c.run("cat", "/etc/wsgi-supervisor/conf.d/ansible.toml").stdout
    refused = play(CONTRIB / "site.yml", "two")
    assert refused.returncode != 0
    assert "service 'api', key 'processes': Input should be a valid integer" in refused.stdout
    assert c.run("cat", "/etc/wsgi-supervisor/conf.d/ansible.toml").stdout == conf and status()["pid"] == pid

    # new daemon options: the daemon restarts with them
    moved = play(CONTRIB / "site.yml", 2, 9181)
    assert moved.returncode == 0, moved.stdout
    assert "Restart wsgi-supervisor for its new options" in moved.stdout and health(9181) == "200"

    # rolling.yml on this one host: drained, reloaded (a new master), back in rotation
    pid = status()["pid"]
    rolled = play(
        CONTRIB / "rolling.yml", 2, 9181, "-e", "wsgi_rolling_service=api", "-e", "wsgi_rolling_action=reload"
    )
    assert rolled.returncode == 0, rolled.stdout
    assert status()["pid"] != pid and status()["draining"] is False and health(9181) == "200"
