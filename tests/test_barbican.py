"""End to end with a real paste-deploy OpenStack API: barbican from PyPI, in its own venv, from its paste ini."""

import json
import shutil

import pytest

from support import contrib_for_this_host, service_venv, uwsgi_request, write_manifest


@pytest.fixture(scope="session")
def barbican_venv():
    """barbican, pyuwsgi and gunicorn in a venv of their own (made once)."""
    return service_venv("barbican", "barbican")


def test_barbican_serves_from_its_own_paste_ini(daemon, server, barbican_venv, tmp_path):
    # the paste file the package ships (barbican's wsgi module would read /etc/barbican/ instead)
    paste = next(barbican_venv.glob("etc/barbican/barbican-api-paste.ini"))
    services = ""
    for name, extra in (("barbican", ""), ("barbican-health", 'paste_app = "healthcheck"\nmount = "/key-manager"')):
        services += f"""
[services.{name}]
kind = "api"
paste = "{paste}"
venv = "{barbican_venv}"
processes = 1
{extra}
[services.{name}.environment]
# barbican parses no argv; oslo.config reads OS_<GROUP>__<OPTION> too (the main app opens its database at load)
OS_DATABASE__CONNECTION = "sqlite:///{tmp_path}/{name}.sqlite"
OS_DEFAULT__DB_AUTO_CREATE = "true"
"""
    write_manifest(daemon.conf_dir, services, server=server)
    check = daemon.ctl("check", check=False)
    assert check.returncode == 0, check.stderr
    daemon.start()
    daemon.ctl("start", "barbican", "barbican-health", "--timeout", "120")

    # the main composite (paste's urlmap): "/" is the versions pipeline, which needs no auth
    status, _, body = uwsgi_request(daemon.socket("barbican"), "/")
    assert status == 300, (status, body)
    assert "versions" in json.loads(body)

    # one named app of that file, under a mount (oslo.middleware's healthcheck, which barbican's urlmap also serves)
    status, _, body = uwsgi_request(daemon.socket("barbican-health"), "/key-manager/")
    assert (status, body) == (200, b"OK")

    # an upgrade in place adopts the running masters, in a venv with setproctitle (OpenStack's have it,
    # and gunicorn renames its processes with it): the same pids serve on
    before = {name: s["pid"] for name, s in daemon.status().items()}
    daemon.ctl("daemon-reexec")
    for name in before:
        daemon.wait_state(name, "running")
    assert {name: s["pid"] for name, s in daemon.status().items()} == before
    assert uwsgi_request(daemon.socket("barbican-health"), "/key-manager/")[:3:2] == (200, b"OK")
    # barbican's own API: /v1 is the keystone pipeline, which needs a keystone; its unauthenticated pipeline
    # (paste_app = "barbican_api") fails every request in barbican 23.0.0 with AttributeError: request_id


def test_contrib_openstack_barbican_serves_with_this_hosts_defaults(daemon, barbican_venv, tmp_path):
    """contrib/openstack/barbican.toml as shipped, only its [defaults] set for this host (no user here): the
    config dir names the paste file, and the API is ready only once /healthcheck answers through it."""
    conf = tmp_path / "etc"
    conf.mkdir()
    shutil.copy(next(barbican_venv.glob("etc/barbican/barbican-api-paste.ini")), conf)
    database = f'OS_DATABASE__CONNECTION = "sqlite:///{tmp_path}/b.sqlite", OS_DEFAULT__DB_AUTO_CREATE = "true"'
    text = contrib_for_this_host("barbican", barbican_venv, conf, database)
    write_manifest(daemon.conf_dir, text, name="barbican.toml")
    daemon.start()
    daemon.ctl("start", "barbican-api", "--timeout", "120")  # its workers need a message bus: not here
    status, _, body = uwsgi_request(daemon.socket("barbican-api"), "/key-manager/")
    assert status == 300 and "versions" in json.loads(body), (status, body)
    assert uwsgi_request(daemon.socket("barbican-api"), "/key-manager/healthcheck")[:3:2] == (200, b"OK")
