"""paste-deploy apps from the manifest (`paste`), served by the real daemon, `wsgictl serve` and `import`."""

import json
import subprocess
import urllib.request

from support import APPS, WSGICTL, http_request, stop_foreground, uwsgi_request, write_manifest

INI = APPS / "pasteapp.ini"


def paste_services(daemon, server):
    # the factories' module is found on PYTHONPATH, as an OpenStack project's is in its venv
    write_manifest(
        daemon.conf_dir,
        f"""
[services.root]
kind = "api"
paste = "{INI}"
processes = 1
args = ["--config-file", "/etc/root.conf"]
environment = {{ PYTHONPATH = "{APPS}" }}

[services.admin]
kind = "api"
paste = "{INI}"
paste_app = "admin"
mount = "/admin"
protocol = "http"
processes = 1
environment = {{ PYTHONPATH = "{APPS}" }}
""",
        server=server,
    )


def test_paste_apps_serve_from_the_manifest(daemon, server):
    paste_services(daemon, server)
    daemon.start()
    daemon.ctl("start", "root", "admin")

    status, _, body = uwsgi_request(daemon.socket("root"), "/v1/secrets")
    assert status == 200, body
    answer = json.loads(body)
    # the main pipeline: its filter ran, then its app, built from the ini file's own section
    assert answer["greeting"] == "hello from main" and answer["filtered"] is True
    assert answer["ini"] == str(INI)
    assert answer["path_info"] == "/v1/secrets" and answer["argv"][1:] == ["--config-file", "/etc/root.conf"]

    status, _, body = http_request(daemon.socket("admin"), "/admin/v1/things")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["greeting"] == "hello from admin" and answer["filtered"] is False
    assert (answer["script_name"], answer["path_info"]) == ("/admin", "/v1/things")

    daemon.ctl("reload", "admin")
    assert json.loads(http_request(daemon.socket("admin"), "/admin/x")[2])["greeting"] == "hello from admin"


def test_a_paste_app_that_cannot_load_says_why(daemon, server, tmp_path):
    ini = tmp_path / "broken-paste.ini"
    ini.write_text("[app:main]\npaste.app_factory = pasteapp:app_factory\n")
    write_manifest(
        daemon.conf_dir,
        f'[services.broken]\nkind = "api"\npaste = "{ini}"\npaste_app = "nope"\nprocesses = 1\n',
        server=server,
    )
    daemon.start()
    s = daemon.wait_state("broken", "backoff")
    assert "the app failed to load" in s["reason"]
    assert "LookupError: No section 'nope'" in s["reason"], s["reason"]


def test_serve_runs_a_paste_app(tmp_path, server):
    """wsgictl serve runs the app on wsgiref whichever server the manifest names: the same app, in the foreground."""
    from support import free_port

    conf = tmp_path / "conf.d"
    write_manifest(
        conf,
        f'[services.admin]\nkind = "api"\npaste = "{INI}"\npaste_app = "admin"\nmount = "/admin"\n'
        f'environment = {{ PYTHONPATH = "{APPS}" }}\n',
        server=server,
    )
    port = free_port()
    serve = subprocess.Popen(
        [str(WSGICTL), "--runtime-dir", str(tmp_path), "--conf-dir", str(conf), "serve", "admin", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving admin on http://127.0.0.1:" in serve.stderr.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/v1/x", timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["greeting"] == "hello from admin"
        assert (answer["script_name"], answer["path_info"]) == ("/admin", "/v1/x")
    finally:
        stop_foreground(serve)


def test_import_maps_uwsgis_paste_option(tmp_path):
    import tomllib

    (tmp_path / "barbican-api.ini").write_text(
        "[uwsgi]\nsocket = /run/uwsgi/barbican.sock\npaste = config:/etc/barbican/barbican-api-paste.ini\n"
        "paste-logger = true\nprocesses = 2\n"
    )
    (tmp_path / "keystone-admin.ini").write_text(
        "[uwsgi]\nmount = /identity_admin=config:/etc/keystone/keystone-paste.ini#admin\n"
    )
    out = subprocess.run(
        [str(WSGICTL), "import", str(tmp_path / "barbican-api.ini"), str(tmp_path / "keystone-admin.ini")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = tomllib.loads(out)["services"]
    assert services["barbican-api"] == {
        "kind": "api",
        "paste": "/etc/barbican/barbican-api-paste.ini",
        "processes": 2,
    }
    assert services["keystone-admin"] == {
        "kind": "api",
        "paste": "/etc/keystone/keystone-paste.ini",
        "paste_app": "admin",
        "mount": "/identity_admin",
    }
    assert "paste-logger = true: not carried over" in out
