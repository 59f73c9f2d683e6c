"""End to end with contrib/openstack/magnum.toml: magnum from PyPI, its API at devstack's /container-infra."""

import json
import shutil

import pytest

from support import contrib_for_this_host, service_venv, uwsgi_request, write_manifest


@pytest.fixture(scope="session")
def magnum_venv():
    """magnum, pyuwsgi and gunicorn in a venv of their own (made once, ~30 s)."""
    return service_venv("magnum", "magnum")


def test_contrib_openstack_magnum_serves_at_container_infra_with_this_hosts_defaults(daemon, magnum_venv, tmp_path):
    """contrib/openstack/magnum.toml as shipped, only its [defaults] set for this host (no user here): the API
    answers at the catalog path devstack gives it, its links lead there, and /healthcheck answers through it."""
    conf = tmp_path / "etc"
    conf.mkdir()
    # api-paste.ini is found beside magnum.conf; its public routes (/, /v1) need no keystone
    shutil.copy(magnum_venv / "etc" / "magnum" / "api-paste.ini", conf)
    (conf / "magnum.conf").write_text(f"[database]\nconnection = sqlite:///{tmp_path}/magnum.sqlite\n")
    text = contrib_for_this_host("magnum", magnum_venv, conf)
    write_manifest(daemon.conf_dir, text, name="magnum.toml")
    daemon.start()
    daemon.ctl("start", "magnum-api", "--timeout", "120")  # its conductor needs a message bus: not here

    status, _, body = uwsgi_request(daemon.socket("magnum-api"), "/container-infra/v1")
    assert status == 200, (status, body)
    links = {link["rel"]: link["href"] for link in json.loads(body)["links"]}
    assert links["self"] == "http://test/container-infra/v1/", links
    assert uwsgi_request(daemon.socket("magnum-api"), "/container-infra/healthcheck")[0] == 200
