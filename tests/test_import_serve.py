"""Existing deployments into a manifest, and one API in the foreground."""

import json
import subprocess
import sys
import time
import tomllib
import urllib.request

from supervisor.manifest.loading import load
from support import APPS, ROOT, WSGICTL, http_request, stop_foreground, uwsgi_request, write_manifest

FIXTURES = ROOT / "tests" / "fixtures" / "devstack"


def imported(*paths) -> tuple[str, dict]:
    out = subprocess.run([str(WSGICTL), "import", *map(str, paths)], capture_output=True, text=True, check=True)
    return out.stdout, tomllib.loads(out.stdout)["services"]


def test_devstack_osa_kolla_and_mod_wsgi_files_become_services(tmp_path):
    text, services = imported(*sorted(FIXTURES.iterdir()))
    assert set(services) == {"keystone-public", "nova-api", "placement", "glance", "horizon", "n-cond"}
    assert services["keystone-public"] == {
        "kind": "api",
        "app": "/usr/local/bin/keystone-wsgi-public",
        "mount": "/identity",
        "processes": 2,
    }
    assert services["nova-api"]["app"] == "nova.wsgi.osapi_compute:application"
    assert services["nova-api"]["environment"] == {
        "OS_NOVA_CONFIG_FILES": "/etc/nova/nova.conf;/etc/nova/nova-api.conf"
    }
    assert services["placement"]["harakiri"] == 60 and services["placement"]["max_rss_mb"] == 512
    glance = services["glance"]
    assert glance["protocol"] == "http" and glance["mount"] == "/image" and glance["venv"] == "/openstack/venvs/glance"
    assert glance["args"] == ["--config-file", "/etc/glance/glance-api.conf"]
    assert glance["user"] == glance["group"] == "glance" and glance["threads"] == 2
    assert glance["uwsgi"] == {"log-x-forwarded-for": True, "route": "^/healthcheck donotlog:"}
    horizon = services["horizon"]
    assert horizon["mount"] == "/dashboard" and horizon["processes"] == 3 and horizon["venv"] == "/opt/venvs/horizon"
    assert services["n-cond"] == {
        "kind": "worker",
        "command": ["/usr/local/bin/nova-conductor", "--config-file", "/etc/nova/nova.conf"],
        "user": "stack",
        "stop_timeout": 300,
    }
    # every option left behind says why
    assert "#   plugins = http,python3: wsgi-supervisor sets this itself" in text
    assert "#   WSGIDaemonProcess display-name=%{GROUP}: no equivalent" in text
    # the result validates (this host has none of those venvs or users, so only the manifest itself)
    (tmp_path / "imported.toml").write_text(text)
    manifest = load(tmp_path, check_host=False)
    assert len(manifest.services) == 6


def test_an_imported_deployment_passes_check_and_runs(daemon, tmp_path):
    ini = tmp_path / "probe-uwsgi.ini"
    ini.write_text(
        "[uwsgi]\nmaster = true\nprocesses = 2\nsocket = /var/run/uwsgi/probe.socket\n"
        f"wsgi-file = {APPS / 'probe.py'}\n"
        "env = PROBE_IMPORTED=yes\npyargv = --config-file /etc/probe.conf\nlazy-apps = true\n"
    )
    unit = tmp_path / "devstack@probe-worker.service"
    unit.write_text(
        f"[Service]\nExecStart = {sys.executable} {APPS / 'worker.py'}\nType = notify\n"
        "Environment = WORKER_NOTIFY_AFTER=0.1\n"
    )
    apache = tmp_path / "apache.conf"
    apache.write_text('ProxyPass "/probe" "unix:/var/run/uwsgi/probe.socket|uwsgi://probe" retry=0\n')
    text, _services = imported(ini, unit, apache)
    write_manifest(daemon.conf_dir, text, "imported.toml")
    check = subprocess.run([str(WSGICTL), "check", "--conf-dir", str(daemon.conf_dir)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    daemon.start()
    daemon.ctl("start", "--all")
    status = daemon.status()
    assert status["probe"]["state"] == status["probe-worker"]["state"] == "running"
    _, _, body = uwsgi_request(daemon.socket("probe"), "/probe/x")
    answer = json.loads(body)
    assert answer["env"] == {"PROBE_IMPORTED": "yes"} and answer["argv"][1:] == ["--config-file", "/etc/probe.conf"]
    assert answer["script_name"] == "/probe" and answer["path_info"] == "/x"


def test_serve_answers_like_the_vassal_and_refuses_while_the_daemon_serves(daemon):
    write_manifest(
        daemon.conf_dir,
        f'[services.echo]\nkind = "api"\napp = "{APPS / "probe.py"}"\nprotocol = "http"\nmount = "/echo"\n'
        'args = ["--debug"]\nenvironment = { PROBE_MODE = "foreground" }\n',
    )
    daemon.start()
    daemon.ctl("start", "echo")
    status, _, from_vassal = http_request(daemon.socket("echo"), "/echo/v1/things?x=1")
    assert status == 200

    refused = subprocess.run(
        [
            str(WSGICTL),
            "--runtime-dir",
            str(daemon.runtime_dir),
            "--conf-dir",
            str(daemon.conf_dir),
            "serve",
            "echo",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1 and "is being served by wsgi-supervisor right now" in refused.stderr

    daemon.ctl("stop", "echo")
    from support import free_port

    port = free_port()
    serve = subprocess.Popen(
        [
            str(WSGICTL),
            "--runtime-dir",
            str(daemon.runtime_dir),
            "--conf-dir",
            str(daemon.conf_dir),
            "serve",
            "echo",
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving echo on http://127.0.0.1:" in serve.stderr.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo/v1/things?x=1", timeout=10) as r:
            from_serve = r.read()
        vassal, foreground = json.loads(from_vassal), json.loads(from_serve)
        for key in ("script_name", "path_info", "query", "env", "body"):
            assert vassal[key] == foreground[key], key
        assert foreground["argv"][1:] == ["--debug"]
    finally:
        stop_foreground(serve)
    time.sleep(0.1)


def test_control_characters_survive_the_round_trip_through_tomllib(tmp_path):
    """U+007F and other control characters are escaped in strings and comments: tomllib reads back the same."""
    unit = tmp_path / "devstack@odd.service"
    unit.write_text(
        "[Service]\n"
        'ExecStart=/usr/bin/odd --name "a\x7fb" --esc "x\x1b[0m" --bs "1\x082"\n'
        'Environment="GREETING=hi\x7fthere" "BELL=ring\x07\x01" "TAB=a\tb"\n'
        "KillMode=proc\x7fess\x01\n"
    )
    ini = tmp_path / "odd-uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = odd.wsgi:application\nroute = ^/x\x7f break:200\n")
    text, services = imported(unit, ini)
    assert services["odd"]["command"] == ["/usr/bin/odd", "--name", "a\x7fb", "--esc", "x\x1b[0m", "--bs", "1\x082"]
    assert services["odd"]["environment"] == {"GREETING": "hi\x7fthere", "BELL": "ring\x07\x01", "TAB": "a\tb"}
    # what was left out is said in a comment, with the control characters escaped
    assert "#   KillMode=proc\\x7fess\\x01: the daemon does this itself" in text
    assert "route = ^/x\\x7f break:200: not carried over" in text
    assert not any(ch in text for ch in "\x7f\x01\x07\x08\x1b")
