"""wsgictl's shell completion, run by a real bash against a real daemon: commands, options, service names."""

import shlex
import subprocess

from support import BIN, ROOT, write_manifest

BASH_COMPLETION = ROOT / "completion" / "wsgictl"


def tab(words: list[str], daemon) -> list[str]:
    """What bash offers for the last of `words` (the word being typed), as its completion function leaves it."""
    script = (
        f"source {shlex.quote(str(BASH_COMPLETION))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_wsgictl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "WSGI_RUNTIME_DIR": str(daemon.runtime_dir),
        "WSGI_CONF_DIR": str(daemon.conf_dir),
    }
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_the_running_daemons_services(daemon):
    services = '[services.{}]\nkind = "worker"\ncommand = ["sleep", "60"]\nenabled = false\n'
    write_manifest(daemon.conf_dir, services.format("keystone") + "\n" + services.format("nova-conductor"))
    daemon.start()

    assert tab(["wsgictl", "st"], daemon) == ["status", "stack", "start", "stop"]
    assert "complete" not in tab(["wsgictl", ""], daemon)  # the shells' helper is no command of the operator's
    assert tab(["wsgictl", "proxy-config", ""], daemon) == ["apache", "nginx"]
    assert tab(["wsgictl", "units", ""], daemon) == ["install"]
    assert tab(["wsgictl", "restart", "--d"], daemon) == ["--drain"]
    logs_options = tab(["wsgictl", "logs", "-"], daemon)
    assert "--follow" in logs_options and "--drain" not in logs_options

    # a service the manifest gains on disk is no service of the daemon's until it reads the manifest again
    write_manifest(daemon.conf_dir, services.format("glance"), name="glance.toml")
    assert tab(["wsgictl", "restart", ""], daemon) == ["keystone", "nova-conductor"]
    assert tab(["wsgictl", "restart", "keystone", ""], daemon) == ["nova-conductor"]  # not twice
    assert tab(["wsgictl", "status", "n"], daemon) == ["nova-conductor"]
    assert tab(["wsgictl", "stack", "keystone", ""], daemon) == []  # one NAME only: then files, as bash does
    daemon.ctl("reload-config")
    assert tab(["wsgictl", "start", ""], daemon) == ["glance", "keystone", "nova-conductor"]

    # no daemon: the manifest's names
    daemon.stop()
    write_manifest(daemon.conf_dir, services.format("placement"), name="placement.toml")
    assert tab(["wsgictl", "start", ""], daemon) == ["glance", "keystone", "nova-conductor", "placement"]
    # the conf dir typed on the line counts, not only the environment's
    other = daemon.conf_dir.parent / "other.d"
    write_manifest(other, services.format("barbican"))
    assert tab(["wsgictl", "--conf-dir", str(other), "start", ""], daemon) == ["barbican"]


def test_zsh_completion_asks_the_same_helper():
    """zsh is not installed here: its script is checked for calling what bash's calls."""
    zsh = (ROOT / "completion" / "_wsgictl").read_text()
    assert zsh.startswith("#compdef wsgictl\n")
    assert 'complete $((CURRENT - 1)) -- "${words[@]}"' in zsh
