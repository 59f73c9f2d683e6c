"""A whole OpenStack control plane on one host under the daemon, driven by python-openstackclient (issue 24).

MariaDB and RabbitMQ of the test's own (tests/backing.py); keystone with fernet tokens and a catalog whose
endpoints point at nginx (from `wsgictl proxy-config nginx --vhost`); placement, glance, nova, neutron, cinder
and heat, each checking tokens with keystonemiddleware as in production. The operator's client, `openstack
--os-cloud`, talks to the front end only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w
from backing import MariaDB, RabbitMQ, private_mariadb, private_rabbitmq
from frontends import Nginx, proxy_config

from support import ROOT, Daemon, free_port, service_venv, write_manifest

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

    def config_dir(self, project: str, databases: tuple[str, ...] = ()) -> Path:
        """The project's config dir under the test's etc/, with its databases made and the paste file
        its wheel ships (etc/PROJECT/api-paste.ini in the venv) copied in."""
        etc = self.work / "etc" / project
        etc.mkdir(parents=True, exist_ok=True)
        for db in databases or (project,):
            self.db.create(db)
        shutil.copy(self.venv / "etc" / project / "api-paste.ini", etc / "api-paste.ini")
        return etc

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


# -- the services, one function each: config files, database, and its manifest from contrib/openstack ----

CONTRIB = ROOT / "contrib" / "openstack"


def from_contrib(plane: Plane, project: str, services: tuple[str, ...], **overrides: dict) -> str:
    """contrib/openstack/PROJECT.toml as this host needs it: only [defaults] changes (the test's venv, the
    config dirs under the test's own etc/, root instead of the project's user), keeping `services` only.

    `overrides` add keys to a service (what this test needs beyond the file, each said where it is given).
    """
    manifest = tomllib.loads((CONTRIB / f"{project}.toml").read_text())
    defaults = manifest["defaults"]
    defaults["venv"] = str(plane.venv)
    defaults.pop("user", None)
    etc = f"{plane.work / 'etc'}/"
    defaults["environment"] = {
        key: value.replace("/etc/", etc, 1) if value.startswith("/etc/") else value
        for key, value in defaults.get("environment", {}).items()
    }
    kept = {name: manifest["services"][name] for name in services}
    for table in kept.values():
        if table["kind"] == "api":
            table["processes"] = 2  # two cores run the whole plane here
    for name, extra in overrides.items():
        kept[name].update(extra)
    manifest["services"] = kept
    return tomli_w.dumps(manifest)


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
    return from_contrib(plane, "keystone", ("keystone",))


SERVICE_USERS = ("placement", "glance", "nova", "neutron", "cinder", "heat")


def register_services(plane: Plane) -> None:
    """What devstack registers in keystone beside bootstrap: the service project, users and endpoints."""
    identity = Identity(f"{plane.base}/identity")
    project = identity.ensure("projects", "service", domain_id="default")
    for user in SERVICE_USERS:
        identity.service_user(user, project, ["admin", "service"])
    base = plane.base
    identity.endpoints("placement", "placement", f"{base}/placement")
    identity.endpoints("glance", "image", f"{base}/image")
    identity.endpoints("nova", "compute", f"{base}/compute/v2.1")
    identity.endpoints("neutron", "network", f"{base}/networking")
    identity.endpoints("cinder", "block-storage", f"{base}/volume/v3/$(project_id)s")
    identity.endpoints("cinderv3", "volumev3", f"{base}/volume/v3/$(project_id)s")
    identity.endpoints("heat", "orchestration", f"{base}/heat-api/v1/$(project_id)s")


def common(plane: Plane, name: str) -> dict[str, object]:
    """[DEFAULT] of every service beside keystone: the broker, its own state dir, one host name."""
    state = plane.work / "state" / name
    state.mkdir(parents=True, exist_ok=True)
    return {"transport_url": plane.mq.url(), "state_path": state, "host": "cp-host", "my_ip": "127.0.0.1"}


def locks(plane: Plane, name: str) -> dict[str, object]:
    return {"lock_path": plane.work / "state" / name / "locks"}


def placement(plane: Plane) -> str:
    etc = plane.work / "etc" / "placement"
    plane.db.create("placement")
    conf = ini(
        etc / "placement.conf",
        {
            "api": {"auth_strategy": "keystone"},
            "keystone_authtoken": authtoken(plane, "placement"),
            "placement_database": {"connection": plane.db.url("placement")},
        },
    )
    plane.manage("placement-manage", "--config-file", str(conf), "db", "sync")
    return from_contrib(plane, "placement", ("placement",))


def glance(plane: Plane) -> str:
    etc = plane.work / "etc" / "glance"
    state = plane.work / "state" / "glance"
    for store in ("images", "staging", "tasks"):
        (state / store).mkdir(parents=True, exist_ok=True)
    plane.db.create("glance")
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy(plane.venv / "etc" / "glance" / "glance-api-paste.ini", etc / "glance-api-paste.ini")
    conf = ini(
        etc / "glance-api.conf",
        {
            "DEFAULT": {"enabled_backends": "fs:file", "transport_url": plane.mq.url()},
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": state / "images"},
            "os_glance_staging_store": {"filesystem_store_datadir": state / "staging"},
            "os_glance_tasks_store": {"filesystem_store_datadir": state / "tasks"},
            "database": {"connection": plane.db.url("glance")},
            "keystone_authtoken": authtoken(plane, "glance"),
            "paste_deploy": {"flavor": "keystone", "config_file": etc / "glance-api-paste.ini"},
            "oslo_concurrency": locks(plane, "glance"),
        },
    )
    plane.manage("glance-manage", "--config-file", str(conf), "db_sync")
    return from_contrib(plane, "glance", ("glance-api",))


def nova(plane: Plane) -> str:
    etc = plane.config_dir("nova", ("nova_api", "nova_cell0", "nova"))
    state = plane.work / "state" / "nova"
    conf = ini(
        etc / "nova.conf",
        {
            "DEFAULT": {
                **common(plane, "nova"),
                # the fake driver with one stable node, as devstack's: its node identity survives a restart
                # (plain fake.FakeDriver makes up node uuids and a restarted nova-compute refuses to start)
                "compute_driver": "fake.FakeDriverWithoutFakeNodes",
                "instances_path": state / "instances",
            },
            "api_database": {"connection": plane.db.url("nova_api")},
            "database": {"connection": plane.db.url("nova")},
            "keystone_authtoken": authtoken(plane, "nova"),
            "placement": service_auth(plane, "placement"),
            "neutron": service_auth(plane, "neutron"),
            "glance": {"region_name": REGION},
            "cinder": {"os_region_name": REGION},
            "conductor": {"workers": 1},
            "scheduler": {"workers": 1},
            "vnc": {"enabled": "false"},
            "oslo_concurrency": locks(plane, "nova"),
        },
    )
    cfg = ("--config-file", str(conf))
    plane.manage("nova-manage", *cfg, "api_db", "sync")
    plane.manage("nova-manage", *cfg, "cell_v2", "map_cell0", "--database_connection", plane.db.url("nova_cell0"))
    plane.manage("nova-manage", *cfg, "cell_v2", "create_cell", "--name", "cell1")
    plane.manage("nova-manage", *cfg, "db", "sync")
    # nova-conductor and nova-scheduler ask placement for its versions as they start, and exit if it does not
    # answer: here placement runs on the same host (contrib's nova.toml cannot say so, it may not)
    after_placement = {"after": ["placement"]}
    return from_contrib(
        plane,
        "nova",
        ("nova-api", "nova-conductor", "nova-scheduler", "nova-compute"),
        **{"nova-conductor": after_placement, "nova-scheduler": after_placement},
    )


def neutron(plane: Plane) -> str:
    etc = plane.config_dir("neutron")
    conf = ini(
        etc / "neutron.conf",
        {
            "DEFAULT": {
                **common(plane, "neutron"),
                "core_plugin": "ml2",
                "service_plugins": "",
                "auth_strategy": "keystone",
                "api_paste_config": etc / "api-paste.ini",
                "rpc_workers": 1,
                "rpc_state_report_workers": 1,
                "notify_nova_on_port_status_changes": "false",
                "notify_nova_on_port_data_changes": "false",
            },
            "database": {"connection": plane.db.url("neutron")},
            "keystone_authtoken": authtoken(plane, "neutron"),
            "nova": service_auth(plane, "nova"),
            "oslo_concurrency": locks(plane, "neutron"),
        },
    )
    # ML2 with no mechanism driver: networks and subnets need no agent
    ml2 = ini(
        etc / "plugins" / "ml2" / "ml2_conf.ini",
        {"ml2": {"type_drivers": "local,flat,vlan", "tenant_network_types": "local", "mechanism_drivers": ""}},
    )
    cfg = ("--config-file", str(conf), "--config-file", str(ml2))
    plane.manage("neutron-db-manage", *cfg, "upgrade", "heads")
    return from_contrib(plane, "neutron", ("neutron-api", "neutron-rpc-server", "neutron-periodic-workers"))


def cinder(plane: Plane) -> str:
    etc = plane.config_dir("cinder")
    conf = ini(
        etc / "cinder.conf",
        {
            "DEFAULT": {
                **common(plane, "cinder"),
                "auth_strategy": "keystone",
                "api_paste_config": etc / "api-paste.ini",
                "enabled_backends": "fake",
                "scheduler_driver_init_wait_time": 10,
            },
            # no storage, no root helper: a driver that only logs what it is asked
            "fake": {
                "volume_driver": "cinder.tests.fake_driver.FakeLoggingVolumeDriver",
                "volume_backend_name": "fake",
            },
            "database": {"connection": plane.db.url("cinder")},
            "keystone_authtoken": authtoken(plane, "cinder"),
            "oslo_concurrency": locks(plane, "cinder"),
        },
    )
    plane.manage("cinder-manage", "--config-file", str(conf), "db", "sync")
    return from_contrib(plane, "cinder", ("cinder-api", "cinder-scheduler", "cinder-volume"))


def heat(plane: Plane) -> str:
    etc = plane.config_dir("heat")
    conf = ini(
        etc / "heat.conf",
        {
            "DEFAULT": {
                **common(plane, "heat"),
                "num_engine_workers": 1,
                "region_name_for_services": REGION,
            },
            "database": {"connection": plane.db.url("heat")},
            "keystone_authtoken": authtoken(plane, "heat"),
            # heat acts for the user later through a trust to this user
            "trustee": {
                "auth_type": "password",
                "auth_url": f"{plane.base}/identity",
                "username": "heat",
                "password": SERVICE_PASSWORD,
                "user_domain_name": "Default",
            },
            "clients_keystone": {"auth_uri": f"{plane.base}/identity"},
            "paste_deploy": {"api_paste_config": etc / "api-paste.ini"},
            "oslo_concurrency": locks(plane, "heat"),
        },
    )
    plane.manage("heat-manage", "--config-file", str(conf), "db_sync")
    return from_contrib(plane, "heat", ("heat-api", "heat-engine"))


SERVICES = (keystone, placement, glance, nova, neutron, cinder, heat)
APIS = ("keystone", "placement", "glance-api", "nova-api", "neutron-api", "cinder-api", "heat-api")
WORKERS = (
    "nova-conductor",
    "nova-scheduler",
    "nova-compute",
    "neutron-rpc-server",
    "neutron-periodic-workers",
    "cinder-scheduler",
    "cinder-volume",
    "heat-engine",
)


@contextlib.contextmanager
def control_plane(venv: Path, work: Path) -> Iterator[Plane]:
    """The plane up and every service ready; one manifest file per project, as contrib/openstack/ has them.

    keystone comes first, alone: the other services need their users and the catalog from their first start
    (nova-compute caches a catalog without placement for good), so their files are added once it is filled.
    """
    with private_mariadb(work) as db, private_rabbitmq(work) as mq:
        daemon = Daemon(work, extra_args=["--socket-group", "www-data", "--sample-interval", "1"])
        plane = Plane(venv=venv, work=work, port=free_port(), db=db, mq=mq, daemon=daemon)
        plane.client_env = client_env(plane)
        first, *rest = SERVICES
        write_manifest(daemon.conf_dir, first(plane), name=f"{first.__name__}.toml")
        # each project's database migrations (minutes in all) run beside the others'
        with concurrent.futures.ThreadPoolExecutor(len(rest)) as pool:
            texts = pool.map(lambda service: service(plane), rest)
            manifests = {f"{service.__name__}.toml": text for service, text in zip(rest, texts, strict=True)}
        try:
            started = time.monotonic()
            daemon.start()
            daemon.ctl("start", "--all", "--timeout", "120", timeout=180)
            plane.front = Nginx(work / "nginx", proxy_config(daemon, "nginx", plane.port), plane.port)
            checked = plane.front.check()
            assert checked.returncode == 0, checked.stdout + checked.stderr
            plane.front.start()
            register_services(plane)
            for name, text in manifests.items():
                write_manifest(daemon.conf_dir, text, name=name)
            # the front end learns the new mounts first, as an operator's would (a new site file, a reload):
            # the workers reach placement through it as soon as they start
            (plane.front.dir / "site.conf").write_text(proxy_config(daemon, "nginx", plane.port))
            checked = plane.front.check()
            assert checked.returncode == 0, checked.stdout + checked.stderr
            plane.front.reload()
            wait_for_mount(plane, "/heat-api/")
            # the new services start as the daemon applies the manifest; this returns once they are ready
            daemon.ctl("reload-config", "--timeout", "240", timeout=300)
            daemon.ctl("start", "--all", "--timeout", "180", timeout=240)
            plane.startup_seconds = time.monotonic() - started
            discover_hosts(plane)
            yield plane
        finally:
            if plane.front is not None:
                plane.front.stop()
            daemon.stop(timeout=180)


def wait_for_mount(plane: Plane, path: str, timeout: float = 30) -> None:
    """Until nginx's new workers (after a reload) pass `path` on to its API instead of answering 404."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(plane.base + path, timeout=10):
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                return
        time.sleep(0.2)


