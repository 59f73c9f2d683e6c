"""Control groups (cgroup v2): one per service instance, so that a stop reaches every process of it.

A process that starts a session of its own and is orphaned by a double fork leaves the process tree
of its service, and it may drop whatever environment it was given; it cannot leave its control group
(moving a process needs write access to the `cgroup.procs` of a common ancestor: root's only). So
every service instance runs in a group of its own, all of them under one group per daemon:

    <parent>/wsgi-supervisor[-HASH]/daemon                  the daemon, and the emperor it starts
    <parent>/wsgi-supervisor[-HASH]/NAME@RUNNER[.INSTANCE]  one service instance (`group_name`)

<parent> is the group the daemon was started in: its unit's under systemd (which must then delegate
it: `Delegate=yes`), the root of the hierarchy on a host without. The daemon lives in a leaf of its
own because cgroup v2 lets a group that has processes distribute no resource to its children. HASH
names a runtime dir other than the default one, so that daemons on different runtime dirs (tests,
several hosts on one machine) keep apart, and a daemon that restarts finds its groups again.

A process joins its group between fork and exec, by writing "0" into the group's `cgroup.procs`
through a descriptor the daemon opened (`procs_fd`): since Linux 5.16 the write is checked against
whoever opened the file, so it works after the child dropped to the service's user. Where cgroup v2
cannot be written, `ServiceGroups` says why once in the log and holds nothing (`available` is False);
callers then fall back to the main process's tree.

Under systemd, <parent> is systemd's to manage unless the unit delegates it, and systemd marks a group
it delegates with the extended attribute `trusted.delegate` = "1" (since systemd 244; since 251 also
`user.delegate`, which a daemon without CAP_SYS_ADMIN can read; a systemd older than 244 marks
nothing, and would be told wrongly). `delegation_warning` reads it, and only for the group of the
very unit that started the daemon: systemd marks every unit's group with its invocation id
(`trusted.invocation_id`; systemd 252 sets `user.invocation_id` too) and passes the same id to the
unit's processes as $INVOCATION_ID. That pair, not $NOTIFY_SOCKET (tests set it
outside systemd) nor a path under system.slice (a mapping systemd keeps private), says "this is my
unit's group". A daemon started by hand from a login session has no $INVOCATION_ID and is not
judged: the advice to add `Delegate=yes` would make no sense there.

The daemon makes its groups in an undelegated group all the same, and says so (log, `wsgictl
status`, systemd's STATUS=): without them a stop reaches only the main process's tree, which loses
every process that left it for certain; with them it works until systemd acts on groups it does not
know. systemd 252 leaves them alone (measured in nspawn, hybrid and unified: daemon-reload, reload,
daemon-reexec, set-property MemoryMax= and stop did not move a process), but its documentation
reserves an undelegated group's subtree to systemd, so nothing promises that a later one will.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import select
import signal
from collections.abc import Callable
from pathlib import Path

from supervisor.layout import DEFAULT_RUNTIME_DIR
from supervisor.observe.procs import descendants, signal_tree

log = logging.getLogger("wsgi-supervisor")

BASE = "wsgi-supervisor"
LEAF = "daemon"


def cgroup2_mount(mountinfo: str | None = None) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or …/unified on a hybrid host)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    for line in mountinfo.splitlines():
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if tail.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return Path(fields[4].encode().decode("unicode_escape"))  # \040 and friends
    return None


def own_group(proc_cgroup: str | None = None) -> str | None:
    """This process's group in the v2 hierarchy (`0::/path` in /proc/self/cgroup)."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def base_name(runtime_dir: Path | str) -> str:
    """The name of a daemon's group: the same for the same runtime dir, another for another."""
    path = os.path.abspath(runtime_dir)
    if path == str(DEFAULT_RUNTIME_DIR):
        return BASE
    return f"{BASE}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def group_name(service: str, runner: str, instance: str = "") -> str:
    """A service instance's group. Service names hold no '@' and no dot, so no two collide, and
    none is taken for a controller's file (those are `controller.name`)."""
    return f"{service}@{runner}" + (f".{instance}" if instance else "")


DELEGATE_MARKS = ("trusted.delegate", "user.delegate")
INVOCATION_MARKS = ("trusted.invocation_id", "user.invocation_id")


def _xattr(path: Path, names: tuple[str, ...]) -> bytes | None:
    """The first of the extended attributes `names` that the group carries and this process may read
    (trusted.* needs CAP_SYS_ADMIN; an older kernel or systemd sets fewer): None when none is."""
    for name in names:
        try:
            return os.getxattr(path, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.ENOENT):
                raise
    return None


