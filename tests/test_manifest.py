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
    assert any(k == "server" and "'uwsgi' or 'gunicorn'" in m for _, _, k, m in found), found


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


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ('warmup = ["/v3"]', "needs preload = true"),
        ('preload = false\nwarmup = ["/v3"]', "needs preload = true"),
        ('preload = true\nwarmup = ["v3"]', "'v3' is not a path"),
    ],
)
def test_warmup_needs_preload_and_paths(tmp_path, keys, says):
    found = problems(tmp_path, a=f'[services.keystone]\nkind = "api"\napp = "{PROBE}"\n{keys}\n')
    assert [(f, s, k) for f, s, k, _ in found] == [("a.toml", "keystone", "warmup")], found
    assert says in found[0][3]


# -- a file's [defaults] ------------------------------------------------------------------


def test_defaults_apply_to_the_services_they_fit(tmp_path):
    (tmp_path / "nova.toml").write_text(
        """
[defaults]
venv = "/opt/openstack/nova"
user = "nova"
environment = { OS_NOVA_CONFIG_DIR = "/etc/nova", OS_SHARED = "file" }
processes = 4
notify = true
uwsgi = { "buffer-size" = 65535, "harakiri-verbose" = true }

[services.nova-api]
kind = "api"
app = "nova.wsgi.osapi_compute:application"
environment = { OS_SHARED = "service", OS_OWN = "api" }
uwsgi = { "buffer-size" = 32768 }

[services.nova-metadata]
kind = "api"
server = "gunicorn"
app = "nova.wsgi.metadata:application"
venv = "/opt/other"
processes = 2

[services.nova-conductor]
kind = "worker"
command = ["nova-conductor"]

[services.nova-compute]
kind = "worker"
command = ["nova-compute"]
notify = false
"""
    )
    services = load(tmp_path, check_host=False).services
    api, metadata, conductor, compute = (
        services[n] for n in ("nova-api", "nova-metadata", "nova-conductor", "nova-compute")
    )
    # what the service does not say it takes; what it says wins
    assert (api.venv, api.user, api.processes) == ("/opt/openstack/nova", "nova", 4)
    assert (metadata.venv, metadata.user, metadata.processes) == ("/opt/other", "nova", 2)
    assert (conductor.venv, conductor.user, conductor.notify) == ("/opt/openstack/nova", "nova", True)
    assert compute.notify is False
    # tables merge, the service's entries winning one by one
    assert api.environment == {"OS_NOVA_CONFIG_DIR": "/etc/nova", "OS_SHARED": "service", "OS_OWN": "api"}
    assert conductor.environment == {"OS_NOVA_CONFIG_DIR": "/etc/nova", "OS_SHARED": "file"}
    assert api.uwsgi == {"buffer-size": 32768, "harakiri-verbose": True}
    # a uwsgi table goes to the uWSGI APIs only, not to gunicorn's
    assert metadata.uwsgi == {} and metadata.server == "gunicorn"


def test_a_default_server_decides_which_server_table_applies(tmp_path):
    (tmp_path / "a.toml").write_text(
        f"""
[defaults]
server = "gunicorn"
gunicorn = {{ max_requests = 100 }}
uwsgi = {{ "harakiri-verbose" = true }}

[services.g]
kind = "api"
app = "{PROBE}"

[services.u]
kind = "api"
server = "uwsgi"
app = "{PROBE}"
"""
    )
    services = load(tmp_path, check_host=False).services
    assert (services["g"].server, services["g"].gunicorn, services["g"].uwsgi) == (
        "gunicorn",
        {"max_requests": 100},
        {},
    )
    assert (services["u"].server, services["u"].gunicorn, services["u"].uwsgi) == (
        "uwsgi",
        {},
        {"harakiri-verbose": True},
    )


def test_defaults_mistakes_are_located_once_under_defaults(tmp_path):
    found = problems(
        tmp_path,
        a="""
[defaults]
app = "x.y"
mount = "/x"
command = ["x"]
kind = "api"
bogus = 1
processes = "4"
user = "root\\nuid = 0"
environment = { "BAD-NAME" = "x" }
health = "/healthcheck"

[services.w1]
kind = "worker"
command = ["true"]

[services.w2]
kind = "worker"
command = ["true"]
stop_timeout = -1
""",
    )
    where = [(f, s, k) for f, s, k, _ in found]
    says = {k: m for f, s, k, m in found if s is None}
    for key in ("app", "mount", "command", "kind"):
        assert says[key].startswith("cannot be a default: each "), found
    assert "each API has its own URL prefix" in says["mount"]
    assert says["bogus"].startswith("unknown key for [defaults]; known: after, args,")
    assert says["processes"] == "Input should be a valid integer (got str '4')"
    assert "control character" in says["user"]
    assert "not a valid environment variable name" in says["environment"]
    # health fits APIs, which this file has none of: said, as it would do nothing
    assert says["health"] == "fits no service of this file (it applies to api services only), so it would do nothing"
    # each once, not once per service that would have taken it
    assert len(where) == len(set(where)) and not [w for w in where if w[1] in ("w1", "w2") and w[2] != "stop_timeout"]
    # a service's own mistake still names the service
    assert ("a.toml", "w2", "stop_timeout", "Input should be greater than 0") in found