def discover_hosts(plane: Plane, timeout: float = 120) -> None:
    """nova-manage cell_v2 discover_hosts once nova-compute has registered itself (devstack does the same)."""
    conf = str(plane.work / "etc" / "nova" / "nova.conf")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        plane.manage("nova-manage", "--config-file", conf, "cell_v2", "discover_hosts")
        if "cp-host" in plane.manage("nova-manage", "--config-file", conf, "cell_v2", "list_hosts"):
            return
        time.sleep(2)
    raise AssertionError("nova-compute never registered in cell1")


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
        # the maintenance pass creates a volume and a network every 10 s for as long as it takes, and runs
        # twice (quiet, then beside the burners): more than the default quotas (10 volumes) hold
        p.openstack("quota", "set", "--volumes", "-1", "--gigabytes", "-1", "--networks", "-1", "admin")
        yield p


def test_token_issue_and_the_catalog_through_the_front_end(plane):
    token = plane.json("token", "issue")
    assert token["id"] and token["project_id"] and token["user_id"]
    catalog = {entry["Type"]: entry for entry in plane.json("catalog", "list")}
    assert "identity" in catalog
    for entry in catalog.values():
        for endpoint in entry["Endpoints"]:
            assert endpoint["url"].startswith(plane.base), endpoint  # every endpoint is the front end
    assert {"identity", "placement", "image", "compute", "network", "block-storage", "orchestration"} <= set(catalog)


