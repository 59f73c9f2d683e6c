"""Rendering vassal files: the one place that knows uWSGI option names."""

import os
import pwd
from pathlib import Path

from supervisor.layout import Layout
from supervisor.manifest.models import ApiService
from supervisor.uwsgi.core import (
    APP_FILE,
    APP_VARIABLE,
    REQUEST_MARK,
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
    # on "\n" only, as uWSGI reads it: str.splitlines would also split at the request mark (\x1e)
    return [line.split(" = ", 1) for line in text.rstrip("\n").split("\n")[2:]]


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
        "wsgi-file": str(APP_FILE),
        "binary-path": "/opt/venv/bin/python3",
        "stats": "/run/wsgi-supervisor/stats/keystone/stats.sock",
        "master-fifo": "/run/wsgi-supervisor/stats/keystone/master.fifo",
    }.items():
        assert opts[key] == value, key
    assert "http-socket" not in opts and "module" not in opts
    # no process titles: in the launcher's own process they overwrote the heap (barbican's workers segfaulted)
    assert not [key for key in opts if "procname" in key]
    # the wrapper imports the app the manifest names
    env = read_launch_spec(render(processes=4))["env"]
    assert env["WSGI_SUPERVISOR_APP"] == "keystone.wsgi.api" and env["WSGI_SUPERVISOR_PROTOCOL"] == "uwsgi"


def test_a_mount_loads_the_wrapper_under_its_prefix():
    text = render_vassal(
        "keystone",
        ApiService(kind="api", app="/srv/keystone/wsgi.py", mount="/identity"),
        LAYOUT,
        VENV,
    )
    opts = dict(options(text))
    assert opts["mount"] == f"/identity={APP_FILE}" and opts["manage-script-name"] == "true"
    assert read_launch_spec(text)["env"]["WSGI_SUPERVISOR_APP"] == "/srv/keystone/wsgi.py"


def test_http_protocol_and_chunked_uploads():
    opts = dict(options(render(protocol="http")))
    assert opts["http-socket"] == "/run/wsgi-supervisor/keystone.sock"
    # inert on an http-socket (only uWSGI's HTTP router answers 100-continue): the front end does
    assert "http-manage-expect" not in opts
    assert read_launch_spec(render(protocol="http"))["env"]["WSGI_SUPERVISOR_PROTOCOL"] == "http"
    assert opts["http-auto-chunked"] == "true" and opts["http-raw-body"] == "true"


def test_percent_is_escaped_and_each_value_stays_on_its_line():
    text = render(args=["--opt=50%", "%d"], uwsgi={"route": ["^/a break:404", "^/b break:403"]})
    assert "pyargv = --opt=50%% %%d" in text
    assert [v for k, v in options(text) if k == "route"] == ["^/a break:404", "^/b break:403"]
    assert all(line.count(" = ") >= 1 or line == "[uwsgi]" for line in text.rstrip("\n").split("\n")[1:])


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


def test_paste_apps_load_through_the_same_wrapper_with_or_without_a_mount():
    def paste(**fields):
        return render_vassal("barbican", ApiService(kind="api", paste="/etc/b/paste.ini", **fields), LAYOUT, VENV)

    text = paste()
    assert dict(options(text))["wsgi-file"] == str(APP_FILE) and "paste" not in dict(options(text))
    assert read_launch_spec(text)["env"][APP_VARIABLE] == "config:/etc/b/paste.ini"
    assert read_launch_spec(paste(paste_app="main-api"))["env"][APP_VARIABLE] == "config:/etc/b/paste.ini#main-api"
    # under a mount as well: uWSGI's own mount would read config:FILE#NAME as a module name
    text = paste(paste_app="admin", mount="/key-manager")
    assert dict(options(text))["mount"] == f"/key-manager={APP_FILE}"
    assert read_launch_spec(text)["env"][APP_VARIABLE] == "config:/etc/b/paste.ini#admin"


def test_the_launcher_asks_on_the_launch_socket_not_the_control_socket():
    from supervisor.uwsgi.launcher import launch_socket

    spec = read_launch_spec(render())
    assert launch_socket(spec) == str(LAYOUT.launch_socket) == "/run/wsgi-supervisor/daemon/launch.sock"
    assert "control" not in spec
    # a vassal file written by an earlier version (adopted after an upgrade) named the control socket
    assert launch_socket({"control": str(LAYOUT.control_socket)}) == str(LAYOUT.launch_socket)


def test_request_lines_travel_marked_in_the_output_fifo_of_each_instance():
    """One pipe from the workers for request lines and output, so the lines keep their order
    (supervisor/logs/fifos.py says why); each instance writes into a FIFO of its own."""
    opts = dict(options(render_vassal("keystone", ApiService(kind="api", app="k.wsgi"), LAYOUT, VENV, "b")))
    assert opts["logger"] == "fd:4"  # the launcher opens LAYOUT.vassal_log('keystone', 'b') there
    assert "req-logger" not in opts
    assert opts["log-format"].startswith(REQUEST_MARK + "%(method) %(status)")


def test_a_service_with_user_is_that_user_before_uwsgi_starts():
    """The launcher drops to the user (launch line): uWSGI gets no uid/gid to drop, and no chdir is `/`."""
    account = pwd.getpwnam("nobody")
    text = render(user="nobody")
    opts = dict(options(text))
    assert not {"uid", "gid", "master-as-root"} & set(opts)
    assert opts["chdir"] == "/"
    spec = read_launch_spec(text)
    assert spec is not None
    assert (int(spec["uid"]), int(spec["gid"])) == (account.pw_uid, account.pw_gid)
    assert spec["groups"].split("\0") == [str(g) for g in os.getgrouplist("nobody", account.pw_gid)]
    assert spec["rundir"] == str(LAYOUT.master_dir("keystone"))
    assert "uid" not in read_launch_spec(render())  # a service without user: as before, root's
    assert dict(options(render(chdir="/srv")))["chdir"] == "/srv"
