"""Loading and validating manifests: every problem, located, at once."""

import subprocess
import sys

import pytest

from supervisor.manifest.loading import load
from supervisor.manifest.models import ManifestError
from support import APPS, WSGICTL

PROBE = APPS / "probe.py"


def problems(tmp_path, **files):
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    with pytest.raises(ManifestError) as info:
        load(tmp_path)
    return [(p.file.rsplit("/", 1)[-1], p.service, p.key, p.message) for p in info.value.problems]


def test_a_valid_manifest(tmp_path):
    (tmp_path / "a.toml").write_text(
        f"""
[services.keystone]
kind = "api"
app = "keystone.wsgi.api:application"
processes = 4
threads = 2
mount = "/identity"
args = ["--config-file", "/etc/keystone/keystone.conf"]
environment = {{ OS_KEYSTONE_CONFIG_FILES = "/etc/keystone/keystone.conf" }}
uwsgi = {{ "harakiri-verbose" = true, "route" = ["^/x break:404", "^/y break:403"] }}

[services.probe]
kind = "api"
app = "{PROBE}"
protocol = "http"
after = ["keystone"]
"""
    )
    manifest = load(tmp_path)
    assert set(manifest.services) == {"keystone", "probe"}
    assert manifest.start_order() == ["keystone", "probe"]
    assert manifest.services["keystone"].processes == 4
    assert manifest.sources["probe"].endswith("a.toml")


def test_every_error_in_every_file_is_reported_at_once(tmp_path):
    found = problems(
        tmp_path,
        a="""
[services.keystone]
kind = "api"
app = "keystone.wsgi.api"
processes = "4"
bogus = 1
after = ["nope"]

[services.Bad_Name]
kind = "api"
app = "x.y"

[services.cond]
kind = "worker"
app = "x"

[services.nokind]
app = "x"

[services.api-without-app]
kind = "api"
""",
        b="""
[services.keystone]
kind = "api"
app = "keystone.wsgi.api"

[services.loop1]
kind = "api"
app = "a.b"
after = ["loop2"]

[services.loop2]
kind = "api"
app = "a.b"
after = ["loop1"]
""",
        c="this is = not toml [",
    )
    assert ("a.toml", "keystone", "processes", "Input should be a valid integer (got str '4')") in found
    assert any(f[:3] == ("a.toml", "keystone", "bogus") and "unknown key for an api service" in f[3] for f in found)
    assert ("a.toml", "keystone", "after", "names an unknown service 'nope'") in found
    assert any(f[:2] == ("a.toml", "Bad_Name") and "bad service name" in f[3] for f in found)
    assert any(f[:3] == ("a.toml", "cond", "app") and "belongs to the other kind" in f[3] for f in found)
    assert any(f[:3] == ("a.toml", "cond", "command") and "required for a worker" in f[3] for f in found)
    assert ("a.toml", "nokind", "kind", 'is required: "api" or "worker"') in found
    assert any(f[:3] == ("a.toml", "api-without-app", "app") and "required for an api" in f[3] for f in found)
    assert any(f[:2] == ("b.toml", "keystone") and "already defined in" in f[3] for f in found)
    assert any(f[2] == "after" and "dependency cycle" in f[3] for f in found)
    assert any(f[0] == "c.toml" and "not valid TOML" in f[3] for f in found)


@pytest.mark.parametrize(
    "line, key, words",
    [
        ('args = ["--config-file", "/etc/k.conf\\n[uwsgi]\\nexec-asap = touch /tmp/pwned"]', "args.1", "control char"),
        ('args = ["$(HOME)"]', "args.0", "'$('"),
        ('args = ["@(/etc/shadow)"]', "args.0", "'@('"),
        ('args = ["%(socket)"]', "args.0", "'%('"),
        ('args = ["two words"]', "args.0", "whitespace"),
        ('mount = "/x\\nsocket = /tmp/evil"', "mount", "control char"),
        ('uwsgi = { "route" = "^/ break:200\\nexec-asap = id" }', "uwsgi", "option 'route' contains the control"),
        ('uwsgi = { "socket" = "/tmp/other.sock" }', "uwsgi", "is set by wsgi-supervisor"),
        ('uwsgi = { "paste" = "config:/etc/x.ini" }', "uwsgi", "use the manifest key for it instead"),
        ('uwsgi = { "exec asap" = "x" }', "uwsgi", "not a uWSGI option name"),
        ('uwsgi = { "attach-daemon" = "!/bin/sh" }', "uwsgi", "option 'attach-daemon' starts with '!'"),
        ('user = "root\\nuid = 0"', "user", "control char"),
        ('venv = "relative/venv"', "venv", "absolute path"),
        ('environment = { "BAD-NAME" = "x" }', "environment", "not a valid environment variable name"),
    ],
)
def test_no_value_can_smuggle_a_uwsgi_option(tmp_path, line, key, words):
    found = problems(tmp_path, a=f'[services.x]\nkind = "api"\napp = "a.b"\n{line}\n')
    assert any(f[1] == "x" and f[2] == key and words in f[3] for f in found), found