def test_every_service_is_ready_under_the_daemon(plane):
    status = plane.daemon.status()
    assert {name: s["state"] for name, s in status.items()} == dict.fromkeys((*APIS, *WORKERS), "running")
    assert all(s["ready"] for s in status.values()), status


def test_an_image_of_20mb_goes_up_and_comes_back_the_same(plane):
    data = os.urandom(20 * 1024 * 1024)
    (plane.work / "image.raw").write_bytes(data)
    image = plane.json(
        "image", "create", "--file", "image.raw", "--disk-format", "raw", "--container-format", "bare", "cirros"
    )
    assert image["status"] == "active" and image["size"] == len(data), image
    plane.openstack("image", "save", "--file", "saved.raw", "cirros")
    assert (plane.work / "saved.raw").read_bytes() == data


def test_a_network_and_its_subnet(plane):
    network = plane.json("network", "create", "private")
    assert network["status"] == "ACTIVE", network
    subnet = plane.json("subnet", "create", "--network", "private", "--subnet-range", "10.20.0.0/24", "private-v4")
    assert subnet["network_id"] == network["id"] and subnet["cidr"] == "10.20.0.0/24", subnet


def test_a_volume_becomes_available(plane):
    plane.json("volume", "create", "--size", "1", "data")
    plane.wait_field(("volume", "show", "data"), "status", "available")


