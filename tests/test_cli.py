"""wsgictl's command line: where its options go, and what its help says."""

import subprocess
from argparse import Namespace

import pytest

from supervisor.cli.commands import build_parser
from supervisor.cli.supervise import _describe_state
from supervisor.cli.talk import cmd_logs, cmd_stack, cmd_status
from supervisor.layout import DEFAULT_CONF_DIR, DEFAULT_RUNTIME_DIR
from support import WSGICTL, write_manifest


def subcommands(parser=None, prefix=()):
    """Every command line that names a (sub)command, e.g. ("units", "install")."""
    import argparse

    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = list(subcommands(sub, (*prefix, name)))
                yield from nested or [(*prefix, name)]


REQUIRED = {
    "proxy-config": ["apache"],
    "import": ["f"],
    "serve": ["n"],
    "supervise": ["n"],
    "stack": ["n"],
    "complete": ["1"],
}


@pytest.mark.parametrize("command", list(subcommands()), ids=" ".join)
def test_paths_go_before_or_after_every_subcommand(command, monkeypatch):
    monkeypatch.delenv("WSGI_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("WSGI_CONF_DIR", raising=False)
    rest = REQUIRED.get(command[0], [])
    parse = build_parser().parse_args
    defaults = parse([*command, *rest])
    assert (defaults.runtime_dir, defaults.conf_dir) == (DEFAULT_RUNTIME_DIR, DEFAULT_CONF_DIR)
    before = parse(["--runtime-dir", "/r", "--conf-dir", "/c", *command, *rest])
    after = parse([*command, *rest, "--runtime-dir", "/r", "--conf-dir", "/c"])
    mixed = parse(["--runtime-dir", "/r", *command, "--conf-dir", "/c", *rest])
    for args in (before, after, mixed):
        assert (str(args.runtime_dir), str(args.conf_dir)) == ("/r", "/c")
    # given in both places, the later one counts
    assert str(parse(["--conf-dir", "/a", *command, *rest, "--conf-dir", "/b"]).conf_dir) == "/b"


def test_the_environment_sets_the_defaults(monkeypatch):
    monkeypatch.setenv("WSGI_RUNTIME_DIR", "/env/run")
    monkeypatch.setenv("WSGI_CONF_DIR", "/env/conf")
    args = build_parser().parse_args(["status"])
    assert (str(args.runtime_dir), str(args.conf_dir)) == ("/env/run", "/env/conf")
    assert str(build_parser().parse_args(["status", "--conf-dir", "/c"]).conf_dir) == "/c"


def test_proxy_config_and_serve_take_conf_dir_after_the_command(tmp_path, server):
    conf = tmp_path / "conf.d"
    write_manifest(conf, '[services.api]\nkind = "api"\napp = "x:application"\nmount = "/x"\n', server=server)

    def wsgictl(*args):
        return subprocess.run([str(WSGICTL), *args], capture_output=True, text=True, timeout=30)

    proxied = wsgictl("proxy-config", "apache", "--conf-dir", str(conf), "--runtime-dir", str(tmp_path))
    assert proxied.returncode == 0, proxied.stderr
    assert f"{tmp_path}/api.sock" in proxied.stdout and "/x" in proxied.stdout
    unknown = wsgictl("serve", "nope", "--conf-dir", str(conf), "--runtime-dir", str(tmp_path))
    assert unknown.returncode == 4 and "unknown service: nope" in unknown.stderr


def test_help_shows_the_paths_and_their_defaults():
    text = build_parser().format_help()
    assert "--runtime-dir DIR" in text and str(DEFAULT_RUNTIME_DIR) in text
    assert "--conf-dir DIR" in text and str(DEFAULT_CONF_DIR) in text
    assert "before or after the command" in text


def test_reload_help_says_what_reload_does():
    out = subprocess.run([str(WSGICTL), "reload", "--help"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "one by one" not in flat
    assert "second vassal" in flat and "retires the old one once the new one serves" in flat
    assert "reload_signal" in flat


# -- text a service chose is printed with its control characters visible --------------------------

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\u202e"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x7f\\u202e"


class ScriptedClient:
    """Answers as the daemon would, from a list of replies."""

    def __init__(self, *replies):
        self.replies = list(replies)

    def request(self, message, timeout=None):
        return self.replies.pop(0)

    def receive(self):
        return self.replies.pop(0)


def _service(**fields):
    return {"name": "w", "kind": "worker", "state": "running", "pid": 7, "restarts": 0, "ready": True, **fields}


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]


def test_status_prints_a_services_control_characters_as_text(capsys):
    service = _service(status_text="up " + ESCAPES + "\nREADY=1", last_lines=["a\tb " + ESCAPES])
    for names in ([], ["w"]):
        client = ScriptedClient({"ok": True, "services": [service]})
        cmd_status(client, Namespace(names=names, json=False))
        out = capsys.readouterr().out
        assert not _raw_controls(out), repr(out)
        assert "up " + SHOWN + "\\nREADY=1" in out
    assert "a\tb " + SHOWN in out  # a log line keeps its own tab


def test_logs_keep_a_lines_tabs_and_show_its_other_control_characters(capsys):
    line = {"ts": 0.0, "service": "w", "text": "GET /x\t" + ESCAPES}
    client = ScriptedClient(line, {"end": True})
    cmd_logs(client, Namespace(names=["w"], lines=1, follow=False, verbose=False))
    out = capsys.readouterr().out
    assert not _raw_controls(out), repr(out)
    assert "GET /x\t" + SHOWN in out


def test_stack_shows_process_titles_and_stacks_as_text(capsys):
    processes = [
        {"pid": 7, "label": "process (pid 7): " + ESCAPES, "ok": True, "stack": "Thread 7\n\tf (" + ESCAPES + ")"},
        {"pid": 8, "label": "process (pid 8)", "ok": False, "error": "pid 8: " + ESCAPES},
    ]
    cmd_stack(ScriptedClient({"ok": True, "processes": processes}), Namespace(name="w"))
    out = capsys.readouterr().out
    assert not _raw_controls(out), repr(out)
    assert "--- w process (pid 7): " + SHOWN in out and "\tf (" + SHOWN + ")" in out


def test_the_units_status_line_is_one_line_whatever_the_service_says():
    said = _describe_state(_service(status_text="ok\nREADY=1\nSTATUS=" + ESCAPES))
    assert "\n" not in said and not _raw_controls(said)
    assert said.endswith("ok\\nREADY=1\\nSTATUS=" + SHOWN)
