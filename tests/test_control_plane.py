"""A whole OpenStack control plane on one host under the daemon, driven by python-openstackclient (issue 24).

MariaDB and RabbitMQ of the test's own (tests/backing.py); keystone with fernet tokens and a catalog whose
endpoints point at nginx (from `wsgictl proxy-config nginx --vhost`); placement, glance, nova, neutron, cinder
and heat, each checking tokens with keystonemiddleware as in production. The operator's client, `openstack
--os-cloud`, talks to the front end only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backing import MariaDB, RabbitMQ, private_mariadb, private_rabbitmq
from frontends import Nginx, proxy_config

from support import Daemon, free_port, service_venv, write_manifest

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(cmd) for cmd in ("nginx", "mariadbd", "epmd"))
        or not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
        reason="needs nginx, mariadb-server and rabbitmq-server (make test installs them)",
    ),
]

# what devstack installs together, in one venv (the newest releases that co-install)
PACKAGES = (
    "keystone",
    "openstack-placement",
    "glance",
    "nova",
    "neutron",
    "cinder",
    "openstack-heat",
    "PyMySQL",
    "python-openstackclient",
    "python-heatclient",
    "fixtures",  # cinder's fake volume driver imports it; the wheel does not pull it in
)

ADMIN_PASSWORD = "admin-secret"
SERVICE_PASSWORD = "service-secret"
REGION = "RegionOne"


@pytest.fixture(scope="session")
def openstack_venv() -> Path:
    return service_venv("controlplane", *PACKAGES)


def ini(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    """An oslo.config file from {section: {key: value}}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    for section, values in sections.items():
        text += f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items()) + "\n"
    path.write_text(text)
    return path


