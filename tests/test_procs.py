"""Process trees, usage and tags, on real processes this test starts and stops by pid."""

import os
import signal
import subprocess
import sys
import time

from supervisor.observe.procs import alive, descendants, is_descendant, stopped
from supervisor.observe.sampler import tree_usage
from supervisor.workers.driver import TAG, tagged

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


def test_tagged_finds_every_process_carrying_the_tag():
    tag = f"/tmp/test-procs-{os.getpid()}:w"
    proc, pids = start_tree({**os.environ, TAG: tag})
    other, _ = start_tree({**os.environ, TAG: tag + "x"})
    try:
        assert sorted(tagged(tag)) == sorted(pids)
    finally:
        stop_tree(proc)
        stop_tree(other)
    assert tagged(tag) == []


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
