"""End to end with contrib/openstack/aodh.toml: aodh from PyPI, its API at devstack's /alarming."""

import json
import subprocess

import pytest

from support import contrib_for_this_host, service_venv, uwsgi_request, write_manifest


@pytest.fixture(scope="session")
def aodh_venv():
    """aodh, pyuwsgi and gunicorn in a venv of their own (made once, ~60 s)."""
    return service_venv("aodh", "aodh")


def test_contrib_openstack_aodh_serves_at_alarming_with_this_hosts_defaults(daemon, aodh_venv, tmp_path):
    """contrib/openstack/aodh.toml as shipped, only its [defaults] set for this host (no user here): the API
    answers at the catalog path devstack gives it, and is ready only once /healthcheck answers through it."""
    # aodh's API reads no argument and no config dir: oslo.config's OS_<GROUP>__<OPTION> variables reach it
    settings = {"OS_DATABASE__CONNECTION": f"sqlite:///{tmp_path}/aodh.sqlite", "OS_API__AUTH_MODE": "noauth"}
    subprocess.run([str(aodh_venv / "bin" / "aodh-dbsync")], env=settings, check=True, capture_output=True)
    environment = ", ".join(f'{key} = "{value}"' for key, value in settings.items())
    text = contrib_for_this_host("aodh", aodh_venv, tmp_path, environment)
    write_manifest(daemon.conf_dir, text, name="aodh.toml")
    daemon.start()
    daemon.ctl("start", "aodh-api", "--timeout", "120")  # its workers need a message bus: not here

    assert uwsgi_request(daemon.socket("aodh-api"), "/alarming/healthcheck")[0] == 200
    headers = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "admin"}
    status, _, body = uwsgi_request(daemon.socket("aodh-api"), "/alarming/v2/alarms", headers=headers)
    assert (status, json.loads(body)) == (200, []), body