@dataclass
class Plane:
    """The running plane: its daemon, front end, backing services and an operator's client."""

    venv: Path
    work: Path
    port: int
    db: MariaDB
    mq: RabbitMQ
    daemon: Daemon
    front: Nginx | None = None
    client_env: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *argv: str, timeout: float = 600) -> str:
        """A project's management command from the venv (db sync and the like); fails the test on error."""
        done = subprocess.run(
            [str(self.venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, (
            f"{' '.join(argv)} -> {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
        )
        return done.stdout

    def openstack(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """`openstack --os-cloud controlplane ARGS`, as an operator types it."""
        done = subprocess.run(
            [str(self.venv / "bin" / "openstack"), "--os-cloud", "controlplane", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.client_env,
            cwd=self.work,
        )
        if check:
            assert done.returncode == 0, f"openstack {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def json(self, *args: str, timeout: float = 180):
        return json.loads(self.openstack(*args, "-f", "json", timeout=timeout).stdout)

    def wait_field(self, args: tuple[str, ...], key: str, wanted: str, bad=("error", "ERROR"), timeout=300) -> dict:
        """`openstack … show -f json` until `key` is `wanted` (and not one of `bad`)."""
        deadline = time.monotonic() + timeout
        shown: dict = {}
        while time.monotonic() < deadline:
            shown = self.json(*args)
            value = str(shown.get(key))
            if value == wanted:
                return shown
            assert value not in bad and not value.endswith("_FAILED"), shown
            time.sleep(1)
        raise AssertionError(f"{' '.join(args)}: {key} not {wanted} after {timeout} s: {shown}")


# -- identity: what `keystone-manage bootstrap` does not make ------------------------------------------


class Identity:
    """keystone's v3 API as the admin, through the front end (stdlib only), to register the services."""

    def __init__(self, url: str):
        self.url = url
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        with self._call("POST", "/v3/auth/tokens", body, token=None) as resp:
            self.token = resp.headers["X-Subject-Token"]

    def _call(self, method: str, path: str, body=None, token: str | None = ""):
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Auth-Token"] = token or self.token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        return urllib.request.urlopen(request, timeout=60)

    def call(self, method: str, path: str, body=None) -> dict:
        with self._call(method, path, body) as resp:
            data = resp.read()
        return json.loads(data) if data else {}

    def find(self, collection: str, name: str) -> dict | None:
        found = self.call("GET", f"/v3/{collection}?name={name}")[collection]
        return found[0] if found else None

    def ensure(self, collection: str, name: str, **attrs) -> str:
        """The id of the named project, user, role or service, made if missing."""
        existing = self.find(collection, name)
        if existing:
            return existing["id"]
        singular = collection[:-1]
        return self.call("POST", f"/v3/{collection}", {singular: {"name": name, **attrs}})[singular]["id"]

    def service_user(self, name: str, project_id: str, roles: list[str]) -> None:
        user = self.ensure("users", name, password=SERVICE_PASSWORD, domain_id="default")
        for role in roles:
            role_id = self.ensure("roles", role)
            self.call("PUT", f"/v3/projects/{project_id}/users/{user}/roles/{role_id}")

    def endpoints(self, name: str, kind: str, url: str) -> None:
        service = self.ensure("services", name, type=kind)
        for interface in ("public", "internal", "admin"):
            self.call(
                "POST",
                "/v3/endpoints",
                {"endpoint": {"service_id": service, "interface": interface, "url": url, "region_id": REGION}},
            )


def authtoken(plane: Plane, user: str) -> dict[str, object]:
    """keystonemiddleware's section for a service that checks tokens as `user`."""
    return {
        "www_authenticate_uri": f"{plane.base}/identity",
        "auth_url": f"{plane.base}/identity",
        "auth_type": "password",
        "username": user,
        "password": SERVICE_PASSWORD,
        "project_name": "service",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "region_name": REGION,
        "service_token_roles_required": "true",
    }


def service_auth(plane: Plane, user: str) -> dict[str, object]:
    """A keystoneauth section: how one service calls another (nova to placement, heat's trustee…)."""
    return {
        "auth_type": "password",
        "auth_url": f"{plane.base}/identity",
        "username": user,
        "password": SERVICE_PASSWORD,
        "project_name": "service",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "region_name": REGION,
    }


# -- the services, one function each: config files, database, manifest tables ------------------------


def keystone(plane: Plane) -> str:
    etc = plane.work / "etc" / "keystone"
    plane.db.create("keystone")
    conf = ini(
        etc / "keystone.conf",
        {
            "DEFAULT": {"log_file": "", "debug": "false"},
            "database": {"connection": plane.db.url("keystone")},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": etc / "fernet-keys"},
            "credential": {"key_repository": etc / "credential-keys"},
            "fernet_receipts": {"key_repository": etc / "fernet-keys"},
        },
    )
    cfg = ("--config-file", str(conf))
    plane.manage("keystone-manage", *cfg, "db_sync")
    plane.manage("keystone-manage", *cfg, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root")
    plane.manage("keystone-manage", *cfg, "credential_setup", "--keystone-user", "root", "--keystone-group", "root")
    url = f"{plane.base}/identity"
    plane.manage(
        "keystone-manage",
        *cfg,
        "bootstrap",
        "--bootstrap-password",
        ADMIN_PASSWORD,
        "--bootstrap-admin-url",
        url,
        "--bootstrap-internal-url",
        url,
        "--bootstrap-public-url",
        url,
        "--bootstrap-region-id",
        REGION,
    )
    return f"""
[services.keystone]
kind = "api"
app = "keystone.wsgi.api:application"
venv = "{plane.venv}"
processes = 2
mount = "/identity"
environment = {{ OS_KEYSTONE_CONFIG_FILES = "{conf}" }}
"""


SERVICES = (keystone,)


@contextlib.contextmanager
def control_plane(venv: Path, work: Path) -> Iterator[Plane]:
    with private_mariadb(work) as db, private_rabbitmq(work) as mq:
        daemon = Daemon(work, extra_args=["--socket-group", "www-data", "--sample-interval", "1"])
        plane = Plane(venv=venv, work=work, port=free_port(), db=db, mq=mq, daemon=daemon)
        plane.client_env = client_env(plane)
        manifest = "".join(service(plane) for service in SERVICES)
        write_manifest(daemon.conf_dir, manifest)
        try:
            daemon.start()
            started = time.monotonic()
            daemon.ctl("start", "--all", "--timeout", "300", timeout=360)
            plane.startup_seconds = time.monotonic() - started
            plane.front = Nginx(work / "nginx", proxy_config(daemon, "nginx", plane.port), plane.port)
            checked = plane.front.check()
            assert checked.returncode == 0, checked.stdout + checked.stderr
            plane.front.start()
            yield plane
        finally:
            if plane.front is not None:
                plane.front.stop()
            daemon.stop(timeout=120)


def client_env(plane: Plane) -> dict[str, str]:
    """The operator's shell: a clouds.yaml of the test's own, nothing of OS_* from the caller."""
    clouds = plane.work / "clouds.yaml"
    clouds.write_text(
        f"""clouds:
  controlplane:
    auth:
      auth_url: {plane.base}/identity
      username: admin
      password: {ADMIN_PASSWORD}
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: {REGION}
    identity_api_version: 3
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    return env


@pytest.fixture(scope="module")
def plane(openstack_venv, tmp_path_factory) -> Iterator[Plane]:
    with control_plane(openstack_venv, tmp_path_factory.mktemp("plane")) as p:
        yield p


def test_token_issue_and_the_catalog_through_the_front_end(plane):
    token = plane.json("token", "issue")
    assert token["id"] and token["project_id"] and token["user_id"]
    catalog = {entry["Type"]: entry for entry in plane.json("catalog", "list")}
    assert "identity" in catalog
    for entry in catalog.values():
        for endpoint in entry["Endpoints"]:
            assert endpoint["url"].startswith(plane.base), endpoint  # every endpoint is the front end
