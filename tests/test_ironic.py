"""End to end with contrib/openstack/ironic.toml: ironic from PyPI, its API at /baremetal and its conductor."""

import json
import subprocess
import time

import pytest

from support import contrib_for_this_host, free_port, service_venv, uwsgi_request, write_manifest

# pin the microversion the answers below are read at
HEADERS = {"X-OpenStack-Ironic-API-Version": "1.1"}


@pytest.fixture(scope="session")
def ironic_venv():
    """ironic, pyuwsgi and gunicorn in a venv of their own (made once, ~45 s)."""
    return service_venv("ironic", "ironic")


def ironic_conf(tmp_path, venv, rpc_port) -> str:
    """A config dir for an ironic that needs no keystone, no message bus and no hardware, its database made."""
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "ironic.conf").write_text(
        f"""
[DEFAULT]
auth_strategy = noauth
rpc_transport = json-rpc
host = test-conductor
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake
enabled_management_interfaces = fake
enabled_power_interfaces = fake
enabled_vendor_interfaces = fake
enabled_console_interfaces = fake
enabled_inspect_interfaces = fake
[oslo_middleware]
# as devstack sets it (ironic devstack/lib/ironic:1827): links are then built from the request's SCRIPT_NAME
enable_proxy_headers_parsing = True
[json_rpc]
auth_strategy = noauth
host_ip = 127.0.0.1
port = {rpc_port}
[database]
connection = sqlite:///{tmp_path}/ironic.sqlite
"""
    )
    subprocess.run(
        [str(venv / "bin" / "ironic-dbsync"), "--config-file", str(conf / "ironic.conf"), "create_schema"],
        check=True,
        capture_output=True,
    )
    return str(conf)


def test_contrib_openstack_ironic_serves_at_baremetal_with_this_hosts_defaults(daemon, ironic_venv, tmp_path):
    """contrib/openstack/ironic.toml as shipped, only its [defaults] set for this host (no user here): the API
    answers at the catalog path devstack gives it, its links point there, and it sees the conductor's driver."""
    rpc_port = free_port()
    conf = ironic_conf(tmp_path, ironic_venv, rpc_port)
    text = contrib_for_this_host("ironic", ironic_venv, conf)
    write_manifest(daemon.conf_dir, text, name="ironic.toml")
    daemon.start()
    daemon.ctl("start", "ironic-api", "ironic-conductor", "--timeout", "120")

    status, _, body = uwsgi_request(daemon.socket("ironic-api"), "/baremetal/v1/", headers=HEADERS)
    assert status == 200, (status, body)
    # its links lead back through the mount (uWSGI's SCRIPT_NAME), where a client behind the front end finds them
    links = {link["rel"]: link["href"] for link in json.loads(body)["links"]}
    assert links["self"] == "http://test/baremetal/v1/", links

    status, _, body = uwsgi_request(daemon.socket("ironic-api"), "/baremetal/v1/nodes", headers=HEADERS)
    assert (status, json.loads(body)) == (200, {"nodes": []}), body

    # the drivers are those the running conductors registered in the database (a conductor is its host and RPC
    # port). oslo.service's READY=1 comes from the conductor's parent, before its child registers: wait for it
    deadline = time.monotonic() + 60
    while True:
        status, _, body = uwsgi_request(daemon.socket("ironic-api"), "/baremetal/v1/drivers", headers=HEADERS)
        assert status == 200, body
        drivers = {d["name"]: d["hosts"] for d in json.loads(body)["drivers"]}
        if drivers or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert drivers == {"fake-hardware": [f"test-conductor:{rpc_port}"]}, drivers
