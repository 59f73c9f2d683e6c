"""wsgictl's shell completion, run by a real bash and a real zsh against a real daemon: commands, options, service
names."""

import shlex
import subprocess
from pathlib import Path

from support import BIN, ROOT, write_manifest

BASH_COMPLETION = ROOT / "completion" / "wsgictl"

# Sourced by the interactive zsh that zsh_tab() types into: zsh's completion system, with completion/ first in fpath
# (its `#compdef wsgictl` line ties _wsgictl to the command), and Tab bound to a widget that runs zsh's own
# _main_complete and records what it offered.
ZSH_SETUP = r"""
PS1='> '
fpath=({completion} $fpath)
autoload -U compinit && compinit -u -D
typeset -ga offered
# every match zsh accepts: `compadd -O` matches the words against what is typed, as zsh would, without adding them;
# the calls that already ask for that (-O, -A, -D: the helpers' own filtering) pass through untouched
compadd() {{
    local arg
    for arg in "$@"; do
        [[ $arg == (-|--) ]] && break
        if [[ $arg == -[[:alpha:]]#[OAD]* ]]; then builtin compadd "$@"; return; fi
    done
    local -a matched
    builtin compadd -O matched "$@"
    offered+=("${{matched[@]}}")
    builtin compadd "$@"
}}
record-completion() {{
    offered=()
    _main_complete 2>>{errors}
    local ret=$?
    print -rl -- "${{offered[@]}}" >| {offered}
    print -r -- "${{(U):-completed}}"  # typed as shown, it cannot be mistaken for the echo of this line
    return ret
}}
zle -C record-completion complete-word record-completion
bindkey '^I' record-completion
"""

