"""Apache and nginx in front, with configs from `wsgictl proxy-config`, end to end."""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time

import pytest
from frontends import Apache, Nginx, proxy_config

from support import APPS, Daemon, free_port, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"
PLAIN = APPS / "plain.py"  # a PEP 3333 app that reads wsgi.input and knows nothing of uWSGI
MANIFEST = f"""
[services.identity]
kind = "api"
app = "{PROBE}"
processes = 1
mount = "/identity"

[services.compute]
kind = "api"
app = "{PROBE}"
processes = 1
mount = "/compute"

[services.metadata]
kind = "api"
app = "{PROBE}"
processes = 1
mount = "/compute/metadata"

[services.image]
kind = "api"
app = "{PROBE}"
processes = 2
protocol = "http"
mount = "/image"

[services.files]
kind = "api"
app = "{PLAIN}"
processes = 1
protocol = "http"
mount = "/files"

[services.objects]
kind = "api"
app = "{PLAIN}"
processes = 1
mount = "/objects"
"""

SERVERS = {"apache": Apache, "nginx": Nginx}


@pytest.fixture(scope="module", params=["uwsgi", "gunicorn"])
def server(request):
    """conftest's `server`, module-wide: one daemon per server serves every test here."""
    return request.param


@pytest.fixture(scope="module")
def apis(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apis")
    d = Daemon(tmp, extra_args=["--socket-group", "www-data"])
    write_manifest(d.conf_dir, MANIFEST, server=server)
    d.start()
    d.ctl("start", "--all")
    yield d
    d.stop()


@pytest.fixture(params=sorted(SERVERS))
def front(request, apis, tmp_path):
    if shutil.which("apache2" if request.param == "apache" else "nginx") is None:
        pytest.skip(f"{request.param} is not installed")
    port = free_port()
    fe = SERVERS[request.param](tmp_path / request.param, proxy_config(apis, request.param, port), port)
    checked = fe.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr  # apache2 -t / nginx -t
    fe.start()
    yield fe
    fe.stop()


def get(port, path, method="GET", body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=body,
            headers=headers or {},
            encode_chunked=headers is not None and "Transfer-Encoding" in headers,
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path, service, script_name, path_info",
    [
        ("/identity/v3/auth/tokens", "identity", "/identity", "/v3/auth/tokens"),
        ("/identity", "identity", "/identity", ""),
        ("/identity/", "identity", "/identity", "/"),
        ("/compute/v2.1/servers", "compute", "/compute", "/v2.1/servers"),
        ("/compute/metadata/openstack/latest", "metadata", "/compute/metadata", "/openstack/latest"),
        ("/compute/metadata", "metadata", "/compute/metadata", ""),
        ("/image/v2/images", "image", "/image", "/v2/images"),
        # the front end decodes the path once, and the server not again
        ("/identity/v3/a%2525b%20c", "identity", "/identity", "/v3/a%25b c"),
        ("/image/v2/a%2525b%20c", "image", "/image", "/v2/a%25b c"),
    ],
)
def test_every_mount_answers_with_its_script_name(apis, front, path, service, script_name, path_info):
    status, body = get(front.port, path)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["script_name"] == script_name
    assert answer["path_info"] in (path_info, path_info or "/")
    assert answer["request_uri"] == path
    if service != "image":  # the uwsgi protocol carries the client's address, as the front end saw it
        assert answer["remote_addr"] == "127.0.0.1"
    pids = {w["pid"] for w in apis.status()[service]["workers"]}
    assert answer["pid"] in pids


@pytest.mark.parametrize("path", ["/identity/v3", "/image/v2/images"], ids=["uwsgi", "http"])
def test_the_app_sees_the_host_and_port_the_client_asked_for(apis, front, path):
    """APIs build absolute URLs from Host (heat's redirect to a stack, version documents' links): behind a
    front end on a port of its own they must keep the port, whichever protocol reaches the API."""
    status, body = get(front.port, path)
    assert status == 200, body
    assert json.loads(body)["host"] == f"127.0.0.1:{front.port}"


def test_no_mount_is_matched_by_a_longer_word(apis, front):
    status, body = get(front.port, "/identityfoo")
    assert status in (403, 404) and b"script_name" not in body  # the front end's own answer, not the API's


def test_a_20mb_chunked_upload_arrives_intact(apis, front):
    data = os.urandom(20 * 1024 * 1024)

    def chunks():
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    status, body = get(
        front.port,
        "/image/v2/images/abc/file",
        method="PUT",
        body=chunks(),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["body"] == len(data) and answer["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def body20(tmp_path_factory):
    path = tmp_path_factory.mktemp("body") / "20mb"
    data = os.urandom(20 * 1024 * 1024)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def curl_put(url, path, chunked, out):
    """curl -T: for a body over 1 MiB (or of unknown size, chunked) curl sends `Expect: 100-continue`."""
    cmd = ["curl", "-sS", "-v", "-T", str(path), "-o", str(out), "-w", "%{http_code}", url]
    if chunked:
        cmd[1:1] = ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout), done.stderr


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize(
    "mount, protocol, plain",
    [
        ("/files", "http", True),  # reads wsgi.input
        ("/objects", "uwsgi", True),
        ("/image", "http", False),  # reads a chunked body with uwsgi.chunked_read(), as glance does
        ("/compute", "uwsgi", False),
    ],
)
def test_curl_uploads_20mb_with_expect_100_continue(
    server, apis, front, body20, tmp_path, mount, protocol, plain, chunked
):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    path, digest = body20
    status, trace = curl_put(f"http://127.0.0.1:{front.port}{mount}/v2/upload", path, chunked, tmp_path / "out")
    assert "> Expect: 100-continue" in trace  # what this test is about
    body = (tmp_path / "out").read_bytes()
    if front.name == "apache" and protocol == "uwsgi" and chunked:
        # mod_proxy_uwsgi refuses chunked request bodies outright (docs/frontends.md: use protocol = "http")
        assert status == 411, body
        return
    assert status == 200, body
    # the front end answered 100 itself; curl did not give up waiting and send anyway
    assert "< HTTP/1.1 100 Continue" in trace and "Done waiting for 100-continue" not in trace
    answer = json.loads(body)
    assert answer["body"] == path.stat().st_size and answer["sha256"] == digest
    if plain:
        assert answer["input_terminated"] is True and answer["script_name"] == mount
    if plain and chunked and protocol == "uwsgi":
        # nginx took the chunks apart and sends a Content-Length: the stale Transfer-Encoding is dropped
        assert (answer["content_length"], answer["transfer_encoding"]) == (str(answer["body"]), ""), answer
    elif not plain and chunked and protocol == "http":
        # still chunked when it arrives: uWSGI's chunked API reads it; gunicorn has no such API (wsgi.input has it)
        assert answer["reader"] == ("chunked_read" if server == "uwsgi" else "wsgi.input")


def test_a_plain_app_reads_a_chunked_body_line_by_line(apis, front, body20, tmp_path):
    path, digest = body20
    status, _ = curl_put(f"http://127.0.0.1:{front.port}/files/x?readline", path, True, tmp_path / "out")
    answer = json.loads((tmp_path / "out").read_bytes())
    assert status == 200 and answer["sha256"] == digest and answer["transfer_encoding"] == "chunked"


def test_one_api_down_answers_503_quickly_and_the_others_200(apis, front):
    apis.ctl("stop", "compute")
    try:
        started = time.monotonic()
        status, _ = get(front.port, "/compute/v2.1/servers")
        took = time.monotonic() - started
        assert status in (502, 503) and took < 1.0
        assert get(front.port, "/identity/v3")[0] == 200
        assert get(front.port, "/compute/metadata/x")[0] == 200
        assert get(front.port, "/image/v2/images")[0] == 200
        assert get(front.port, "/files/x")[0] == 200
    finally:
        apis.ctl("start", "compute")
    assert get(front.port, "/compute/v2.1/servers")[0] == 200


def test_reloading_the_front_end_restarts_no_api(apis, front):
    before = {n: s["pid"] for n, s in apis.status().items()}
    front.reload()
    time.sleep(1)
    assert get(front.port, "/identity/v3")[0] == 200
    assert {n: s["pid"] for n, s in apis.status().items()} == before


def test_sockets_belong_to_the_front_end_group_and_nobody_else(apis):
    sock = apis.socket("identity")
    st = sock.stat()
    assert st.st_gid == 33 and (st.st_mode & 0o777) == 0o660
    code = (
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({str(sock)!r})\nexcept PermissionError:\n    sys.exit(13)\n"
    )
    log_mark(apis, "identity", "before-hangup")
    as_www = subprocess.run(["/usr/bin/python3", "-c", code], user="www-data", group="www-data", extra_groups=[])
    as_nobody = subprocess.run(["/usr/bin/python3", "-c", code], user="nobody", group="nogroup", extra_groups=[])
    assert as_www.returncode == 0 and as_nobody.returncode == 13
    # www-data connected and hung up without a request: no error for the service (its one worker logs in order)
    between = log_mark(apis, "identity", "after-hangup").split("probe asked to log: before-hangup", 1)[1]
    assert "Traceback" not in between and "Error handling request" not in between, between


def log_mark(apis, name, mark):
    """The service's recent log, once the line its app printed for a request to /log?MARK is in it."""
    assert uwsgi_request(apis.socket(name), f"/log?{mark}")[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = apis.ctl("logs", name, "-n", "200").stdout
        if f"probe asked to log: {mark}" in logs:
            return logs
        time.sleep(0.05)
    raise AssertionError(f"{mark!r} never reached the log of {name}:\n{logs}")
