"""End to end with a real OpenStack API: placement from PyPI, in its own venv."""

import json
import os
from pathlib import Path

import pytest

from support import service_venv, uwsgi_request, write_manifest


@pytest.fixture(scope="session")
def placement_venv():
    """openstack-placement, pyuwsgi and gunicorn in a venv of their own (made once, ~20 s)."""
    return service_venv("placement", "openstack-placement")


HEADERS = {"x-auth-token": "admin", "OpenStack-API-Version": "placement latest"}


def test_placement_serves_and_survives_reload(daemon, server, placement_venv, tmp_path):
    conf = tmp_path / "placement"
    conf.mkdir()
    (conf / "placement.conf").write_text(
        f"""
[api]
auth_strategy = noauth2
[placement_database]
connection = sqlite:///{tmp_path}/placement.sqlite
sync_on_startup = True
"""
    )
    write_manifest(
        daemon.conf_dir,
        f"""
[services.placement]
kind = "api"
app = "placement.wsgi.api:application"
venv = "{placement_venv}"
processes = 2
mount = "/placement"
environment = {{ OS_PLACEMENT_CONFIG_DIR = "{conf}" }}
""",
        server=server,
    )
    daemon.start()
    daemon.ctl("start", "placement", "--timeout", "120")

    status, _, body = uwsgi_request(daemon.socket("placement"), "/resource_providers", headers=HEADERS)
    assert status == 200, body
    assert json.loads(body) == {"resource_providers": []}

    daemon.ctl("reload", "placement", "--timeout", "120")
    status, _, body = uwsgi_request(daemon.socket("placement"), "/resource_providers", headers=HEADERS)
    assert status == 200 and json.loads(body) == {"resource_providers": []}
    s = daemon.status()["placement"]
    # the app runs the venv's own Python, not the daemon's: the master (arbiter) and every worker
    for pid in (s["pid"], *(w["pid"] for w in s["workers"])):
        exe = os.readlink(f"/proc/{pid}/exe")
        assert Path(exe).resolve() == (placement_venv / "bin" / "python3").resolve()