# The outer, non-interactive zsh: it opens the interactive one on a pseudo-terminal, types the line and a Tab, and
# waits until the widget says it is done.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty typist zsh -f -i
zpty -w typist "source ${(q)1}"
zpty -w -n typist "$2"$'\t'
zpty -r typist transcript '*COMPLETED*'
zpty -d typist
"""


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
        "HOME": str(daemon.conf_dir.parent),
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
    # `--conf-dir=DIR` as bash hands it over: split at the `=` (COMP_WORDBREAKS)
    assert tab(["wsgictl", "--conf-dir", "=", str(other), "start", ""], daemon) == ["barbican"]
    assert tab(["wsgictl", "--conf-dir", "~/other.d", "start", ""], daemon) == ["barbican"]  # `~` as typed


def zsh_tab(line: str, daemon, tmp: Path) -> list[str]:
    """What zsh offers at the end of `line` when Tab is pressed there, as a user at a terminal would see it listed.

    zsh completes only inside its line editor, in an interactive shell on a terminal, and only through compsys's
    machinery (_main_complete, _dispatch to the function a `#compdef` line names), so calling _wsgictl by hand with
    `words` and `CURRENT` set would prove little. Instead a plain `zsh -f` opens an interactive `zsh -f -i` on a
    pseudo-terminal (the zpty module), which loads compinit with the repository's completion/ in its fpath; then it
    types the line and a Tab, bound to a completion widget that runs zsh's own _main_complete and records every match
    compadd accepted (`compadd -O`: zsh's own matching against the typed prefix), so file names offered by the
    fallback count too. The widget then prints a word the outer shell waits for. Whatever the completion writes to
    stderr is kept, and must be nothing. The interactive shell ends with its terminal (`zpty -d`, or SIGHUP when the
    outer one is killed on a timeout). The matches come back sorted and once each, as zsh lists them.

    The shell's home is tmp/home, its working directory tmp/work (whose files a fallback offers).
    """
    harness = tmp / "zsh"
    for directory in (harness, tmp / "home", tmp / "work"):
        directory.mkdir(exist_ok=True)
    setup, offered, errors = harness / "setup.zsh", harness / "offered", harness / "errors"
    setup.write_text(
        ZSH_SETUP.format(
            completion=shlex.quote(str(ROOT / "completion")),
            errors=shlex.quote(str(errors)),
            offered=shlex.quote(str(offered)),
        )
    )
    offered.unlink(missing_ok=True)
    errors.write_text("")
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp / "home"),
        "TERM": "dumb",
        "WSGI_RUNTIME_DIR": str(daemon.runtime_dir),
        "WSGI_CONF_DIR": str(daemon.conf_dir),
    }
    result = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(setup), line],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp / "work",
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert errors.read_text() == ""
    return sorted({match for match in offered.read_text().splitlines() if match})


def test_zsh_completes_commands_options_and_the_running_daemons_services(daemon, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("")  # what zsh's fallback, file names, offers
    services = '[services.{}]\nkind = "worker"\ncommand = ["sleep", "60"]\nenabled = false\n'
    write_manifest(daemon.conf_dir, services.format("keystone") + "\n" + services.format("nova-conductor"))
    daemon.start()

    def offered(line: str) -> list[str]:
        return zsh_tab(line, daemon, tmp_path)

    assert offered("wsgictl st") == ["stack", "start", "status", "stop"]
    commands = offered("wsgictl ")
    assert "restart" in commands and "proxy-config" in commands
    assert "complete" not in commands  # the shells' helper is no command of the operator's
    assert offered("wsgictl proxy-config ") == ["apache", "nginx"]
    assert offered("wsgictl units ") == ["install"]
    assert offered("wsgictl restart --d") == ["--drain"]
    logs_options = offered("wsgictl logs -")
    assert "--follow" in logs_options and "--drain" not in logs_options

    # a service the manifest gains on disk is no service of the daemon's until it reads the manifest again
    write_manifest(daemon.conf_dir, services.format("glance"), name="glance.toml")
    assert offered("wsgictl restart ") == ["keystone", "nova-conductor"]
    assert offered("wsgictl restart keystone ") == ["nova-conductor"]  # not twice
    assert offered("wsgictl status n") == ["nova-conductor"]
    assert offered("wsgictl stack keystone ") == ["notes.txt"]  # one NAME only: then the files, zsh's fallback
    daemon.ctl("reload-config")
    assert offered("wsgictl start ") == ["glance", "keystone", "nova-conductor"]

    # no daemon: the manifest's names
    daemon.stop()
    write_manifest(daemon.conf_dir, services.format("placement"), name="placement.toml")
    assert offered("wsgictl start ") == ["glance", "keystone", "nova-conductor", "placement"]
    # the conf dir typed on the line counts, not only the environment's
    other = tmp_path / "home" / "other.d"
    write_manifest(other, services.format("barbican"))
    assert offered(f"wsgictl --conf-dir {other} start ") == ["barbican"]


def test_zsh_asks_with_the_words_wsgictl_would_be_given(daemon, tmp_path):
    """zsh's $words are the line as typed: quotes, a `~`; wsgictl must be asked about the words it would run with."""
    services = '[services.{}]\nkind = "worker"\ncommand = ["sleep", "60"]\nenabled = false\n'
    conf = tmp_path / "home" / "my conf.d"
    write_manifest(conf, services.format("barbican"))
    write_manifest(tmp_path / "home" / "other.d", services.format("cinder"))
    (tmp_path / "home" / "bin").mkdir()
    (tmp_path / "home" / "bin" / "wsgictl").symlink_to(BIN / "wsgictl")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("")

    def offered(line: str) -> list[str]:
        return zsh_tab(line, daemon, tmp_path)

    assert offered(f"wsgictl --conf-dir '{conf}' start ") == ["barbican"]
    assert offered(f'wsgictl --conf-dir "{conf}" start ') == ["barbican"]
    assert offered(f"wsgictl --conf-dir {str(conf).replace(' ', chr(92) + ' ')} start ") == ["barbican"]
    assert offered("wsgictl --conf-dir ~/other.d start ") == ["cinder"]
    assert offered("wsgictl --conf-dir ~/other.d start 'ci") == ["cinder"]  # a name begun in quotes
    assert offered('wsgictl --conf-dir ~/other.d start "ci') == ["cinder"]
    assert offered(f"~/bin/wsgictl --conf-dir {tmp_path}/home/other.d restart ") == ["cinder"]  # wsgictl by its path
    assert offered("wsgictl --conf-dir=") == ["notes.txt"]  # the value's files, after the `=`
    assert offered(f"wsgictl start --conf-dir='{conf}' ") == ["barbican"]  # --option=VALUE, one word
    assert offered("wsgictl --conf-dir=~/other.d start ") == ["cinder"]  # `~` after the `=` is the home too