def test_a_server_becomes_active_on_the_fake_driver(plane):
    # the image is the one test_an_image_of_20mb… uploaded (the tests of this module run in order, on one plane)
    plane.json("flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", "1", "cp.tiny")
    plane.json("server", "create", "--flavor", "cp.tiny", "--image", "cirros", "--nic", "none", "vm1")
    server = plane.wait_field(("server", "show", "vm1"), "status", "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == "cp-host", server


STACK = """heat_template_version: 2018-08-31
resources:
  secret:
    type: OS::Heat::RandomString
    properties:
      length: 24
  disk:
    type: OS::Cinder::Volume
    properties:
      size: 1
      name: stack-disk
outputs:
  secret:
    value: { get_attr: [secret, value] }
"""


def test_a_stack_with_a_random_string_and_a_volume_completes(plane):
    (plane.work / "stack.yaml").write_text(STACK)
    plane.json("stack", "create", "-t", "stack.yaml", "demo")
    stack = plane.wait_field(("stack", "show", "demo"), "stack_status", "CREATE_COMPLETE")
    outputs = {o["output_key"]: o["output_value"] for o in stack["outputs"]}
    assert len(outputs["secret"]) == 24, stack
    assert plane.json("volume", "show", "stack-disk")["status"] == "available"


class Operator:
    """An operator's client beside the maintenance: reads one after another, and a create every few seconds.

    Every call that fails (exit status, or an error on stderr from a call that still exits 0) is kept with
    its output, so the test can say which call failed while what was being reloaded or restarted.
    """

    READS = (
        ("token", "issue"),
        ("catalog", "list"),
        ("image", "list"),
        ("server", "list"),
        ("network", "list"),
        ("subnet", "list"),
        ("volume", "list"),
        ("stack", "list"),
    )

    def __init__(self, plane: Plane, prefix: str, create_every: float = 5.0):
        import threading

        self.plane = plane
        self.prefix = prefix
        self.create_every = create_every
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.failures: list[str] = []
        self.created: list[tuple[str, str]] = []  # (kind, name)
        self.threads = [threading.Thread(target=self._reads, daemon=True), threading.Thread(target=self._creates)]
        self.threads[1].daemon = True

    def _call(self, *args: str) -> bool:
        done = self.plane.openstack(*args, check=False, timeout=300)
        with self.lock:
            self.calls += 1
            if done.returncode != 0:
                self.failures.append(f"openstack {' '.join(args)} -> {done.returncode}: {done.stderr[-1500:]}")
        return done.returncode == 0

    def _reads(self) -> None:
        while not self.done.is_set():
            for read in self.READS:
                if self.done.is_set():
                    return
                self._call(*read)

    def _creates(self) -> None:
        n = 0
        while not self.done.wait(self.create_every):
            n += 1
            kind = ("network", "volume")[n % 2]
            name = f"{self.prefix}-{n}"
            args = ("network", "create", name) if kind == "network" else ("volume", "create", "--size", "1", name)
            if self._call(*args):
                with self.lock:
                    self.created.append((kind, name))

    def __enter__(self) -> Operator:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(600)


def test_every_service_reports_its_memory(plane, capsys):
    """What the plane costs, as `wsgictl status --json` tells it: PSS per service (shared pages counted once)."""
    status = plane.daemon.wait_for(
        lambda s: all((x.get("memory") or {}).get("pss_bytes") for x in s.values()), 30, "memory of every service"
    )
    pss = {name: s["memory"]["pss_bytes"] for name, s in status.items()}
    total = sum(pss.values())
    with capsys.disabled():
        print(f"\ncontrol plane: {len(pss)} services ready {plane.startup_seconds:.0f} s after the daemon started;")
        each = ", ".join(f"{name} {value / 2**20:.0f}" for name, value in sorted(pss.items()))
        print(f"PSS {total / 2**20:.0f} MiB in all: {each}")


@pytest.mark.busy
def test_reload_every_api_and_restart_every_worker_while_an_operator_works(plane, host_load):
    with Operator(plane, prefix=f"during-{host_load}") as operator:
        for name in APIS:
            plane.daemon.ctl("reload", name, "--timeout", "180", timeout=240)
        for name in WORKERS:
            plane.daemon.ctl("restart", name, "--timeout", "180", timeout=240)
    assert operator.failures == [], "\n".join(operator.failures)
    assert operator.calls > len(Operator.READS) and len(operator.created) >= 2, (operator.calls, operator.created)
    status = plane.daemon.status()
    assert {name: s["state"] for name, s in status.items()} == dict.fromkeys((*APIS, *WORKERS), "running")
    # every resource made before and during is still there
    for kind, name in operator.created:
        if kind == "volume":
            plane.wait_field(("volume", "show", name), "status", "available")
        else:
            assert plane.json("network", "show", name)["status"] == "ACTIVE"
    assert plane.json("image", "show", "cirros")["status"] == "active"
    assert plane.json("subnet", "show", "private-v4")["cidr"] == "10.20.0.0/24"
    assert plane.json("volume", "show", "data")["status"] == "available"
    assert plane.json("server", "show", "vm1")["status"] == "ACTIVE"
    assert plane.json("stack", "show", "demo")["stack_status"] == "CREATE_COMPLETE"
