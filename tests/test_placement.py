"""End to end with a real OpenStack API: placement from PyPI, in its own venv."""

import json
import os
from pathlib import Path

import pytest
from test_logs import journal

from support import APPS, ROOT, Daemon, contrib_for_this_host, get_json, service_venv, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"


@pytest.fixture(scope="session")
def placement_venv():
    """openstack-placement, pyuwsgi and gunicorn in a venv of their own (made once, ~20 s)."""
    return service_venv("placement", "openstack-placement")


HEADERS = {"x-auth-token": "admin", "OpenStack-API-Version": "placement latest"}


def placement_manifest(tmp_path, venv) -> str:
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
    return f"""
[services.placement]
kind = "api"
app = "placement.wsgi.api:application"
venv = "{venv}"
processes = 2
mount = "/placement"
environment = {{ OS_PLACEMENT_CONFIG_DIR = "{conf}" }}
"""


def test_placement_serves_and_survives_reload(daemon, server, placement_venv, tmp_path):
    write_manifest(daemon.conf_dir, placement_manifest(tmp_path, placement_venv), server=server)
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


def test_a_request_id_finds_the_access_line_and_the_apps_own_lines_in_the_journal(tmp_path, server, placement_venv):
    journal_dir = tmp_path / "journal"
    wrapper = ["unshare", "--mount", "--propagation", "private", "--", str(ROOT / "tests" / "journal-ns")]
    d = Daemon(tmp_path, wrapper=[*wrapper, str(journal_dir)], extra_args=["--quiet"])
    write_manifest(d.conf_dir, placement_manifest(tmp_path, placement_venv), server=server)
    d.start()
    try:
        d.ctl("start", "placement", "--timeout", "120")
        status, headers, _ = uwsgi_request(d.socket("placement"), "/placement/resource_providers", headers=HEADERS)
        assert status == 200
        request_id = {k.lower(): v for k, v in headers.items()}["x-openstack-request-id"]
        assert request_id.startswith("req-")
    finally:
        d.stop()
    # journalctl REQUEST_ID=req-…: the access line
    found = journal(journal_dir, f"REQUEST_ID={request_id}")
    assert len(found) == 1, found
    access = found[0]
    assert access["WSGI_SERVICE"] == "placement" and access["WSGI_STREAM"] == "request"
    assert access["REQUEST_PATH"] == "/placement/resource_providers" and access["REQUEST_STATUS"] == "200"
    # and the same id finds placement's own line (oslo.log writes it as "[None req-… …]")
    own = journal(journal_dir, "-u", "wsgi@placement.service", "-g", f"\\[\\S* ?{request_id}")
    assert any(e["WSGI_STREAM"] == "output" and "resource_providers" in e["MESSAGE"] for e in own), own
    # the server's banner is in the journal too, at debug priority
    banner = "detected binary path" if server == "uwsgi" else "Booting worker with pid"
    kept = journal(journal_dir, "-u", "wsgi@placement.service", "-g", banner)
    assert kept and {e["PRIORITY"] for e in kept} == {"7"}


def test_a_files_defaults_reach_the_running_apis(daemon, placement_venv, tmp_path):
    """venv and environment said once in [defaults]: placement finds its config only through them,
    and a second API of the file (under the other server) gets them too, with its own variable winning."""
    placement_manifest(tmp_path, placement_venv)  # writes placement's config into this dir
    conf_dir = tmp_path / "placement"
    write_manifest(
        daemon.conf_dir,
        f"""
[defaults]
venv = "{placement_venv}"
environment = {{ OS_PLACEMENT_CONFIG_DIR = "{conf_dir}", OS_SITE = "defaults" }}

[services.placement]
kind = "api"
app = "placement.wsgi.api:application"
mount = "/placement"

[services.probe]
kind = "api"
server = "gunicorn"
app = "{PROBE}"
environment = {{ OS_SITE = "probe's own", PROBE_ONLY = "yes" }}
""",
    )
    daemon.start()
    daemon.ctl("start", "placement", "probe", "--timeout", "120")
    status, _, body = uwsgi_request(daemon.socket("placement"), "/placement/resource_providers", headers=HEADERS)
    assert status == 200 and json.loads(body) == {"resource_providers": []}, body
    answer = get_json(daemon.socket("probe"))
    assert Path(answer["prefix"]) == placement_venv
    assert answer["env"] == {"OS_PLACEMENT_CONFIG_DIR": str(conf_dir), "OS_SITE": "probe's own", "PROBE_ONLY": "yes"}


def test_contrib_openstack_placement_serves_with_this_hosts_defaults(daemon, placement_venv, tmp_path):
    """contrib/openstack/placement.toml as shipped, only its [defaults] set for this host (no user here)."""
    placement_manifest(tmp_path, placement_venv)  # writes placement's config into this dir
    text = contrib_for_this_host("placement", placement_venv, tmp_path / "placement")
    write_manifest(daemon.conf_dir, text, name="placement.toml")
    daemon.start()
    daemon.ctl("start", "placement", "--timeout", "120")
    status, _, body = uwsgi_request(daemon.socket("placement"), "/placement/resource_providers", headers=HEADERS)
    assert status == 200 and json.loads(body) == {"resource_providers": []}, body
