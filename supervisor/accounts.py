"""Whom a service's processes run as: its `user` and `group` looked up on this host.

One lookup for every server and for workers, so that a uWSGI master, a gunicorn arbiter and a worker
of the same manifest get the same uid, primary group and supplementary groups. The supplementary
groups are those `initgroups(3)` gives the user with the chosen primary group, as systemd does for
`User=` with `Group=`.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Identity:
    """A service's account; `name` is None when only a group is given (the uid stays the daemon's)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None
    home: str | None


def _user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"the user {user!r} does not exist on this host") from None


def _group(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"the group {group!r} does not exist on this host") from None


def identity(user: str | None, group: str | None) -> Identity | None:
    """The account of a service that names a user or a group (None: it runs as the daemon).

    ValueError names a user or group that is not on this host (it may have gone since the check)."""
    if not user and not group:
        return None
    if not user:
        assert group
        return Identity(os.geteuid(), _group(group), (), None, None)
    account = _user(user)
    gid = _group(group) if group else account.pw_gid
    groups = tuple(os.getgrouplist(account.pw_name, gid))
    return Identity(account.pw_uid, gid, groups, account.pw_name, account.pw_dir)


def popen_credentials(who: Identity | None) -> dict[str, Any]:
    """subprocess's `user=`, `group=`, `extra_groups=` that make a child `who` ({} to stay the daemon)."""
    if who is None:
        return {}
    if who.name is not None and os.geteuid() != 0 and who.uid == os.geteuid():
        return {}  # a daemon run by the service's own user: nothing to drop, and no right to set groups
    creds: dict[str, Any] = {"group": who.gid}
    if who.name is not None:
        creds["user"] = who.uid
        creds["extra_groups"] = list(who.groups)
    return creds


def tree_uid(user: str | None) -> int | None:
    """The uid every process of a service's tree runs as (None: its user is gone from this host)."""
    if not user:
        return os.getuid()
    if user.isdigit():
        return int(user)
    try:
        return _user(user).pw_uid
    except ValueError:
        return None
