"""Rendering vassal files: the one place that knows uWSGI option names."""

from pathlib import Path

from supervisor.layout import Layout
from supervisor.manifest import ApiService
from supervisor.uwsgi import (
    PASTE_ENV,
    PASTE_LOADER,
    parse_request,
    read_launch_spec,
    render_vassal,
    split_datagram,
)

LAYOUT = Layout(Path("/run/wsgi-supervisor"))
VENV = Path("/opt/venv")


def render(**fields):
    return render_vassal("keystone", ApiService(kind="api", app="keystone.wsgi.api", **fields), LAYOUT, VENV)


def options(text):
    return [line.split(" = ", 1) for line in text.splitlines()[2:]]


def test_the_vassal_has_the_options_deployments_converged_on():
    opts = dict(options(render(processes=4)))
    for key, value in {
        "strict": "true",
        "master": "true",
        "need-app": "true",
        "lazy-apps": "true",
        "die-on-term": "true",
        "processes": "4",
        "socket": "/run/wsgi-supervisor/keystone.sock",
        "module": "keystone.wsgi.api",
        "binary-path": "/opt/venv/bin/python3",
        "stats": "/run/wsgi-supervisor/stats/keystone.sock",
        "master-fifo": "/run/wsgi-supervisor/fifo/keystone.fifo",
    }.items():
        assert opts[key] == value, key
    assert "http-socket" not in opts


def test_http_protocol_and_chunked_uploads():
    opts = dict(options(render(protocol="http")))
    assert opts["http-socket"] == "/run/wsgi-supervisor/keystone.sock"
    assert opts["http-manage-expect"] == "1"  # a number: `true` would silently be 0
    assert opts["http-auto-chunked"] == "true" and opts["http-raw-body"] == "true"


def test_percent_is_escaped_and_each_value_stays_on_its_line():
    text = render(args=["--opt=50%", "%d"], uwsgi={"route": ["^/a break:404", "^/b break:403"]})
    assert "pyargv = --opt=50%% %%d" in text
    assert [v for k, v in options(text) if k == "route"] == ["^/a break:404", "^/b break:403"]
    assert all(line.count(" = ") >= 1 or line == "[uwsgi]" for line in text.splitlines()[1:])


def test_launch_line_carries_environment_as_json():
    text = render(environment={"A": "x\ny = z", "B": "%(evil)"}, venv="/srv/keystone")
    spec = read_launch_spec(text)
    assert spec["env"]["A"] == "x\ny = z" and spec["env"]["B"] == "%(evil)"
    assert spec["exec"] == ["/srv/keystone/bin/python3", "/srv/keystone/bin/uwsgi"]
    # the environment never reaches the ini part
    assert "evil" not in text.split("\n", 1)[1]


def test_datagrams_and_request_lines():
    assert split_datagram(b"keystone|o|hello\n") == ("keystone", "o", b"hello\n")
    assert split_datagram(b"*** Starting uWSGI") == (None, "o", b"*** Starting uWSGI")
    req = parse_request("GET 200 1500 12 127.0.0.1 /v3/auth tokens?x=1")
    assert (req.method, req.status, req.duration_s, req.size, req.path) == (
        "GET",
        200,
        0.0015,
        12,
        "/v3/auth tokens?x=1",
    )


def test_paste_apps_use_uwsgis_paste_loader_or_the_mount_loader():
    def paste(**fields):
        return render_vassal("barbican", ApiService(kind="api", paste="/etc/b/paste.ini", **fields), LAYOUT, VENV)

    opts = dict(options(paste()))
    assert opts["paste"] == "config:/etc/b/paste.ini" and "module" not in opts and "mount" not in opts
    assert dict(options(paste(paste_app="main-api")))["paste"] == "config:/etc/b/paste.ini#main-api"
    # uWSGI's mount reads config:FILE#NAME as a module: a mounted paste app is loaded by a file of ours
    text = paste(paste_app="admin", mount="/key-manager")
    opts = dict(options(text))
    assert opts["mount"] == f"/key-manager={PASTE_LOADER}" and "paste" not in opts
    assert read_launch_spec(text)["env"][PASTE_ENV] == "config:/etc/b/paste.ini#admin"
    assert PASTE_ENV not in read_launch_spec(paste())["env"]
