"""A third server from a distribution of its own: found through its entry point, named by a manifest,
running an API under the daemon; and what a manifest is told when a server is not there.

The plug-in (tests/plugins/toy_server) is put on the path with a `.dist-info` the test writes, so
that `importlib.metadata` finds its entry point as it would after `pip install`.
"""

import json
import subprocess
from pathlib import Path

import psutil

from supervisor.registry import BUILTIN, GROUP, Registry, installed_names
from support import APPS, BIN, http_request, write_manifest

TOY = Path(__file__).resolve().parent / "plugins" / "toy_server"


def distribution(site: Path, name: str, entry_points: dict[str, str], version: str = "0.1") -> Path:
    """`name`'s metadata in `site`, as an installer writes it: what `importlib.metadata` reads."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{GROUP}]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


def toy_site(tmp_path: Path) -> Path:
    """A site dir that holds the toy server, installed (its package and its dist-info)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_server").symlink_to(TOY / "toy_server")
    distribution(site, "toy-server", {"toy": "toy_server:SERVER"})
    return site


def manifest(server: str = "toy") -> str:
    return f"""
[services.hello]
kind = "api"
server = "{server}"
protocol = "http"
app = "plain:application"
processes = 1
start_timeout = 30
"""


def test_an_api_runs_under_a_server_another_distribution_registers(tmp_path):
    from support import Daemon

    site = toy_site(tmp_path)
    daemon = Daemon(tmp_path, env={"PYTHONPATH": f"{site}:{APPS}"})
    try:
        write_manifest(daemon.conf_dir, manifest())
        daemon.start()
        daemon.ctl("start", "hello")
        status = daemon.status("hello")["hello"]
        assert status["state"] == "running" and status["server"] == "toy", status
        # ?skip: the app reads no body (wsgiref hands it the connection itself, which never ends)
        code, headers, body = http_request(daemon.socket("hello"), "/?skip")
        assert code == 200 and json.loads(body)["body"] == 0 and headers["Server"].startswith("WSGIServer/")
        proc = psutil.Process(status["pid"])
        assert "toy_server/serve.py" in " ".join(proc.cmdline())
        assert "server 'toy' from toy-server 0.1" in daemon.output()
        daemon.ctl("stop", "hello")
        assert daemon.status("hello")["hello"]["state"] == "stopped"
        assert not psutil.pid_exists(status["pid"])  # reaped by the daemon before the stop was answered
    finally:
        daemon.stop()


def test_a_server_that_is_not_installed_is_a_manifest_problem_that_names_those_that_are(tmp_path):
    site = toy_site(tmp_path)
    conf = tmp_path / "conf.d"
    write_manifest(conf, manifest("granian"))
    env = {"PYTHONPATH": f"{site}:{APPS}", "PATH": f"{BIN}:/usr/bin:/bin"}
    check = subprocess.run([BIN / "wsgictl", "check", "--conf-dir", conf], capture_output=True, text=True, env=env)
    assert check.returncode != 0
    assert "'granian' is not an installed server; installed: gunicorn, toy, uwsgi" in check.stdout + check.stderr


def test_a_plugin_that_fails_to_load_is_named_with_its_distribution_when_a_manifest_uses_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_server.py").write_text("raise ImportError('needs libfoo')\n")
    distribution(site, "broken-server", {"broken": "broken_server:SERVER"}, version="2.3")
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.builtin()
    registry.discover()
    assert set(registry.servers) == set(BUILTIN)  # skipped, the others loaded
    why = registry.problem("broken")
    assert why is not None and "broken-server 2.3" in why and "needs libfoo" in why, why


def test_a_plugin_cannot_take_the_name_of_a_builtin_server(tmp_path, monkeypatch):
    site = toy_site(tmp_path)
    distribution(site, "impostor", {"uwsgi": "toy_server:SERVER"})
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.builtin()
    registry.discover()
    assert registry.servers["uwsgi"].make.__module__ == "supervisor.uwsgi.plugin"
    assert "impostor 0.1" in (registry.broken.get("uwsgi") or "")
    assert registry.names() == ["gunicorn", "toy", "uwsgi"]


def test_the_builtin_servers_need_no_entry_point(monkeypatch):
    """As when this distribution's metadata is missing (a frozen binary, a source tree on the path)."""
    monkeypatch.setattr("supervisor.registry._server_points", lambda: [])
    registry = Registry.builtin()
    registry.discover()
    assert list(registry.servers) == ["uwsgi", "gunicorn", "process"]
    assert installed_names() == ["gunicorn", "uwsgi"] == registry.names()
