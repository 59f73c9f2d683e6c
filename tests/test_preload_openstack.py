"""Real placement and keystone from PyPI with `preload = true`, under both servers: the guard lets them be
forked (placement's import-time database connection is closed first), and every worker answers, database
requests included."""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_placement import HEADERS, placement_manifest

from support import service_venv, uwsgi_request, write_manifest

KEYSTONE = "keystone==30.0.0"


@pytest.fixture(scope="session")
def placement_venv():
    return service_venv("placement", "openstack-placement")


@pytest.fixture(scope="session")
def keystone_venv():
    """keystone, pyuwsgi and gunicorn in a venv of their own (made once, a minute or two)."""
    return service_venv("keystone", KEYSTONE)


def keystone_manifest(tmp_path, venv) -> str:
    """keystone on SQLite, its schema made and its key repositories set up, with preload and a warm-up."""
    conf = tmp_path / "keystone"
    conf.mkdir()
    (conf / "keystone.conf").write_text(
        f"""
[database]
connection = sqlite:///{tmp_path}/keystone.sqlite
[fernet_tokens]
key_repository = {tmp_path}/fernet
[fernet_receipts]
key_repository = {tmp_path}/fernet
[credential]
key_repository = {tmp_path}/credential
"""
    )
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf / "keystone.conf")]
    for step in ("fernet_setup", "credential_setup"):
        subprocess.run([*manage, step, "--keystone-user", "root", "--keystone-group", "root"], check=True)
    subprocess.run([*manage, "db_sync"], check=True, capture_output=True)
    return f"""
[services.keystone]
kind = "api"
app = "keystone.wsgi.api:application"
venv = "{venv}"
processes = 2
preload = true
warmup = ["/", "/v3"]
environment = {{ OS_KEYSTONE_CONFIG_DIR = "{conf}" }}
"""


def every_worker_answers(daemon, name: str, ask) -> None:
    """`ask()` (a request that must succeed) from 4 clients at once, 40 times: with 2 single-threaded
    workers both serve; then status must show requests counted by every worker."""
    with ThreadPoolExecutor(4) as pool:
        failed = [r for r in pool.map(lambda _: ask(), range(40)) if r is not None]
    assert failed == []
    daemon.wait_for(
        lambda s: s[name].get("workers") and all(w["requests"] > 0 for w in s[name]["workers"]),
        what=f"requests counted by every worker of {name}",
    )


def test_placement_preloaded(daemon, server, placement_venv, tmp_path):
    text = placement_manifest(tmp_path, placement_venv) + 'preload = true\nwarmup = ["/"]\n'
    write_manifest(daemon.conf_dir, text, server=server)
    daemon.start()
    daemon.ctl("start", "placement", "--timeout", "120")
    s = daemon.status()["placement"]
    assert s["preload"] == "shared", daemon.ctl("status", "placement").stdout

    def ask():  # a database query in whichever worker takes it
        status, _, body = uwsgi_request(daemon.socket("placement"), "/resource_providers", headers=HEADERS)
        return None if status == 200 and json.loads(body) == {"resource_providers": []} else (status, body)

    every_worker_answers(daemon, "placement", ask)


def test_keystone_preloaded(daemon, server, keystone_venv, tmp_path):
    write_manifest(daemon.conf_dir, keystone_manifest(tmp_path, keystone_venv), server=server)
    daemon.start()
    daemon.ctl("start", "keystone", "--timeout", "120")
    assert daemon.status()["keystone"]["preload"] == "shared", daemon.ctl("status", "keystone").stdout
    password = {"user": {"name": "nobody", "domain": {"id": "default"}, "password": "wrong"}}
    token_request = json.dumps({"auth": {"identity": {"methods": ["password"], "password": password}}}).encode()

    def ask():
        status, _, body = uwsgi_request(daemon.socket("keystone"), "/v3", headers={})
        if status != 200 or json.loads(body)["version"]["id"] != "v3.14":
            return ("/v3", status, body)
        # the database answers: the domain is looked up, and not found (401, not 500)
        status, _, body = uwsgi_request(
            daemon.socket("keystone"),
            "/v3/auth/tokens",
            method="POST",
            body=token_request,
            headers={"Content-Type": "application/json"},
        )
        return None if status == 401 else ("/v3/auth/tokens", status, body)

    every_worker_answers(daemon, "keystone", ask)
