"""The daemon's settings, from its command line (light: read before the heavy imports)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Config:
    conf_dir: Path
    runtime_dir: Path
    socket_gid: int | None = None
    socket_mode: int = 0o660
    control_gid: int | None = None
    control_mode: int = 0o660
    log_dir: Path | None = None
    journal: bool | None = None  # None: when journald is there
    metrics_listen: str | None = "127.0.0.1:9180"
    sample_interval: float = 5.0
    units: bool = True  # under systemd, mirror each service into its wsgi@NAME unit
    default_venv: Path = field(default_factory=lambda: Path(sys.prefix))
