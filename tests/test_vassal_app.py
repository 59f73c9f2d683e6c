"""The WSGI wrapper every vassal loads (supervisor/uwsgi/vassal_app.py): whole bodies in wsgi.input."""

import hashlib
import io
import json
import os
import shutil

import pytest

from supervisor.uwsgi import vassal_app
from supervisor.uwsgi.vassal_app import ChunkedInput, load, wrap
from support import APPS, UnixHTTPConnection, uwsgi_request, write_manifest

PLAIN = APPS / "plain.py"


class Chunks:
    """uwsgi.chunked_read() over a list of chunks; counts the calls."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.chunks.pop(0) if self.chunks else b""


def test_read_returns_what_is_asked_across_chunks_and_nothing_is_read_before():
    source = Chunks([b"abc", b"defgh", b"i"])
    body = ChunkedInput(source)
    assert source.calls == 0
    assert body.read(4) == b"abcd" and source.calls == 2
    assert body.read(0) == b""
    assert body.read(100) == b"efghi"
    assert body.read(1) == b"" and body.read() == b""


def test_read_all_readline_readlines_and_iteration():
    text = b"one\ntwo\nthree\nfour"
    assert ChunkedInput(Chunks([b"on", b"e\ntw", b"o\nthree\nfour"])).read() == text
    lines = ChunkedInput(Chunks([b"on", b"e\ntw", b"o\nthree\nfour"]))
    assert lines.readline() == b"one\n" and lines.readline(2) == b"tw" and lines.readline() == b"o\n"
    assert list(lines) == [b"three\n", b"four"]
    assert ChunkedInput(Chunks([text])).readlines() == io.BytesIO(text).readlines()
    assert ChunkedInput(Chunks([text])).readlines(5) == [b"one\n", b"two\n"]
    assert ChunkedInput(Chunks([b"x" * 10])).readline(4) == b"xxxx"


def call(app, environ):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    return seen["status"], body


def test_only_a_chunked_body_without_length_gets_the_chunked_reader():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read(), repr(environ.get("HTTP_TRANSFER_ENCODING")).encode()]

    source = Chunks([b"12", b"345"])
    env = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"")}
    assert call(wrap(app, source, framed_by_length=False), env) == ("200 OK", b"12345'chunked'")
    assert env["wsgi.input_terminated"] is True
    # uwsgi protocol: the front end took the chunks apart and sent CONTENT_LENGTH
    env = {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc")}
    assert call(wrap(app, Chunks([]), framed_by_length=True), env) == ("200 OK", b"abcNone")
    env = {"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc")}
    assert call(wrap(app, Chunks([]), framed_by_length=False), env) == ("200 OK", b"abcNone")


def test_load_takes_a_module_path_or_a_file_with_or_without_py(tmp_path):
    script = tmp_path / "keystone-wsgi-public"  # an old pbr wsgi script has no .py
    shutil.copy(PLAIN, script)
    assert load(str(script)).__name__ == "application"
    assert load(str(PLAIN)).__module__.startswith("uwsgi_file_")
    assert load("supervisor.uwsgi.vassal_app:ChunkedInput.read") is ChunkedInput.read
    with pytest.raises(AttributeError, match="no WSGI callable 'nothing'"):
        load("supervisor.uwsgi.vassal_app:nothing")
    with pytest.raises(ModuleNotFoundError):
        load("no_such_module.wsgi")
    assert not hasattr(vassal_app, "application")  # outside uWSGI nothing is loaded


def http_put(sock, path, data, chunked):
    conn = UnixHTTPConnection(sock, timeout=60)
    try:
        if chunked:
            pieces = (data[i : i + 65536] for i in range(0, len(data), 65536))
            conn.request("PUT", path, body=pieces, headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        else:
            conn.request("PUT", path, body=data)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "length"])
def test_every_app_form_gets_the_whole_body(daemon, tmp_path, chunked):
    script = tmp_path / "plain-wsgi"
    shutil.copy(PLAIN, script)
    write_manifest(
        daemon.conf_dir,
        f"""
[services.byfile]
kind = "api"
app = "{script}"
processes = 1
protocol = "http"

[services.bymodule]
kind = "api"
app = "plain:application"
processes = 1
protocol = "http"
mount = "/objects"
environment = {{ PYTHONPATH = "{APPS}" }}
""",
    )
    daemon.start()
    daemon.ctl("start", "--all")
    data = os.urandom(3 * 1024 * 1024 + 17)
    for name, path in (("byfile", "/x?readline"), ("bymodule", "/objects/v1/x")):
        status, body = http_put(daemon.socket(name), path, data, chunked)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["body"] == len(data) and answer["sha256"] == hashlib.sha256(data).hexdigest()
        assert answer["input_terminated"] is True and answer["supervisor_env"] == []
    assert (answer["script_name"], answer["path_info"]) == ("/objects", "/v1/x")


def test_an_app_that_fails_to_import_is_reported_as_before(daemon):
    write_manifest(
        daemon.conf_dir,
        f"""
[services.broken]
kind = "api"
app = "{APPS / "probe.py"}"
processes = 1
environment = {{ PROBE_FAIL_IMPORT = "no database" }}
""",
    )
    daemon.start()
    s = daemon.wait_state("broken", "backoff")
    assert "the app failed to load" in s["reason"]
    assert "RuntimeError: probe app refuses to import: no database" in s["reason"]


def test_a_plain_app_reads_a_uwsgi_protocol_body(daemon):
    write_manifest(daemon.conf_dir, f'[services.plain]\nkind = "api"\napp = "{PLAIN}"\nprocesses = 1\n')
    daemon.start()
    daemon.ctl("start", "plain")
    status, _, body = uwsgi_request(daemon.socket("plain"), "/x", method="PUT", body=b"z" * 100000)
    assert status == 200 and json.loads(body)["body"] == 100000
