"""contrib/openstack/: a manifest per OpenStack project, checked without the host they are written for."""

import subprocess
import tomllib

import pytest

from supervisor.manifest.loading import load
from support import ROOT, WSGICTL

CONTRIB = ROOT / "contrib" / "openstack"
FILES = sorted(CONTRIB.glob("*.toml"))
# the seed's projects that ship a WSGI entry point (issue 24)
PROJECTS = {
    "keystone", "nova", "placement", "glance", "neutron", "cinder", "heat", "octavia", "designate",
    "manila", "magnum", "ironic", "aodh", "barbican", "watcher", "zaqar", "masakari",
}  # fmt: skip


def services_by_file() -> dict[str, dict]:
    return {path.stem: tomllib.loads(path.read_text())["services"] for path in FILES}


def test_every_project_has_its_manifest():
    assert {path.stem for path in FILES} >= PROJECTS


def test_wsgictl_check_offline_passes_on_the_whole_dir():
    result = subprocess.run(
        [str(WSGICTL), "check", "--offline", "--conf-dir", str(CONTRIB)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{CONTRIB}: valid (") and "not checked against this host" in result.stdout


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_stands_alone(tmp_path, path):
    """A host may run any one of them: no file names a service of another in `after`."""
    (tmp_path / path.name).write_text(path.read_text())
    assert load(tmp_path, check_host=False).services


def test_they_can_share_one_conf_dir():
    """Every service name is unique across the files, and every API with a mount has its own."""
    names = [name for services in services_by_file().values() for name in services]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    apis = {name: t for services in services_by_file().values() for name, t in services.items() if t["kind"] == "api"}
    mounts = [t["mount"] for t in apis.values() if "mount" in t]
    assert len(mounts) == len(set(mounts)), sorted(m for m in mounts if mounts.count(m) > 1)
    # the metadata API answers instances at its root, on a listener of its own: the only one without a mount
    assert sorted(name for name, t in apis.items() if "mount" not in t) == ["nova-metadata"]


def test_per_host_values_are_said_once_in_each_files_defaults():
    """venv, user and the config dir: what the Ansible role fills in, so no service repeats them."""
    for path in FILES:
        data = tomllib.loads(path.read_text())
        defaults = data["defaults"]
        assert {"venv", "user", "environment"} <= defaults.keys(), path.name
        config_dir = f"OS_{path.stem.upper()}_CONFIG_DIR"
        assert defaults["environment"][config_dir] == f"/etc/{path.stem}", path.name
        for name, table in data["services"].items():
            assert not {"venv", "user"} & table.keys(), f"{path.name}: {name} repeats a per-host value"
            named = " ".join([*table.get("command", table.get("args", [])), table.get("paste", "")])
            assert "/etc/" not in named, f"{path.name}: {name} names a config path instead of ${{{config_dir}}}"


def test_the_argv_of_the_workers_follows_the_config_dir(tmp_path):
    """One value in [defaults] moves every worker's --config-file."""
    text = (CONTRIB / "nova.toml").read_text().replace('"/etc/nova"', '"/srv/cloud/nova"')
    (tmp_path / "nova.toml").write_text(text)
    services = load(tmp_path, check_host=False).services
    assert services["nova-conductor"].command == ("nova-conductor", "--config-file", "/srv/cloud/nova/nova.conf")
    assert services["nova-api"].environment["OS_NOVA_CONFIG_DIR"] == "/srv/cloud/nova"


def apis_by_file() -> dict[str, dict[str, dict]]:
    return {
        stem: {name: t for name, t in services.items() if t["kind"] == "api"}
        for stem, services in services_by_file().items()
    }


def test_the_docs_table_says_what_the_files_do():
    """docs/openstack.md's table is what an operator reads: each file's row names its APIs' entry points and mounts."""
    rows = {}
    for line in (ROOT / "docs" / "openstack.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 2 and cells[1] in PROJECTS:
            rows[cells[1]] = cells[2]
    assert rows.keys() == {path.stem for path in FILES}
    for stem, apis in apis_by_file().items():
        for name, table in apis.items():
            entry = table.get("app", table.get("paste"))
            said = f"`{entry}` `{table['mount']}`" if "mount" in table else f"`{entry}` (no mount"
            assert said in rows[stem], f"docs/openstack.md, row {stem}: {name} is {said}, the row says {rows[stem]}"
