"""Process trees, usage and control groups, on real processes this test starts and stops by pid."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.observe.cgroups import (
    ServiceGroups,
    base_name,
    cgroup2_mount,
    delegation_warning,
    group_name,
    joining,
    own_group,
)
from supervisor.observe.procs import alive, descendants, is_descendant, stopped
from supervisor.observe.sampler import tree_usage

# a parent that burns some CPU in a child it reaps, then starts two sleeping
# children (one with a child of its own) and prints every pid
TREE = """
import os, subprocess, sys, time
burner = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
burner.wait()
a = subprocess.Popen(["sleep", "600"])
b = subprocess.Popen([sys.executable, "-c", "import subprocess, time; p = subprocess.Popen(['sleep', '600']); "
                      "print(p.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
grandchild = int(b.stdout.readline())
print(os.getpid(), a.pid, b.pid, grandchild, flush=True)
time.sleep(600)
"""


def start_tree(env=None):
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.tree = pids
    return proc, pids


def stop_tree(proc):
    os.killpg(proc.pid, signal.SIGKILL)  # its own session and group: the children go with it
    proc.wait()
    # the children exit in their own time after the SIGKILL (init reaps them later still)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in proc.tree[1:]) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_descendants_lists_each_process_before_its_children():
    proc, (parent, a, b, grandchild) = start_tree()
    try:
        found = descendants(parent)
        assert sorted(found) == sorted([a, b, grandchild])
        assert found.index(b) < found.index(grandchild)
        assert is_descendant(grandchild, parent) and is_descendant(a, parent)
        assert not is_descendant(parent, a)
        assert descendants(grandchild) == []
    finally:
        stop_tree(proc)
    assert descendants(parent) == [] and not alive(parent)


def test_tree_usage_counts_the_whole_tree_and_reaped_children():
    proc, (parent, *below) = start_tree()
    try:
        usage = tree_usage([parent, below[0]])
        rss, cpu = usage[parent]
        alone, _ = usage[below[0]]
        assert 0 < alone < rss
        # the burner was reaped before any of this: its CPU is in the parent's cutime
        assert cpu >= 0.01
    finally:
        stop_tree(proc)
    assert tree_usage([parent]) == {parent: (0, 0.0)}


def test_a_control_group_holds_what_left_the_tree_and_is_awaited_empty():
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy here")
    base = mount / f"wsgi-h4-test-procs-{os.getpid()}"
    base.mkdir()
    groups = ServiceGroups(base)
    group = group_name("w", "process")
    fd = groups.procs_fd(group)
    try:
        # the tree's root joins the group in the child, before the exec: all it starts is in it
        join = joining(fd)
        proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, preexec_fn=join)
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert sorted(groups.members(group)) == sorted(pids) == sorted(groups.of_service("w"))
        assert groups.of_service("x") == [] and groups.populated(group)

        async def kill_and_wait():
            waiting = asyncio.ensure_future(groups.emptied(group, 10))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # awaited, not returned at once
            assert groups.kill(group) == 4
            return await waiting

        assert asyncio.run(kill_and_wait())
        proc.wait(5)
        assert not groups.populated(group) and not any(alive(p) for p in pids)
    finally:
        os.close(fd)
        groups.kill(group)
        groups.remove(group)
        base.rmdir()
    assert not base.exists()


def test_the_hierarchy_is_found_from_proc():
    mountinfo = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    assert cgroup2_mount("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw\n" + mountinfo) == Path(
        "/sys/fs/cgroup/unified"
    )
    assert cgroup2_mount("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw\n") is None
    unit = "/system.slice/wsgi-supervisor.service"
    assert own_group(f"9:name=systemd:/\n0::{unit}\n") == unit
    assert base_name("/run/wsgi-supervisor") == "wsgi-supervisor"
    assert base_name("/tmp/wsr-1") != base_name("/tmp/wsr-2")
    assert group_name("nova-api", "uwsgi", "b") == "nova-api@uwsgi.b"


def test_a_unit_group_systemd_did_not_delegate_is_told_with_the_fix(tmp_path):
    """The marks systemd 252 sets, as seen in nspawn (tests/test_systemd.py checks the real thing): a
    unit's group carries its invocation id, and a delegated one `delegate` = "1"."""
    unit = tmp_path / "wsgi-supervisor.service"
    unit.mkdir()
    try:
        os.setxattr(unit, "trusted.invocation_id", b"a8bb5d0f")
    except OSError as exc:
        pytest.skip(f"no trusted extended attributes here: {exc}")
    warning = delegation_warning(unit, "a8bb5d0f")
    assert warning is not None and "Delegate=yes" in warning and "wsgi-supervisor.service" in warning
    # not judged: started by hand (no $INVOCATION_ID), or by another unit whose group this is not
    assert delegation_warning(unit, None) is None
    assert delegation_warning(unit, "0ther1d") is None
    assert delegation_warning(tmp_path, "a8bb5d0f") is None
    # delegated: either mark will do (user.* is the one a daemon without CAP_SYS_ADMIN can read)
    os.setxattr(unit, "user.delegate", b"1")
    assert delegation_warning(unit, "a8bb5d0f") is None
    os.removexattr(unit, "user.delegate")
    os.setxattr(unit, "trusted.delegate", b"1")
    assert delegation_warning(unit, "a8bb5d0f") is None
    os.setxattr(unit, "trusted.delegate", b"0")
    assert delegation_warning(unit, "a8bb5d0f") is not None


def test_alive_and_stopped_tell_a_zombie_and_a_stopped_process():
    child = subprocess.Popen(["sleep", "600"])
    try:
        assert alive(child.pid) and not stopped(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        os.waitpid(child.pid, os.WUNTRACED)
        assert stopped(child.pid) and alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet: a zombie
        assert not alive(child.pid) and stopped(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid) and stopped(child.pid)
