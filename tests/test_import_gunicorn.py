"""gunicorn command lines and config files into a manifest: what comes over, what is dropped and why."""

import json
import subprocess
import sys
import tomllib

import pytest
from gunicorn.config import Config

from supervisor.gunicorn import boot
from supervisor.gunicorn.arbiters import render_spec
from supervisor.gunicorn.settings import MANAGED
from supervisor.manifest.gunicorn_import import from_gunicorn_command
from supervisor.manifest.importer import ImportProblem
from supervisor.manifest.loading import load
from support import APPS, WSGICTL, http_request, write_manifest

FULL = (
    "gunicorn -w 4 --threads 2 --timeout 60 -b unix:/run/x.sock --max-requests 1000 "
    "-e OS_FOO=1 --chdir /srv placement.wsgi.api:application"
)
HOOK = "server hook: wsgi-supervisor sets the hooks itself; move the code into the app"


def wsgictl_import(*args, check=True):
    out = subprocess.run([str(WSGICTL), "import", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def loaded(tmp_path, text):
    """The imported TOML through the manifest loader (this host has none of the users or dirs)."""
    conf = tmp_path / "conf.d"
    write_manifest(conf, text, "imported.toml")
    return load(conf, check_host=False).services


def notes(text):
    return [line[len("#   ") :] for line in text.splitlines() if line.startswith("#   ")]


def test_a_full_command_line_becomes_a_gunicorn_service(tmp_path):
    text = wsgictl_import("--gunicorn", FULL).stdout
    raw = tomllib.loads(text)["services"]["placement-api"]
    assert raw == {
        "kind": "api",
        "server": "gunicorn",
        "app": "placement.wsgi.api:application",
        "protocol": "http",
        "processes": 4,
        "threads": 2,
        "chdir": "/srv",
        "stop_timeout": 30,  # gunicorn's graceful_timeout, not the manifest's 10
        "harakiri": 60,
        "request_log": False,  # no --access-logfile: gunicorn logged no request lines
        "environment": {"OS_FOO": "1"},
        "gunicorn": {"max_requests": 1000},
    }
    svc = loaded(tmp_path, text)["placement-api"]
    assert (svc.server, svc.app, svc.processes, svc.threads, svc.harakiri) == (
        "gunicorn",
        "placement.wsgi.api:application",
        4,
        2,
        60,
    )
    assert svc.gunicorn == {"max_requests": 1000} and svc.environment == {"OS_FOO": "1"}
    # the socket: said in a comment, with the name the daemon gives it
    assert (
        f"bind = unix:/run/x.sock: {MANAGED['bind'].replace('NAME', 'placement-api')}; point the front end there"
        in (notes(text))
    )


def test_the_daemon_runs_what_gunicorn_would_have_run(tmp_path):
    """Round trip: the imported service, as boot.py hands it to gunicorn, has the command line's settings."""
    svc = loaded(tmp_path, wsgictl_import("--gunicorn", FULL + " --keep-alive 7 -k gthread").stdout)["placement-api"]
    spec = json.loads(render_spec("placement-api", svc))
    daemon, original = Config(), Config()
    for key, value in boot.settings(spec, {}).items():
        daemon.set(key, value)
    options = original.parser().parse_args([*FULL.split()[1:], "--keep-alive", "7", "-k", "gthread"])
    for key, value in vars(options).items():
        if value is not None and key not in ("args", "chdir"):
            original.set(key, value)
    for key in ("workers", "threads", "timeout", "max_requests", "keepalive", "worker_class", "protocol"):
        assert daemon.settings[key].get() == original.settings[key].get(), key
    assert spec["chdir"] == "/srv" and spec["app"] == "placement.wsgi.api:application"
    assert svc.environment == {"OS_FOO": "1"}  # the arbiter's environment from its start, not raw_env


def test_gunicorn_defaults_come_over_where_the_manifest_differs(tmp_path):
    text = wsgictl_import("--gunicorn", "gunicorn --access-logfile - --protocol uwsgi -t 0 app.wsgi").stdout
    raw = tomllib.loads(text)["services"]["app"]
    # 1 worker and a 30 s graceful stop, as gunicorn had; no timeout (-t 0), the uwsgi protocol (the default)
    assert raw == {
        "kind": "api",
        "server": "gunicorn",
        "app": "app.wsgi:application",
        "processes": 1,
        "stop_timeout": 30,
    }
    svc = loaded(tmp_path, text)["app"]
    assert svc.harakiri is None and svc.protocol == "uwsgi" and svc.request_log
    assert "bind = 127.0.0.1:8000 (gunicorn's default): " in text


def test_managed_settings_without_a_manifest_key_are_dropped_saying_why(tmp_path):
    text = wsgictl_import(
        "--gunicorn",
        "/opt/venvs/api/bin/gunicorn -D -p /run/api.pid --error-logfile /var/log/api.log --access-logfile - "
        "--access-logformat '%(h)s' --preload --reload -n api-public --backlog 64 app:application",
    ).stdout
    dropped = notes(text)
    for key, value in (
        ("daemon", True),
        ("pidfile", "/run/api.pid"),
        ("errorlog", "/var/log/api.log"),
        ("access_log_format", "%(h)s"),
        ("preload_app", True),
        ("reload", True),
        ("proc_name", "api-public"),
        ("backlog", 64),
    ):
        assert f"{key} = {value}: {MANAGED[key]}" in dropped, key
    svc = loaded(tmp_path, text)["api-public"]  # named by --name
    assert svc.venv == "/opt/venvs/api" and svc.gunicorn == {}


CONF = """\
import multiprocessing

bind = "127.0.0.1:8778"
workers = 3
threads = 4
worker_class = "gthread"
keepalive = 5
max_requests = 500
max_requests_jitter = 50
forwarded_allow_ips = "*"
raw_env = ["OS_PLACEMENT_CONFIG_DIR=/etc/placement"]
wsgi_app = "placement.wsgi.api:application"
user = "placement"
accesslog = "-"
pidfile = "/run/placement.pid"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
max_request = 100  # a typo: gunicorn ignores it


def on_starting(server):
    server.log.info("starting")


def post_fork(server, worker):
    worker.log.info("forked")
"""


def test_a_config_file_with_hooks(tmp_path):
    conf = tmp_path / "etc" / "placement" / "gunicorn.conf.py"
    conf.parent.mkdir(parents=True)
    conf.write_text(CONF)
    text = wsgictl_import(conf).stdout
    svc = loaded(tmp_path, text)["placement-api"]
    assert (svc.server, svc.app, svc.processes, svc.threads, svc.user) == (
        "gunicorn",
        "placement.wsgi.api:application",
        3,
        4,
        "placement",
    )
    assert svc.request_log and svc.environment == {"OS_PLACEMENT_CONFIG_DIR": "/etc/placement"}
    assert svc.gunicorn == {
        "worker_class": "gthread",
        "keepalive": 5,
        "max_requests": 500,
        "max_requests_jitter": 50,
        "forwarded_allow_ips": "*",
    }
    dropped = notes(text)
    assert f"on_starting: {HOOK}" in dropped and f"post_fork: {HOOK}" in dropped
    assert f"pidfile = /run/placement.pid: {MANAGED['pidfile']}" in dropped
    assert "max_request: not a gunicorn setting, ignored (as gunicorn does)" in dropped
    assert any(n.startswith("secure_scheme_headers = {") and "not carried over" in n for n in dropped)
    assert not any("multiprocessing" in n for n in dropped)


def test_a_command_line_over_its_config_file(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(CONF)
    text = wsgictl_import("--gunicorn", f"gunicorn -c {conf} -w 8 --max-requests 0 -n placement").stdout
    svc = loaded(tmp_path, text)["placement"]
    # the command line wins; max_requests back at gunicorn's default is not written
    assert svc.processes == 8 and svc.threads == 4 and "max_requests" not in svc.gunicorn
    assert f"post_fork: {HOOK}" in notes(text)


def test_a_config_file_that_names_no_app_is_named_after_its_file_or_directory(tmp_path):
    (tmp_path / "keystone").mkdir()
    for name, service in (("gunicorn.conf.py", "keystone"), ("keystone-admin.conf.py", "keystone-admin")):
        conf = tmp_path / "keystone" / name
        conf.write_text("workers = 2\n")
        text = wsgictl_import(conf).stdout
        assert f"[services.{service}]" in text
        assert "no app argument, wsgi_app or paste: set `app` by hand" in notes(text)


def test_a_paste_deploy_app(tmp_path):
    ini = APPS / "pasteapp.ini"
    text = wsgictl_import(
        "--gunicorn", f"gunicorn --paste {ini}#admin -w 2", "--gunicorn", f"gunicorn --paste config:{ini}"
    ).stdout
    services = loaded(tmp_path, text)
    assert set(services) == {"pasteapp", "pasteapp-2"}
    admin, main = services["pasteapp"], services["pasteapp-2"]
    assert (admin.paste, admin.paste_app, admin.app, admin.processes) == (str(ini), "admin", None, 2)
    assert (main.paste, main.paste_app) == (str(ini), None)  # "main" is paste-deploy's default
    # the second service's socket comment names its own socket
    assert "(<runtime>/pasteapp-2.sock)" in text


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("gunicorn --frobnicate app:application", "unrecognized arguments: --frobnicate"),
        ("gunicorn -w four app:application", "argument -w/--workers: invalid int value: 'four'"),
        ("gunicorn --max-requests -5 app:application", "gunicorn refuses max_requests = -5: Value must be positive"),
        ("gunicorn -e NOEQUALS app:application", "raw_env 'NOEQUALS': not KEY=VALUE"),
        ("gunicorn 'app:application", "not a command line: No closing quotation"),
    ],
)
def test_an_unknown_or_invalid_setting_is_an_error(command, says):
    out = wsgictl_import("--gunicorn", command, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("wsgictl import: ") and says in out.stderr, out.stderr


def test_an_invalid_value_or_a_failing_config_file_is_an_error(tmp_path):
    bad = tmp_path / "gunicorn.conf.py"
    bad.write_text('workers = "many"\n')
    out = wsgictl_import(bad, check=False)
    assert out.returncode == 1 and "gunicorn refuses workers = 'many'" in out.stderr, out.stderr
    bad.write_text("import no_such_module_here\n")
    out = wsgictl_import(bad, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert f"{bad}: running it failed: ModuleNotFoundError: No module named 'no_such_module_here'" in out.stderr
    out = wsgictl_import("--gunicorn", f"gunicorn -c {tmp_path}/missing.conf.py app:application", check=False)
    assert out.returncode == 1 and f"no such config file: {tmp_path}/missing.conf.py" in out.stderr


def test_gunicorn_table_values_keep_their_toml_types(tmp_path):
    text = wsgictl_import(
        "--gunicorn",
        "gunicorn --max-requests 1000 --max-requests-jitter 50 --keep-alive 5 --limit-request-line 0 "
        "--no-sendfile --forwarded-allow-ips '10.0.0.1,10.0.0.2' --log-level warning --paste-global A=1 "
        "--keep-alive 2 app:application",
    ).stdout
    assert "max_requests = 1000\n" in text and "sendfile = false\n" in text
    table = tomllib.loads(text)["services"]["app"]["gunicorn"]
    assert table == {
        "max_requests": 1000,
        "max_requests_jitter": 50,
        "limit_request_line": 0,
        "sendfile": False,
        "forwarded_allow_ips": "10.0.0.1,10.0.0.2",
        "loglevel": "warning",
        "raw_paste_global_conf": ["A=1"],
    }  # keepalive: the last --keep-alive is 2, gunicorn's default, so it is left out
    for key in ("max_requests", "max_requests_jitter", "limit_request_line"):
        assert type(table[key]) is int, key
    assert loaded(tmp_path, text)["app"].gunicorn == table


def test_a_systemd_unit_that_runs_gunicorn_is_an_api(tmp_path):
    unit = tmp_path / "placement-api.service"
    unit.write_text(
        "[Service]\nUser=placement\nWorkingDirectory=/srv/placement\n"
        'Environment="OS_PLACEMENT_CONFIG_DIR=/etc/placement" WEB_CONCURRENCY=3\n'
        "Environment='GUNICORN_CMD_ARGS=--max-requests 200 --keep-alive 9'\n"
        "ExecStart=/opt/venvs/placement/bin/gunicorn --keep-alive 4 --paste etc/paste.ini --pythonpath lib "
        "-b unix:/run/placement.sock\nRestart=always\n"
    )
    apache = tmp_path / "apache.conf"
    apache.write_text('ProxyPass "/placement" "unix:/run/placement.sock|http://placement" retry=0\n')
    text = wsgictl_import(unit, apache).stdout
    svc = loaded(tmp_path, text)["placement-api"]
    assert (svc.kind, svc.server, svc.processes, svc.user, svc.chdir, svc.venv, svc.mount) == (
        "api",
        "gunicorn",
        3,
        "placement",
        "/srv/placement",
        "/opt/venvs/placement",
        "/placement",
    )
    # relative paths are gunicorn's, from the unit's working directory
    assert svc.paste == "/srv/placement/etc/paste.ini"
    assert svc.environment == {
        "OS_PLACEMENT_CONFIG_DIR": "/etc/placement",
        "WEB_CONCURRENCY": "3",
        "PYTHONPATH": "/srv/placement/lib",
    }
    # gunicorn's environment variables, as gunicorn reads them: the command line over GUNICORN_CMD_ARGS
    assert svc.gunicorn == {"max_requests": 200, "keepalive": 4}
    assert "Restart=always: the daemon does this itself" in notes(text)


def test_without_gunicorn_it_says_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gunicorn.config", None)
    with pytest.raises(ImportProblem, match="gunicorn's own parser, and gunicorn is not importable here"):
        from_gunicorn_command(["gunicorn", "app:application"])


def test_an_imported_command_line_runs_under_the_daemon(daemon):
    command = f"gunicorn -w 2 -e PROBE_IMPORTED=yes --pythonpath {APPS} --max-requests 100 -b :8000 probe:application"
    write_manifest(daemon.conf_dir, wsgictl_import("--gunicorn", command).stdout, "imported.toml")
    daemon.start()
    daemon.ctl("start", "probe")
    status = daemon.status()["probe"]
    assert status["state"] == "running" and len(status["workers"]) == 2
    code, _, body = http_request(daemon.socket("probe"), "/x")
    assert code == 200 and json.loads(body)["env"] == {"PROBE_IMPORTED": "yes"}


def test_import_needs_an_input_and_its_help_says_config_files_are_run():
    out = wsgictl_import(check=False)
    assert out.returncode == 1 and "name a FILE or give --gunicorn CMDLINE" in out.stderr
    flat = " ".join(wsgictl_import("--help").stdout.split())
    assert "--gunicorn CMDLINE" in flat and "run here as gunicorn runs it (it is Python: import only your own)" in flat
