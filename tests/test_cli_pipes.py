"""wsgictl's output into a pipe that closes early (`| head`) ends quietly, as systemctl's does."""

import subprocess

from support import APPS, WSGICTL


def test_status_into_head_exits_quietly(daemon):
    manifest = "".join(
        f'[services.api{i}]\nkind = "api"\napp = "{APPS / "probe.py"}"\nenabled = false\n\n' for i in range(150)
    )
    (daemon.conf_dir).mkdir(parents=True, exist_ok=True)
    (daemon.conf_dir / "services.toml").write_text(manifest)
    daemon.start()
    size = len(daemon.ctl("status", "--json", check=False).stdout)
    assert size > 64 * 1024, size  # more than a pipe holds: wsgictl is still writing when head leaves
    piped = subprocess.run(
        f"{WSGICTL} --runtime-dir {daemon.runtime_dir} status --json | head -c 100 >/dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stderr == "", piped.stderr
    assert piped.stdout.strip() == "0"
