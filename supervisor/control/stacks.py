"""The control socket's `stack` command: the Python stack of each worker process of a service, by py-spy.

The daemon runs `py-spy dump --pid P` (it has the rights to attach: root,
or the services' user) for every worker of an API (the uWSGI vassal's or
the gunicorn arbiter's, as the last sample lists them) or every process of
a worker service (its main process and their descendants that run as its
user), all at once, and labels each with what the server's stats say it
does: idle, or the request it serves (from a sample taken for the purpose,
bounded as a scrape's is).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.control.protocol import EXIT_NOT_RUNNING, EXIT_UNKNOWN, error
from supervisor.manifest.models import runner
from supervisor.observe.procs import cmdline

if TYPE_CHECKING:
    from supervisor.state.supervisor import Supervisor

FRESH_WAIT = 2.0  # seconds to wait for the stats of what each worker serves (else: the last sample's)
DUMP_TIMEOUT = 20.0  # seconds one py-spy dump may take (it reads the process's memory)
NOT_PERMITTED = ("Permission denied", "Operation not permitted", "EPERM")
PTRACE_HINT = (
    "py-spy may not attach to the process: the daemon needs the right to ptrace it: run it as root with "
    "CAP_SYS_PTRACE (containers drop it: add it, e.g. --cap-add SYS_PTRACE), on a kernel whose "
    "kernel.yama.ptrace_scope is below 3 (3 refuses every attach until a reboot; see sysctl kernel.yama.ptrace_scope)"
)


@dataclass(frozen=True)
class Target:
    pid: int
    label: str  # what the process is doing, as far as the daemon knows


def py_spy() -> str | None:
    """py-spy beside the daemon's Python (its venv), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if os.access(here, os.X_OK) else shutil.which("py-spy")


def api_targets(sup: Supervisor, name: str) -> list[Target]:
    svc, sample = sup.services[name], sup.sampler.samples.get(name)
    stats = sample.stats if sample is not None else None
    if stats is None or stats.pid != svc.pid:
        return []
    targets = []
    for w in stats.workers:
        if w.pid <= 0:
            continue
        doing = ("busy: " + ", ".join(w.serving)) if w.serving else (w.status or "unknown")
        targets.append(Target(w.pid, f"worker {w.id} (pid {w.pid}): {doing}"))
    return targets


def tree_targets(sup: Supervisor, name: str) -> list[Target]:
    """The main process of a worker service and the other processes of its control group (where there
    are no groups, its descendants) that run as the service's user: never a process found by what it
    says about itself (its environment), which any process may choose."""
    svc = sup.services[name]
    main = svc.pid
    if main is None:
        return []
    pids = sup.drivers["process"].members(svc)  # type: ignore[attr-defined]
    targets = []
    for pid in pids:
        command = " ".join(cmdline(pid))[:80]
        role = "main process" if pid == main else "process"
        targets.append(Target(pid, f"{role} (pid {pid}): {command}"))
    return targets


async def dump(binary: str, pid: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        binary,
        "dump",
        "--pid",
        str(pid),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RUST_BACKTRACE": "0"},  # its error, not a backtrace of py-spy itself
    )
    try:
        async with asyncio.timeout(DUMP_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"ok": False, "error": f"py-spy did not answer within {DUMP_TIMEOUT:g}s"}
    if proc.returncode == 0:
        return {"ok": True, "stack": out.decode(errors="replace")}
    text = (err or out).decode(errors="replace").strip()
    first = text.splitlines()[0].removeprefix("Error: ") if text else f"py-spy exited with {proc.returncode}"
    if any(word in text for word in NOT_PERMITTED):
        return {"ok": False, "error": f"pid {pid}: {first} (permission denied): {PTRACE_HINT}"}
    return {"ok": False, "error": f"pid {pid}: {first}"}


async def stacks(sup: Supervisor, name: str) -> dict[str, Any]:
    """The control socket's answer to `stack`: one entry per process, in the order found."""
    if name not in sup.services:
        known = ", ".join(sorted(sup.services)) or "none"
        return error(f"unknown service: {name} (known: {known})", EXIT_UNKNOWN)
    svc = sup.services[name]
    if svc.pid is None or not svc.state.up:
        return error(f"{name} is not running (it is {svc.state})", EXIT_NOT_RUNNING)
    binary = py_spy()
    if binary is None:
        return error("py-spy is not installed where the daemon runs: pip install py-spy (into its venv)")
    if runner(svc.spec) == "process":
        targets = await asyncio.get_running_loop().run_in_executor(None, tree_targets, sup, name)
    else:
        await sup.sampler.fresh(max_age=0.0, wait=FRESH_WAIT)  # what each worker serves now
        targets = api_targets(sup, name)
    if not targets:
        return error(f"{name} has no worker processes to look at yet", EXIT_NOT_RUNNING)
    dumps = await asyncio.gather(*(dump(binary, t.pid) for t in targets))
    processes = [{"pid": t.pid, "label": t.label, **d} for t, d in zip(targets, dumps, strict=True)]
    if not any(p["ok"] for p in processes):
        return error(processes[0]["error"], processes=processes)
    return {"ok": True, "processes": processes}
