"""Writing the daemon's own files under the runtime dir."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600, mtime: int | None = None) -> None:
    """Replace `path` whole: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        # no fsync: the runtime dir is rebuilt at every boot (tmpfs under /run);
        # the rename is what keeps a reader from seeing half a file
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
