"""Memory of a real control plane under the daemon: keystone, placement, glance and nova-api on MariaDB.

    .venv/bin/python bench/run.py memory                       # every server and mode (about 20 minutes)
    .venv/bin/python bench/run.py memory:requests=40,modes=1   # shorter: 40 requests a service, mode (a) only

4 workers each, under uWSGI and under gunicorn, in three modes: (a) today's layout (each worker loads its
own app), (b) `preload = true` (the master loads the app and freezes it before the fork), (c) (b) with
`warmup` requests answered in the master first. For each server and mode, one daemon runs all four:

- cold start: the daemon's start until READY=1 (every service running, every worker loaded);
- a fixed mix of real requests to each service (a token from keystone, resource providers from
  placement, the image list from glance, nova's version documents), from 4 clients at once;
- then total PSS of every service's tree and USS of each worker (/proc/PID/smaps_rollup);
- reload and restart of each service under load (2 clients on its socket): failed requests.

MariaDB is started privately on loopback (tests/backing.py) and the services' databases are made once
(db_sync, keystone's bootstrap); the OpenStack venv is built once from PyPI (.cache/memory-bench-venv).
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import bench_daemon, say, short_tmp

SERVERS = ("uwsgi", "gunicorn")
MODES = {
    "a": ("(a) lazy: each worker loads the app", {}),
    "b": ("(b) preload + gc.freeze", {"preload": True}),
    "c": ("(c) preload + warm-up", {"preload": True, "warmup": True}),
}
PROCESSES = 4
ADMIN_PASSWORD = "bench-admin"
IDENTITY = {"X-Identity-Status": "Confirmed", "X-User-Id": "bench", "X-Project-Id": "bench", "X-Roles": "admin"}
TOKEN_BODY = json.dumps(
    {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
).encode()


@dataclass
class Request:
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    expect: tuple[int, ...] = (200,)


@dataclass
class Api:
    name: str
    table: str  # the manifest table, without the mode's keys
    mix: list[Request]  # the fixed mix, in turn
    plain: str  # a GET answered 200 without credentials: the load during reload and restart, and the warm-up
    preload_keys: str = ""  # what the service needs to be preloaded (nova's before_fork)


def venv() -> Path:
    from support import service_venv

    return service_venv("memory-bench", "keystone", "openstack-placement", "glance", "nova", "PyMySQL")


def manage(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def prepare(tmp: Path, db, env: Path) -> list[Api]:
    """Config files and databases of the four services, made once for every server and mode."""
    bin_ = env / "bin"
    apis = []

    etc = tmp / "keystone"
    etc.mkdir()
    db.create("keystone")
    (etc / "keystone.conf").write_text(
        f"[database]\nconnection = {db.url('keystone')}\n[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {etc / 'fernet-keys'}\n"
        f"[fernet_receipts]\nkey_repository = {etc / 'fernet-keys'}\n"
        f"[credential]\nkey_repository = {etc / 'credential-keys'}\n"
    )
    cfg = ("--config-file", str(etc / "keystone.conf"))
    manage(str(bin_ / "keystone-manage"), *cfg, "db_sync")
    for setup in ("fernet_setup", "credential_setup"):
        manage(str(bin_ / "keystone-manage"), *cfg, setup, "--keystone-user", "root", "--keystone-group", "root")
    manage(str(bin_ / "keystone-manage"), *cfg, "bootstrap", "--bootstrap-password", ADMIN_PASSWORD)
    apis.append(
        Api(
            "keystone",
            f'app = "keystone.wsgi.api:application"\n'
            f'environment = {{ OS_KEYSTONE_CONFIG_FILES = "{etc / "keystone.conf"}" }}\n',
            [
                Request("/v3"),
                Request(
                    "/v3/auth/tokens",
                    "POST",
                    {"Content-Type": "application/json"},
                    TOKEN_BODY,
                    (201,),
                ),
            ],
            "/v3",
        )
    )

    etc = tmp / "placement"
    etc.mkdir()
    db.create("placement")
    (etc / "placement.conf").write_text(
        f"[api]\nauth_strategy = noauth2\n[placement_database]\nconnection = {db.url('placement')}\n"
    )
    manage(str(bin_ / "placement-manage"), "--config-dir", str(etc), "db", "sync")
    placement = {"X-Auth-Token": "admin", "OpenStack-API-Version": "placement latest"}
    apis.append(
        Api(
            "placement",
            f'app = "placement.wsgi.api:application"\nenvironment = {{ OS_PLACEMENT_CONFIG_DIR = "{etc}" }}\n',
            [Request("/"), Request("/resource_providers", headers=placement)],
            "/",
        )
    )

    etc = tmp / "glance"
    etc.mkdir()
    db.create("glance")
    for store in ("images", "staging", "tasks"):
        (tmp / f"glance-{store}").mkdir()
    (etc / "glance-api.conf").write_text(
        f"[DEFAULT]\nenabled_backends = fs:file\n[glance_store]\ndefault_backend = fs\n"
        f"[fs]\nfilesystem_store_datadir = {tmp / 'glance-images'}\n"
        f"[os_glance_staging_store]\nfilesystem_store_datadir = {tmp / 'glance-staging'}\n"
        f"[os_glance_tasks_store]\nfilesystem_store_datadir = {tmp / 'glance-tasks'}\n"
        f"[database]\nconnection = {db.url('glance')}\n"
        f"[oslo_policy]\npolicy_file = {etc / 'policy.yaml'}\n"
        f"[paste_deploy]\nconfig_file = {etc / 'glance-api-paste.ini'}\n"
    )
    # glance's own pipeline with the identity taken from headers (what keystonemiddleware would set)
    paste = (env / "etc" / "glance" / "glance-api-paste.ini").read_text()
    (etc / "glance-api-paste.ini").write_text(paste.replace(" unauthenticated-context rootapp", " context rootapp"))
    (etc / "policy.yaml").write_text('"get_images": ""\n"get_image": ""\n')
    manage(str(bin_ / "glance-manage"), "--config-file", str(etc / "glance-api.conf"), "db_sync")
    apis.append(
        Api(
            "glance",
            f'app = "glance.wsgi.api:application"\nenvironment = {{ OS_GLANCE_CONFIG_DIR = "{etc}" }}\n',
            [Request("/versions"), Request("/v2/images", headers=IDENTITY)],
            "/versions",
        )
    )

    etc = tmp / "nova"
    etc.mkdir()
    for name in ("nova_api", "nova", "nova_cell0"):
        db.create(name)
    shutil.copy(env / "etc" / "nova" / "api-paste.ini", etc / "api-paste.ini")
    (etc / "nova.conf").write_text(
        f"[DEFAULT]\nhost = bench\n[api_database]\nconnection = {db.url('nova_api')}\n"
        f"[database]\nconnection = {db.url('nova')}\n"
        "[oslo_concurrency]\nlock_path = " + str(tmp / "nova-locks") + "\n"
    )
    nova_cfg = ("--config-file", str(etc / "nova.conf"))
    manage(str(bin_ / "nova-manage"), *nova_cfg, "api_db", "sync")
    manage(str(bin_ / "nova-manage"), *nova_cfg, "cell_v2", "map_cell0", "--database_connection", db.url("nova_cell0"))
    manage(str(bin_ / "nova-manage"), *nova_cfg, "db", "sync")
    apis.append(
        Api(
            "nova-api",
            f'app = "nova.wsgi.osapi_compute:application"\nenvironment = {{ OS_NOVA_CONFIG_DIR = "{etc}" }}\n',
            [Request("/"), Request("/v2.1/")],
            "/",
            'before_fork = ["nova.thread_pool_factory:reset_all_executors"]\n',  # its thread pool, as contrib's
        )
    )
    return apis


def manifest(apis: list[Api], server: str, mode: dict) -> str:
    out = []
    for api in apis:
        keys = f'server = "{server}"\nprocesses = {PROCESSES}\nstart_timeout = 600\nstop_timeout = 30\n'
        if mode.get("preload"):
            keys += "preload = true\n" + api.preload_keys
        if mode.get("warmup"):
            keys += f'warmup = ["{api.plain}"]\n'
        out.append(f'[services.{api.name}]\nkind = "api"\nvenv = "{venv()}"\n{keys}{api.table}\n')
    return "\n".join(out)


def start(tmp: Path, apis: list[Api], server: str, mode: dict):
    """(daemon, seconds from its start to READY=1): every service running, every worker with its app."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    d = bench_daemon(tmp, "--no-units", "--sample-interval", "1", env={"NOTIFY_SOCKET": str(tmp / "notify.sock")})
    d.conf_dir.mkdir(parents=True)
    (d.conf_dir / "plane.toml").write_text(manifest(apis, server, mode))
    started = time.monotonic()
    d.start(wait=False)
    try:  # a start that fails stops its daemon too (the first version of this bench left one running)
        notify.settimeout(900)
        with notify:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                if d.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited: {d.output()[-3000:]}")
        took = time.monotonic() - started
        states = {s["name"]: (s["state"], s.get("reason", "")) for s in status(d)}
        if {state for state, _ in states.values()} != {"running"}:
            raise RuntimeError(f"READY=1, but: {states}\n{d.output()[-4000:]}")
    except BaseException:
        d.stop(timeout=120)
        raise
    return d, took


