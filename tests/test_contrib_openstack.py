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


# Where each project's own deployment serves each API, and with what. The mount is the path prefix devstack gives
# the API (`write_uwsgi_config CONF APP "/<path>"`, and the same path in the catalog endpoint it registers): an
# operator behind nginx or Apache expects the catalog paths devstack's clouds have. Read from each repository's
# default branch (2026-07/08): devstack 493835a61a (lib/), and the project's own devstack plugin otherwise.
# kolla-ansible (ansible/group_vars/all/*.yml) and openstack-ansible (os_<project> defaults/main.yml) give every API
# a port of its own at its root instead, so none of them has a prefix to compare with.
DEPLOYED = {
    # service: (mount, entry point), source
    "keystone": ("/identity", "keystone.wsgi.api:application"),  # devstack lib/keystone:50,194
    "nova-api": ("/compute", "nova.wsgi.osapi_compute:application"),  # devstack lib/nova:56,551
    "nova-metadata": (None, "nova.wsgi.metadata:application"),  # devstack lib/nova:57,555 (its own port)
    "placement": ("/placement", "placement.wsgi.api:application"),  # devstack lib/placement:40,91
    "glance-api": ("/image", "glance.wsgi.api:application"),  # devstack lib/glance:131,459
    "neutron-api": ("/networking", "neutron.wsgi.api:application"),  # devstack lib/neutron:82,448
    "cinder-api": ("/volume", "cinder.wsgi.api:application"),  # devstack lib/cinder:66,402
    "heat-api": ("/heat-api", "heat.wsgi.api:application"),  # heat devstack/lib/heat:57,126
    "heat-api-cfn": ("/heat-api-cfn", "heat.wsgi.cfn:application"),  # heat devstack/lib/heat:58,131
    # octavia devstack/plugin.sh:366 ("/$OCTAVIA_SERVICE_TYPE"), settings:111,112
    "octavia-api": ("/load-balancer", "octavia.wsgi.api:application"),
    "designate-api": ("/dns", "designate.wsgi.api:application"),  # designate devstack/lib/wsgi:4,12, settings:63
    "manila-api": ("/share", "manila.wsgi.api:application"),  # manila devstack/plugin.sh:300, settings:106
    "magnum-api": ("/container-infra", "magnum.wsgi.api:application"),  # magnum devstack/lib/magnum:51,240
    "ironic-api": ("/baremetal", "ironic.wsgi:application"),  # ironic devstack/lib/ironic:420,1768
    "aodh-api": ("/alarming", "aodh.wsgi.api:application"),  # aodh devstack/plugin.sh:100, settings:14
    # barbican.wsgi.api (devstack/settings:25) reads /etc/barbican/barbican-api-paste.ini whatever it is told: the
    # file builds the same app from the paste file in the config dir (barbican/api/app.py:117)
    "barbican-api": ("/key-manager", "${OS_BARBICAN_CONFIG_DIR}/barbican-api-paste.ini"),  # devstack/lib/barbican:189
    "watcher-api": ("/infra-optim", "watcher.wsgi.api:application"),  # watcher devstack/lib/watcher:57,150
    "zaqar-api": ("/messaging", "zaqar.transport.wsgi.app:application"),  # zaqar devstack/plugin.sh:139, settings:8
    "masakari-api": ("/instance-ha", "masakari.wsgi.api:application"),  # masakari devstack/plugin.sh:161, settings:57
}


def apis_by_file() -> dict[str, dict[str, dict]]:
    return {
        stem: {name: t for name, t in services.items() if t["kind"] == "api"}
        for stem, services in services_by_file().items()
    }


def test_each_api_is_mounted_and_loaded_as_its_project_deploys_it():
    """The catalog paths of a devstack cloud work unchanged behind `wsgictl proxy-config`."""
    shipped = {
        name: (t.get("mount"), t.get("app", t.get("paste")))
        for apis in apis_by_file().values()
        for name, t in apis.items()
    }
    assert shipped == DEPLOYED


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
