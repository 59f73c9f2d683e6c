"""Memory of real keystone (SQLite) under the daemon, 4 workers: each worker loads the app, preload, and
preload with a warm-up; under uWSGI and gunicorn.

After a fixed mix of real requests from 4 clients (3 GET /v3 for each POST /v3/auth/tokens, which queries
the database and answers 401), the PSS of the whole tree (master + workers) and the USS of each worker,
read from /proc/PID/smaps_rollup by this script. Also the time from `wsgictl start` to all workers ready.

    .venv/bin/python bench/preload_memory.py [--requests 1200] [--servers uwsgi,gunicorn]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import Daemon, descendants, say, uwsgi_request
from test_preload_openstack import KEYSTONE, keystone_manifest

from supervisor.observe.memory import memory_of
from support import service_venv, write_manifest

MiB = 1 << 20
TOKEN_REQUEST = json.dumps(
    {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "nobody", "domain": {"id": "default"}, "password": "wrong"}},
            }
        }
    }
).encode()


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) of one process, in bytes (0, 0 when it is gone)."""
    memory = memory_of(pid)
    return (memory.pss, memory.uss) if memory is not None else (0, 0)


def one_request(sock: Path, i: int) -> int:
    if i % 4 == 3:
        return uwsgi_request(sock, "/v3/auth/tokens", method="POST", body=TOKEN_REQUEST)[0]
    return uwsgi_request(sock, "/v3")[0]


def measure(server: str, mode: str, venv: Path, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="preload-mem-") as tmp:
        tmp_path = Path(tmp)
        text = keystone_manifest(tmp_path, venv).replace("processes = 2", "processes = 4")
        if mode == "off":
            text = text.replace("preload = true\n", "").replace('warmup = ["/", "/v3"]\n', "")
        elif mode == "preload":
            text = text.replace('warmup = ["/", "/v3"]\n', "")
        write_manifest(tmp_path / "conf.d", text, server=server)
        d = Daemon(tmp_path)
        d.start()
        try:
            started = time.monotonic()
            d.ctl("start", "keystone", "--timeout", "180")
            ready = time.monotonic() - started
            sock = d.socket("keystone")
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda i: one_request(sock, i), range(requests)))
            failed = sum(1 for i, s in enumerate(statuses) if s != (401 if i % 4 == 3 else 200))
            s = d.status()["keystone"]
            master = s["pid"]
            workers = [w["pid"] for w in s["workers"]]
            tree = [master, *descendants(master)]
            pss = sum(rollup(pid)[0] for pid in tree)
            uss = [rollup(pid)[1] for pid in workers]
            return {"pss": pss, "uss": uss, "ready": ready, "failed": failed, "preload": s["preload"]}
        finally:
            d.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--servers", default="uwsgi,gunicorn")
    args = parser.parse_args()
    venv = service_venv("keystone", KEYSTONE)
    say(f"keystone ({KEYSTONE}, SQLite), 4 workers, after {args.requests} requests from 4 clients")
    say("| server | mode | tree PSS MiB | worker USS MiB (each) | vs off | start to ready s | failed | preload |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for server in args.servers.split(","):
        base = None
        for mode in ("off", "preload", "preload+warmup"):
            r = measure(server, mode, venv, args.requests)
            base = base or r["pss"]
            uss = ", ".join(f"{u / MiB:.0f}" for u in r["uss"])
            say(
                f"| {server} | {mode} | {r['pss'] / MiB:.0f} | {uss} | {r['pss'] / base:.2f}× | {r['ready']:.2f} "
                f"| {r['failed']} | {r['preload']} |"
            )


if __name__ == "__main__":
    main()