def status(d) -> list[dict]:
    return list(d.status().values())


def send_mix(d, apis: list[Api], requests: int, clients: int = 4) -> dict[str, int]:
    """`requests` of each service's mix, from `clients` threads at once; failures by service."""
    from support import uwsgi_request

    failed = dict.fromkeys((a.name for a in apis), 0)
    lock = threading.Lock()

    def client(api: Api, count: int) -> None:
        for i in range(count):
            req = api.mix[i % len(api.mix)]
            try:
                code, _, _ = uwsgi_request(d.socket(api.name), req.path, req.method, req.body, 60, req.headers)
                ok = code in req.expect
            except OSError:
                ok = False
            if not ok:
                with lock:
                    failed[api.name] += 1

    threads = [threading.Thread(target=client, args=(api, requests // clients)) for api in apis for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def footprint(d) -> dict[str, tuple[float, list[float]]]:
    """Each service's tree PSS (MiB) and its workers' USS (MiB), from a sample taken after the mix."""
    time.sleep(2.5)  # --sample-interval 1: a sample from after the last request
    mib = 1024 * 1024
    return {
        s["name"]: (s["memory"]["pss_bytes"] / mib, [w["uss_bytes"] / mib for w in s["memory"]["workers"]])
        for s in status(d)
    }


def under_load(d, apis: list[Api], verb: str) -> tuple[int, int]:
    """`wsgictl VERB` of each service, one after another, each under 2 clients: (requests, failed)."""
    from support import Load

    total = failed = 0
    for api in apis:
        with Load(d.socket(api.name), threads=2, path=api.plain, timeout=120) as load:
            d.ctl(verb, api.name, "--timeout", "600")
            load.wait_for_requests(5)
        total += load.ok + len(load.failures)
        failed += len(load.failures)
    return total, failed


def section_memory(requests: int = 240, modes: int = 3) -> None:
    from backing import private_mariadb

    chosen = list(MODES)[:modes]
    say("## Memory of a real control plane (keystone, placement, glance, nova-api on MariaDB, 4 workers each)")
    say()
    env = venv()
    tmp = short_tmp("wsm-")
    rows, failures = [], []
    try:
        with private_mariadb(tmp) as db:
            apis = prepare(tmp, db, env)
            for server in SERVERS:
                for key in chosen:
                    label, mode = MODES[key]
                    run = tmp / f"{server}-{key}"
                    run.mkdir()
                    try:
                        d, took = start(run, apis, server, mode)
                    except Exception as exc:  # one mode that does not start costs its own row only
                        failures.append(f"{server} {label}: {type(exc).__name__}: {str(exc)[:1500]}")
                        continue
                    try:
                        mix_failed = send_mix(d, apis, requests)
                        mem = footprint(d)
                        preload = {s["name"]: s.get("preload", "-") for s in status(d)}
                        reloads = under_load(d, apis, "reload")
                        restarts = under_load(d, apis, "restart")
                    except Exception as exc:
                        failures.append(f"{server} {label}: {type(exc).__name__}: {str(exc)[:1500]}")
                        continue
                    finally:
                        d.stop(timeout=180)
                    rows.append((server, label, took, mix_failed, mem, reloads, restarts, preload))
                    print(f"memory: {server} {label}: start {took:.1f} s, preload {preload}, {mem}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = [a.name for a in apis]
    base = {r[0]: r[4] for r in reversed(rows)}  # each server's first row: mode (a) when it ran
    say(
        "| server | mode | total PSS MiB (× a) | "
        + " | ".join(f"{n} PSS (worker USS)" for n in names)
        + " | cold start to READY=1 | mix failed | reload: failed/requests | restart: failed/requests"
        + " | preload in status |"
    )
    say("| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- | --- | --- |")
    for server, label, took, mix_failed, mem, reloads, restarts, preload in rows:
        total = sum(pss for pss, _ in mem.values())
        ratio = total / sum(pss for pss, _ in base[server].values())
        cells = " | ".join(f"{mem[n][0]:.0f} ({statistics.median(mem[n][1]):.0f})" for n in names)
        say(
            f"| {server} | {label} | {total:.0f} ({ratio:.2f}×) | {cells} | {took:.1f} s | "
            f"{sum(mix_failed.values())} of {requests * len(names)} | {reloads[1]}/{reloads[0]} | "
            f"{restarts[1]}/{restarts[0]} | {', '.join(sorted(set(preload.values())))} |"
        )
    say()
    for failure in failures:
        say(f"**failed**: {failure}")
        say()
    mixes = "; ".join(f"{a.name}: " + ", ".join(f"{r.method} {r.path}" for r in a.mix) for a in apis)
    say(
        f"Fixed mix: {requests} requests a service from 4 clients, in turn ({mixes}); PSS of each service's "
        "whole tree (master and workers) and the median USS of its workers, from `wsgictl status --json` "
        "sampled after the mix; reload and restart of each service in turn under 2 clients."
    )
    say()