def delegation_warning(unit_group: Path, invocation_id: str | None) -> str | None:
    """What to tell the operator when `unit_group`, where the daemon makes its groups, is the group
    of the systemd unit that started it (`invocation_id`: $INVOCATION_ID) and that unit does not
    delegate it; None when all is well or when this is not a unit's group (see the module's doc)."""
    if not invocation_id:
        return None
    try:
        mark = _xattr(unit_group, INVOCATION_MARKS)
        if mark is None or mark.decode(errors="replace") != invocation_id:
            return None
        if _xattr(unit_group, DELEGATE_MARKS) == b"1":
            return None
    except OSError:
        return None
    unit = unit_group.name
    return (
        f"systemd did not delegate the control group of {unit} ({unit_group}) to the daemon: add "
        f"Delegate=yes to the [Service] section of {unit} (`wsgictl units install` writes it), then "
        f"`systemctl daemon-reload` and `systemctl restart {unit}` (which restarts every service). "
        "Meanwhile each service still runs in a group of its own below it, so that a stop reaches all "
        "of its processes, but systemd does not expect groups there and does not promise to leave "
        "them alone (systemd 252 does)"
    )


def joining(procs_fd: int) -> Callable[[], None]:
    """A Popen preexec_fn that moves the child into the group whose `cgroup.procs` the daemon
    opened as `procs_fd`: one write and nothing else, since it runs between fork and exec in a
    daemon with threads (see `_die_with_parent` in workers/driver.py). A failed write fails
    the start: a process outside its group would escape the stop."""

    def join() -> None:
        os.write(procs_fd, b"0")

    return join


