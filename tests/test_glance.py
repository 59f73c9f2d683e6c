"""End to end with real glance from PyPI: image uploads through real Apache and nginx.

glance serves `protocol = "http"` (its chunked uploads read uwsgi.chunked_read()
themselves), with the file store, SQLite and the paste pipeline without keystone.
"""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time

import pytest
from frontends import Apache, Nginx, proxy_config

from support import Daemon, contrib_for_this_host, free_port, http_request, service_venv, write_manifest

FRONTS = {"apache": Apache, "nginx": Nginx}
# who calls, as keystonemiddleware would tell glance after checking a token
IDENTITY = {"X-Identity-Status": "Confirmed", "X-User-Id": "demo", "X-Project-Id": "demo", "X-Roles": "admin,member"}

pytestmark = pytest.mark.skipif(
    shutil.which("apache2") is None or shutil.which("nginx") is None or shutil.which("curl") is None,
    reason="needs apache2, nginx and curl",
)


@pytest.fixture(scope="session")
def glance_venv():
    """glance, pyuwsgi and gunicorn in a venv of their own (made once, ~2 min)."""
    return service_venv("glance", "glance")


@pytest.fixture(scope="session")
def glance_db(glance_venv, tmp_path_factory):
    """glance's SQLite database, made once (glance-manage db_sync) and copied for each server's glance."""
    tmp = tmp_path_factory.mktemp("glance-db")
    (tmp / "glance-manage.conf").write_text(f"[database]\nconnection = sqlite:///{tmp / 'glance.sqlite'}\n")
    subprocess.run(
        # by the venv's Python: the script's #! names the path the venv was made at, which a cached venv outlives
        [
            str(glance_venv / "bin" / "python3"),
            str(glance_venv / "bin" / "glance-manage"),
            *("--config-file", str(tmp / "glance-manage.conf"), "db_sync"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp / "glance.sqlite"


@pytest.fixture(scope="module", params=["uwsgi", "gunicorn"])
def server(request):
    """conftest's `server`, module-wide: one glance per server serves every test here."""
    return request.param


def glance_conf(tmp, glance_venv, glance_db):
    """glance's config dir under `tmp` (file store, SQLite, its pipeline without keystone); returns it."""
    conf = tmp / "etc"
    conf.mkdir()
    images = tmp / "images"
    for store in ("images", "staging", "tasks"):
        (tmp / store).mkdir()
    (conf / "glance-api.conf").write_text(
        f"""
[DEFAULT]
enabled_backends = fs:file
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {images}
[os_glance_staging_store]
filesystem_store_datadir = {tmp / "staging"}
[os_glance_tasks_store]
filesystem_store_datadir = {tmp / "tasks"}
[database]
connection = sqlite:///{tmp / "glance.sqlite"}
[oslo_policy]
policy_file = {conf / "policy.yaml"}
[paste_deploy]
config_file = {conf / "glance-api-paste.ini"}
"""
    )
    # glance's own pipeline, with the identity taken from the headers keystonemiddleware would set
    # (the requests below send them: an import's task needs a project to own it)
    paste = (glance_venv / "etc" / "glance" / "glance-api-paste.ini").read_text()
    (conf / "glance-api-paste.ini").write_text(paste.replace(" unauthenticated-context rootapp", " context rootapp"))
    # no keystone: the pipeline's context has no roles, so the image calls are opened to it
    rules = ("add_image", "get_image", "get_images", "modify_image", "upload_image", "download_image", "delete_image")
    (conf / "policy.yaml").write_text("".join(f'"{rule}": ""\n' for rule in rules))
    shutil.copy(glance_db, tmp / "glance.sqlite")
    return conf


@pytest.fixture(scope="module")
def glance(server, glance_venv, glance_db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glance")
    conf = glance_conf(tmp, glance_venv, glance_db)
    d = Daemon(tmp, extra_args=["--socket-group", "www-data"])
    write_manifest(
        d.conf_dir,
        f"""
[services.glance]
kind = "api"
app = "glance.wsgi.api:application"
venv = "{glance_venv}"
processes = 2
protocol = "http"
mount = "/image"
# a reload retires the old vassal: it gets this long to finish an upload in flight
stop_timeout = 60
environment = {{ OS_GLANCE_CONFIG_DIR = "{conf}" }}
""",
        server=server,
    )
    d.start()
    d.ctl("start", "glance", "--timeout", "120")
    fronts = {}
    try:
        for name, cls in FRONTS.items():
            port = free_port()
            fe = cls(tmp / name, proxy_config(d, name, port), port)
            checked = fe.check()
            assert checked.returncode == 0, checked.stdout + checked.stderr
            fronts[name] = fe.start()
        yield d, fronts
    finally:
        for fe in fronts.values():
            fe.stop()
        d.stop()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "image.raw"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    return path


def api(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {**IDENTITY, "Content-Type": "application/json"} if body is not None else dict(IDENTITY)
        conn.request(method, "/image" + path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def new_image(port):
    status, body = api(port, "POST", "/v2/images", {"name": "cirros", "disk_format": "raw", "container_format": "bare"})
    assert status == 201, body
    return json.loads(body)["id"]


def upload(port, image_id, path, chunked, rate=None):
    cmd = ["curl", "-sS", "-v", "-X", "PUT", "-T", str(path), "-H", "Content-Type: application/octet-stream"]
    for key, value in IDENTITY.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd += ["-o", "/dev/null", "-w", "%{http_code}"]
    if chunked:
        cmd += ["-H", "Transfer-Encoding: chunked"]
    if rate:
        cmd += ["--limit-rate", rate]
    cmd.append(f"http://127.0.0.1:{port}/image/v2/images/{image_id}/file")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "> Expect: 100-continue" in err  # curl asked for a 100 before sending the body
    return int(out)


def download_sha256(port, image_id):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", f"/image/v2/images/{image_id}/file", headers=IDENTITY)
        resp = conn.getresponse()
        assert resp.status == 200
        digest = hashlib.sha256()
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        conn.close()


def check_stored(port, image_id, path):
    data = path.read_bytes()
    status, body = api(port, "GET", f"/v2/images/{image_id}")
    assert status == 200
    image = json.loads(body)
    assert image["status"] == "active" and image["size"] == len(data)
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()  # what glance computed as it stored
    assert download_sha256(port, image_id) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("front", sorted(FRONTS))
def test_a_20mb_image_upload_through_each_front_end(glance, image_file, front, chunked):
    _, fronts = glance
    port = fronts[front].port
    image_id = new_image(port)
    assert finished(upload(port, image_id, image_file, chunked)) == 204
    check_stored(port, image_id, image_file)


def test_a_reload_while_an_upload_is_in_flight_loses_nothing(glance, image_file):
    d, fronts = glance
    port = fronts["apache"].port
    before = {w["pid"] for w in d.status()["glance"]["workers"]}
    image_id = new_image(port)
    proc = upload(port, image_id, image_file, chunked=True, rate="2M")  # ~10 s for 20 MB
    deadline = time.monotonic() + 30
    while json.loads(api(port, "GET", f"/v2/images/{image_id}")[1])["status"] != "saving":
        assert proc.poll() is None and time.monotonic() < deadline, "the upload never started"
        time.sleep(0.1)
    assert proc.poll() is None, "the upload ended before the reload began: nothing was in flight"
    d.ctl("reload", "glance", "--timeout", "120")  # glance's new workers import for a few seconds
    assert finished(proc) == 204
    check_stored(port, image_id, image_file)
    s = d.status()["glance"]
    assert s["state"] == "running" and not before & {w["pid"] for w in s["workers"]}  # new workers serve now
    check_stored(port, new_image_uploaded(port, image_file), image_file)


def new_image_uploaded(port, path):
    image_id = new_image(port)
    assert finished(upload(port, image_id, path, chunked=False)) == 204
    return image_id


# -- an image import, which glance does after it answers ------------------------------------------

IMPORT_SIZE = 1024 * 1024 * 1024  # long enough to import that a reload's new workers are up before it ends


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """A 1 GiB image (random blocks, so that no store can skip them), with glance's sha512 of it."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    digest = hashlib.sha512()
    with path.open("wb") as out:
        block = os.urandom(1 << 20)
        for i in range(IMPORT_SIZE >> 20):
            piece = block[i % 1024 :] + block[: i % 1024]
            digest.update(piece)
            out.write(piece)
    return path, digest.hexdigest()


def stage(d, image_id, path):
    """PUT the data into glance's staging area (straight to its socket: 1 GiB through a front end
    only adds time), as `glance image-stage` does before a glance-direct import."""
    with path.open("rb") as body:
        status, _, answer = http_request(
            d.socket("glance"),
            f"/image/v2/images/{image_id}/stage",
            method="PUT",
            body=body,
            headers={
                **IDENTITY,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
            timeout=300,
        )
    assert status == 204, answer


def image_of(port, image_id):
    status, body = api(port, "GET", f"/v2/images/{image_id}")
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("operation", ["reload", "restart", "stop"])
def test_a_glance_direct_import_in_progress_survives(glance, big_image, tmp_path, operation):
    """glance answers an import with 202 and copies the image in a thread of the worker: a reload,
    restart or stop must let that thread finish (issue 27: a SIGKILL left the image `importing`
    for ever, its file cut short)."""
    d, fronts = glance
    port = fronts["nginx"].port
    path, sha512 = big_image
    image_id = new_image(port)
    stage(d, image_id, path)
    status, body = api(port, "POST", f"/v2/images/{image_id}/import", {"method": {"name": "glance-direct"}})
    assert status == 202, body
    began = time.monotonic()
    while (image := image_of(port, image_id))["status"] == "uploading":  # till the import's thread takes it
        assert time.monotonic() - began < 30, image
        time.sleep(0.05)
    assert image["status"] == "importing", image
    if operation == "stop":
        d.ctl("stop", "glance")
        d.ctl("start", "glance", "--timeout", "120")
    else:
        d.ctl(operation, "glance", "--timeout", "120")
    while (image := image_of(port, image_id))["status"] == "importing":
        assert time.monotonic() - began < 120, f"the import never ended: {image}"
        time.sleep(0.5)
    print(f"{operation}: the import ended {time.monotonic() - began:.1f}s after its call")
    assert image["status"] == "active", image
    assert image["size"] == IMPORT_SIZE and image["os_hash_value"] == sha512
    assert "SIGKILL" not in d.output()
    assert api(port, "DELETE", f"/v2/images/{image_id}")[0] == 204


def test_contrib_openstack_glance_serves_with_this_hosts_defaults(daemon, glance_venv, glance_db, tmp_path):
    """contrib/openstack/glance.toml as shipped, only its [defaults] set for this host (no user here): HTTP on
    its socket, ready only once /healthcheck answers, an image stored and read back through its mount."""
    conf = glance_conf(tmp_path, glance_venv, glance_db)
    text = contrib_for_this_host("glance", glance_venv, conf)
    write_manifest(daemon.conf_dir, text, name="glance.toml")
    daemon.start()
    daemon.ctl("start", "glance-api", "--timeout", "120")
    sock = daemon.socket("glance-api")
    body = json.dumps({"name": "contrib", "disk_format": "raw", "container_format": "bare"})
    headers = {**IDENTITY, "Content-Type": "application/json"}
    status, _, created = http_request(sock, "/image/v2/images", "POST", body, headers)
    assert status == 201, created
    image_id = json.loads(created)["id"]
    data = os.urandom(1024 * 1024)
    headers = {**IDENTITY, "Content-Type": "application/octet-stream"}
    status, _, _ = http_request(sock, f"/image/v2/images/{image_id}/file", "PUT", data, headers)
    assert status == 204
    status, _, stored = http_request(sock, f"/image/v2/images/{image_id}/file", headers=IDENTITY)
    assert status == 200 and stored == data
