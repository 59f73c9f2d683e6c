"""wsgictl's command line: where its options go, and what its help says."""

import subprocess

import pytest

from supervisor.cli.commands import build_parser
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


REQUIRED = {"proxy-config": ["apache"], "import": ["f"], "serve": ["n"], "supervise": ["n"], "stack": ["n"]}


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