class ServiceGroups:
    """The daemon's groups: made, joined, listed, killed, awaited and removed here only."""

    def __init__(
        self,
        base: Path | None,
        why_not: str | None = None,
        parent: Path | None = None,
        undelegated: str | None = None,
    ):
        self.base = base
        self.why_not = why_not
        self.parent = parent  # where the daemon was before it moved into its leaf
        # what to tell the operator when systemd did not delegate `parent` (`delegation_warning`)
        self.undelegated = undelegated
        # groups SIGKILLed whose processes may still be on their way out (a process stays in its
        # group until its exit is done): not left behind, nothing to kill or say again
        self.killed: set[str] = set()

    @classmethod
    def unavailable(cls, why: str) -> ServiceGroups:
        return cls(None, why)

    @classmethod
    def open(cls, runtime_dir: Path) -> ServiceGroups:
        """Find or make the daemon's group and move this process into its leaf (`why_not` says
        why not: the daemon logs it once its log is up)."""
        try:
            return cls._open(runtime_dir)
        except OSError as exc:
            return cls.unavailable(f"{exc.filename or 'cgroup v2'}: {exc.strerror or exc}")

    @classmethod
    def _open(cls, runtime_dir: Path) -> ServiceGroups:
        mount, own = cgroup2_mount(), own_group()
        if mount is None or own is None:
            return cls.unavailable("no cgroup v2 hierarchy is mounted")
        name = base_name(runtime_dir)
        here = mount / own.lstrip("/")
        # after a re-exec the daemon is in its leaf already
        parent = here.parent.parent if here.name == LEAF and here.parent.name == name else here
        base = parent / name
        (base / LEAF).mkdir(parents=True, exist_ok=True)
        if not (base / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (base / LEAF).rmdir()
                base.rmdir()
            return cls.unavailable("this kernel has no cgroup.kill (Linux 5.14 or later has)")
        with open(base / LEAF / "cgroup.procs", "w") as procs:
            procs.write("0")
        return cls(base, parent=parent, undelegated=delegation_warning(parent, os.environ.get("INVOCATION_ID")))

    @property
    def available(self) -> bool:
        return self.base is not None

    def path(self, group: str) -> Path | None:
        return self.base / group if self.base is not None else None

    # -- joining ---------------------------------------------------------------------------

    def procs_fd(self, group: str) -> int | None:
        """A descriptor of the group's `cgroup.procs`, opened for writing (the group is made if it
        is not there): a child writes "0" into it to join. None where there are no groups."""
        path = self.path(group)
        if path is None:
            return None
        try:
            path.mkdir(exist_ok=True)
            return os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot make the control group %s: %s", path, exc.strerror or exc)
            return None

    def fresh_procs_fd(self, group: str, say: Callable[[str], None]) -> int | None:
        """`procs_fd` for a new main process, the group emptied first: what an earlier one left there
        (while the daemon was away: killed, it could not end it) is SIGKILLed, and `say` says so."""
        if self.left_behind(group):
            hit = self.kill(group)
            say(f"SIGKILL to {hit} process{'es' if hit != 1 else ''} an earlier instance left in its group")
        return self.procs_fd(group)

    def enclose(self, group: str, pids: list[int]) -> int:
        """Move processes into the group (those a daemon adopts that run outside it); how many moved."""
        fd = self.procs_fd(group)
        if fd is None:
            return 0
        moved = 0
        try:
            for pid in pids:
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.write(fd, str(pid).encode())
                    moved += 1
        finally:
            os.close(fd)
        return moved

    # -- reading ---------------------------------------------------------------------------

    def members(self, group: str) -> list[int]:
        """Every process in the group now (empty when there is no such group)."""
        path = self.path(group)
        if path is None:
            return []
        try:
            return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def of_service(self, service: str) -> list[int] | None:
        """Every process of a service, in every group it has (each instance, each server): THE
        answer to "which processes are this service's". None where there are no groups: the caller
        then walks the main process's tree (`procs.descendants`)."""
        if self.base is None:
            return None
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for entry in self.base.iterdir():
                if entry.is_dir() and entry.name.partition("@")[0] == service:
                    pids += self.members(entry.name)
        return pids

    def populated(self, group: str) -> bool:
        path = self.path(group)
        if path is None:
            return False
        try:
            populated = "populated 1" in (path / "cgroup.events").read_text()
        except OSError:
            populated = False
        if not populated:
            self.killed.discard(group)  # all the kill hit is gone
        return populated

    # -- ending ----------------------------------------------------------------------------

    def kill(self, group: str) -> int:
        """SIGKILL every process in the group at once (`cgroup.kill`); how many it hit."""
        path = self.path(group)
        hit = len(self.members(group))
        if path is None or not hit:
            return 0
        try:
            (path / "cgroup.kill").write_text("1")
        except OSError as exc:
            log.warning("cannot kill the control group %s: %s", path, exc.strerror or exc)
        self.killed.add(group)
        return hit

    def left_behind(self, group: str) -> bool:
        """Whether processes are in the group that no SIGKILL of it is ending already."""
        return group not in self.killed and self.populated(group)

    def signal_each(self, group: str, main: int | None, sig: int) -> int:
        """Send `sig` once to each process of the group, as systemd's KillMode=control-group does
        (where there are no groups, or the main process runs outside its group because an older
        daemon started it: its tree). How many it reached."""
        targets = self.members(group)
        if main is not None and main not in targets:
            targets += [pid for pid in (main, *descendants(main)) if pid not in targets]
        reached = 0
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                reached += 1
        return reached

    def kill_all(self, group: str, main: int | None) -> int:
        """SIGKILL the group, and the main process's tree if it runs outside it; how many it hit."""
        inside = self.members(group)
        hit = self.kill(group)
        if main is not None and main not in inside:
            hit += signal_tree(main, signal.SIGKILL)
        return hit

    async def emptied(self, group: str, timeout: float) -> bool:
        """Wait until no process is left in the group (`cgroup.events` says `populated 0`), at most
        `timeout` seconds; True once it is empty. Woken by the kernel's notification, not polled."""
        path = self.path(group)
        if path is None:
            return True
        try:
            fd = os.open(path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.killed.discard(group)
            return True
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        # the file is always readable; a change shows as POLLPRI, which an epoll of its own
        # turns into readability of that epoll's descriptor, which the loop can wait for
        ep = select.epoll()
        try:
            ep.register(fd, select.EPOLLPRI)
            loop.add_reader(ep.fileno(), changed.set)
            try:
                async with asyncio.timeout(timeout):
                    while b"populated 1" in os.pread(fd, 4096, 0):  # reading re-arms the notification
                        changed.clear()
                        ep.poll(0)
                        await changed.wait()
                self.killed.discard(group)
                return True
            except TimeoutError:
                return False
            finally:
                loop.remove_reader(ep.fileno())
        finally:
            ep.close()
            os.close(fd)

    def remove(self, group: str) -> None:
        """Remove the group if it is empty (a group with processes stays, and says so in the log)."""
        path = self.path(group)
        if path is None:
            return
        try:
            path.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT,):
                log.warning("control group %s stays: %s", path, exc.strerror or exc)

    def close(self) -> None:
        """The daemon stops: its empty groups go, and its own once it has left it."""
        if self.base is None:
            return
        with contextlib.suppress(OSError):
            for entry in self.base.iterdir():
                if entry.is_dir() and entry.name != LEAF:
                    self.remove(entry.name)
        if self.parent is not None:
            with contextlib.suppress(OSError):
                (self.parent / "cgroup.procs").write_text("0")
        for path in (self.base / LEAF, self.base):
            with contextlib.suppress(OSError):  # the emperor is still in there: it keeps serving
                path.rmdir()