def test_defaults_problems_read_as_the_operator_sees_them(tmp_path):
    (tmp_path / "a.toml").write_text(
        f'[defaults]\nvenv = "{tmp_path}/none"\n\n'
        '[services.a]\nkind = "api"\napp = "a.b"\n\n[services.b]\nkind = "api"\napp = "a.b"\n'
        '\n[services.c]\nkind = "api"\napp = "a.b"\nvenv = "/opt/x"\n'
    )
    bad = subprocess.run([str(WSGICTL), "check", "--conf-dir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1
    lines = bad.stderr.splitlines()
    # what the host lacks in a default is one problem, the default's; a service's own value stays its own
    assert f"{tmp_path}/a.toml: defaults, key 'venv': {tmp_path}/none is not a virtualenv (no bin/python3)" in lines
    assert f"{tmp_path}/a.toml: service 'c', key 'venv': /opt/x is not a virtualenv (no bin/python3)" in lines
    assert lines[-1] == f"{tmp_path}: 2 problems"


def test_a_default_after_is_judged_per_service(tmp_path):
    found = problems(
        tmp_path,
        a="""
[defaults]
after = ["keystone"]

[services.keystone]
kind = "api"
app = "a.b"

[services.nova-api]
kind = "api"
app = "a.b"

[services.nova-conductor]
kind = "worker"
command = ["true"]
after = ["nova-api", "nowhere"]
""",
    )
    assert found == [
        ("a.toml", "keystone", "after", "a service cannot come after itself (from [defaults])"),
        ("a.toml", "nova-conductor", "after", "names an unknown service 'nowhere'"),
    ]


def test_defaults_must_be_a_table(tmp_path):
    found = problems(tmp_path, a='defaults = 3\n[services.a]\nkind = "api"\napp = "a.b"\n')
    assert found == [("a.toml", None, "defaults", "must be a table of keys that every service of this file takes")]


def test_argv_names_the_environment_as_systemd_does(tmp_path):
    (tmp_path / "nova.toml").write_text(
        """
[defaults]
environment = { OS_NOVA_CONFIG_DIR = "/srv/nova/etc" }

[services.nova-conductor]
kind = "worker"
command = ["nova-conductor", "--config-file", "${OS_NOVA_CONFIG_DIR}/nova.conf", "--x=$${HOME}"]

[services.nova-api]
kind = "api"
app = "nova.wsgi.osapi_compute:application"
args = ["--config-dir", "${OS_NOVA_CONFIG_DIR}", "--other=${OWN}"]
environment = { OWN = "mine" }

[services.nova-paste]
kind = "api"
paste = "${OS_NOVA_CONFIG_DIR}/api-paste.ini"
"""
    )
    services = load(tmp_path, check_host=False).services
    assert services["nova-paste"].paste == "/srv/nova/etc/api-paste.ini"
    assert services["nova-conductor"].command == (
        "nova-conductor",
        "--config-file",
        "/srv/nova/etc/nova.conf",
        "--x=${HOME}",
    )
    assert services["nova-api"].args == ("--config-dir", "/srv/nova/etc", "--other=mine")


def test_argv_naming_an_unset_variable_is_located(tmp_path):
    found = problems(
        tmp_path,
        a='[services.w]\nkind = "worker"\ncommand = ["w", "--config-file", "${CONF_DIR}/w.conf"]\n'
        '\n[services.a]\nkind = "api"\napp = "a.b"\nargs = ["${A}", "${HOME"]\nenvironment = { A = "x y" }\n'
        '\n[services.p]\nkind = "api"\npaste = "${NOWHERE}/api-paste.ini"\n',
    )
    assert found == [
        (
            "a.toml",
            "a",
            "args.0",
            "contains whitespace; uWSGI splits pyargv on spaces, so pass it as separate items",
        ),
        (
            "a.toml",
            "p",
            "paste",
            "names ${NOWHERE}, which the service's environment does not set "
            "(set it in its environment, or in the file's [defaults] environment)",
        ),
        (
            "a.toml",
            "w",
            "command.2",
            "names ${CONF_DIR}, which the service's environment does not set "
            "(set it in its environment, or in the file's [defaults] environment)",
        ),
    ]


def test_wsgictl_check_offline_judges_the_manifest_without_the_host(tmp_path):
    (tmp_path / "a.toml").write_text(
        '[defaults]\nvenv = "/opt/elsewhere/nova"\nuser = "nova-on-another-host"\n\n'
        '[services.w]\nkind = "worker"\ncommand = ["nova-conductor"]\n'
    )
    check = [str(WSGICTL), "check", "--conf-dir", str(tmp_path)]
    on_host = subprocess.run(check, capture_output=True, text=True)
    assert on_host.returncode == 1 and "no such user 'nova-on-another-host'" in on_host.stderr
    offline = subprocess.run([*check, "--offline"], capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == f"{tmp_path}: valid (0 APIs, 1 workers; not checked against this host)\n"
    # what is wrong in the manifest itself is still wrong
    (tmp_path / "b.toml").write_text('[services.x]\nkind = "worker"\ncommand = ["x"]\nnotify = "yes"\n')
    bad = subprocess.run([*check, "--offline"], capture_output=True, text=True)
    assert bad.returncode == 1 and "b.toml: service 'x', key 'notify'" in bad.stderr


def test_a_service_without_a_kind_does_not_make_the_defaults_look_idle(tmp_path):
    found = problems(tmp_path, a='[defaults]\nprocesses = 3\n\n[services.x]\napp = "a.b"\n')
    assert found == [("a.toml", "x", "kind", 'is required: "api" or "worker"')]