def test_host_checks_name_what_is_missing(tmp_path):
    found = problems(
        tmp_path,
        a=f"""
[services.x]
kind = "api"
app = "{tmp_path}/nowhere.py"

[services.y]
kind = "api"
app = "a.b"
venv = "{tmp_path}"
user = "no-such-user-here"

[services.z]
kind = "worker"
command = ["no-such-program-here", "--flag"]
""",
    )
    assert any(f[:3] == ("a.toml", "x", "app") and "does not exist" in f[3] for f in found)
    assert any(f[:3] == ("a.toml", "y", "venv") and "is not a virtualenv" in f[3] for f in found)
    assert ("a.toml", "y", "user", "no such user 'no-such-user-here'") in found
    assert any(f[:3] == ("a.toml", "z", "command") and "not on the PATH" in f[3] for f in found)


def test_wsgictl_check(tmp_path):
    (tmp_path / "a.toml").write_text('[services.x]\nkind = "api"\napp = "a.b"\n')
    ok = subprocess.run([str(WSGICTL), "check", "--conf-dir", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid (1 APIs, 0 workers)" in ok.stdout
    (tmp_path / "b.toml").write_text('[services.y]\nkind = "api"\nprocesses = 0\n')
    bad = subprocess.run([str(WSGICTL), "check", "--conf-dir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "b.toml: service 'y', key 'app'" in bad.stderr
    assert "b.toml: service 'y', key 'processes': Input should be greater than or equal to 1" in bad.stderr
    assert "2 problems" in bad.stderr


def test_check_is_light(tmp_path):
    """wsgictl must not import the daemon's heavy dependencies for everyday commands."""
    code = "import sys; import supervisor.cli.commands; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('pydantic', 'uvloop', 'prometheus_client', 'systemd', 'psutil')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_options_of_the_app_wrapper_are_reserved(tmp_path):
    # every vassal loads vassal_app.py as `application` under `mount`: `app` and `mount` set these
    found = problems(tmp_path, a='[services.a]\nkind = "api"\napp = "x.y"\nuwsgi = { callable = "app" }\n')
    assert any("'callable' is set by wsgi-supervisor" in p[3] for p in found), found


def test_process_titles_are_refused(tmp_path):
    found = problems(tmp_path, a='[services.a]\nkind = "api"\napp = "x.y"\nuwsgi = { auto-procname = true }\n')
    assert any("'auto-procname' corrupts the memory of a vassal" in p[3] for p in found), found


def test_import_folds_callable_into_app(tmp_path):
    from supervisor.manifest.importer import from_uwsgi_ini

    ini = tmp_path / "nova-api.ini"
    ini.write_text("[uwsgi]\ncallable = app\nmodule = nova.wsgi.osapi_compute\n")
    svc = from_uwsgi_ini(ini)
    assert svc.table["app"] == "nova.wsgi.osapi_compute:app" and "uwsgi" not in svc.table


PASTE_INI = APPS / "pasteapp.ini"


def test_paste_services(tmp_path):
    (tmp_path / "a.toml").write_text(
        f"""
[services.root]
kind = "api"
paste = "{PASTE_INI}"

[services.named]
kind = "api"
paste = "../{tmp_path.name}-apps/pasteapp.ini"
paste_app = "admin"
mount = "/admin"
"""
    )
    apps = tmp_path.parent / f"{tmp_path.name}-apps"
    apps.mkdir()
    (apps / "pasteapp.ini").write_text(PASTE_INI.read_text())
    manifest = load(tmp_path)
    assert manifest.services["root"].paste == str(PASTE_INI) and manifest.services["root"].app is None
    # a relative paste file is relative to the manifest, like an app file
    assert manifest.services["named"].paste == str(apps / "pasteapp.ini")
    assert manifest.services["named"].paste_app == "admin"


def test_paste_mistakes_are_located(tmp_path):
    found = problems(
        tmp_path,
        a=f"""
[services.both]
kind = "api"
app = "a.b"
paste = "{PASTE_INI}"

[services.orphan-name]
kind = "api"
app = "a.b"
paste_app = "main"

[services.uri]
kind = "api"
paste = "config:{PASTE_INI}#main"

[services.hash]
kind = "api"
paste = "{PASTE_INI}#main"

[services.missing]
kind = "api"
paste = "{tmp_path}/nowhere.ini"

[services.noname]
kind = "api"
paste = "{PASTE_INI}"
paste_app = "has space"

[services.w]
kind = "worker"
command = ["true"]
paste = "{PASTE_INI}"
""",
    )
    assert any(f[:3] == ("a.toml", "both", "paste") and "cannot be used together with 'app'" in f[3] for f in found)
    assert ("a.toml", "orphan-name", "paste_app", "needs 'paste' (the paste ini file that has this app)") in found
    assert any(f[:3] == ("a.toml", "uri", "paste") and 'paste_app = "NAME"' in f[3] for f in found), found
    assert any(f[:3] == ("a.toml", "hash", "paste") and "must not contain '#'" in f[3] for f in found)
    assert ("a.toml", "missing", "paste", f"paste ini file {tmp_path}/nowhere.ini does not exist") in found
    assert any(f[:3] == ("a.toml", "noname", "paste_app") for f in found)
    assert any(f[:3] == ("a.toml", "w", "paste") and "belongs to the other kind" in f[3] for f in found)
    # each of those is one problem, not one more about the service as a whole
    assert not [f for f in found if f[2] is None]


def test_paste_needs_paste_deploy_in_the_service_venv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for exe in ("python3", "uwsgi"):
        (venv / "bin" / exe).write_text("")
    (tmp_path / "conf").mkdir()
    found = problems(tmp_path / "conf", a=f'[services.x]\nkind = "api"\npaste = "{PASTE_INI}"\nvenv = "{venv}"\n')
    assert found == [
        ("a.toml", "x", "paste", f"PasteDeploy is not installed in {venv}: run '{venv}/bin/pip install PasteDeploy'")
    ]
    site = venv / "lib" / "python3.11" / "site-packages" / "paste" / "deploy"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    assert load(tmp_path / "conf").services["x"].paste == str(PASTE_INI)


# -- the server of an API ------------------------------------------------------------------


def gunicorn_api(extra=""):
    return f'[services.placement]\nkind = "api"\nserver = "gunicorn"\napp = "{PROBE}"\n{extra}\n'


def test_a_gunicorn_service_with_its_own_settings(tmp_path):
    (tmp_path / "a.toml").write_text(gunicorn_api("gunicorn = { max_requests = 1000, keepalive = 5 }"))
    service = load(tmp_path).services["placement"]
    assert service.server == "gunicorn" and service.gunicorn == {"max_requests": 1000, "keepalive": 5}


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ('uwsgi = { "harakiri-verbose" = true }', "uwsgi", "applies to server = 'uwsgi' services"),
        ("gunicorn = { workers = 8 }", "gunicorn", "use the manifest key 'processes'"),
        ('gunicorn = { bind = "unix:/tmp/x.sock" }', "gunicorn", "the daemon holds the socket"),
        ('gunicorn = { post_fork = "x" }', "gunicorn", "server hook"),
        ('gunicorn = { keepalive = "soon" }', "gunicorn", "setting 'keepalive'"),
        ("gunicorn = { no_such_setting = 1 }", "gunicorn", "'no_such_setting' is not a gunicorn setting"),
    ],
)
def test_what_does_not_apply_to_gunicorn_is_located(tmp_path, extra, key, says):
    found = problems(tmp_path, a=gunicorn_api(extra))
    assert any(k == key and says in message for _, _, k, message in found), found


def test_a_gunicorn_table_on_a_uwsgi_service_is_refused(tmp_path):
    text = f'[services.keystone]\nkind = "api"\napp = "{PROBE}"\ngunicorn = {{ keepalive = 5 }}\n'
    found = problems(tmp_path, a=text)
    assert [(k, m) for _, _, k, m in found] == [
        ("gunicorn", "applies to server = 'gunicorn' services; this one runs under uwsgi")
    ]


def test_an_unknown_server_names_the_choices(tmp_path):
    found = problems(tmp_path, a=gunicorn_api().replace('"gunicorn"', '"granian"'))
    assert any(k == "server" and "installed: gunicorn, uwsgi" in m for _, _, k, m in found), found


def test_a_venv_without_the_chosen_server_is_reported(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    conf = tmp_path / "conf"
    conf.mkdir()
    found = problems(conf, a=gunicorn_api(f'venv = "{venv}"'))
    assert found == [
        (
            "a.toml",
            "placement",
            "server",
            f"gunicorn is not installed in {venv}: run '{venv}/bin/pip install gunicorn'",
        )
    ]
