"""Loading and validating manifests: every problem, located, at once."""

import subprocess
import sys

import pytest

from supervisor.manifest import ManifestError, load
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
    code = "import sys; import supervisor.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('pydantic', 'uvloop', 'prometheus_client', 'systemd')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_options_of_the_app_wrapper_are_reserved(tmp_path):
    # every vassal loads vassal_app.py as `application` under `mount`: `app` and `mount` set these
    found = problems(tmp_path, a='[services.a]\nkind = "api"\napp = "x.y"\nuwsgi = { callable = "app" }\n')
    assert any("'callable' is set by wsgi-supervisor" in p[3] for p in found), found


def test_import_folds_callable_into_app(tmp_path):
    from supervisor.importer import from_uwsgi_ini

    ini = tmp_path / "nova-api.ini"
    ini.write_text("[uwsgi]\ncallable = app\nmodule = nova.wsgi.osapi_compute\n")
    svc = from_uwsgi_ini(ini)
    assert svc.table["app"] == "nova.wsgi.osapi_compute:app" and "uwsgi" not in svc.table
