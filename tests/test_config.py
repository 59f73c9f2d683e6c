"""Each daemon setting is declared once (config.py); the command line, Config and the docs' table come from it
(tests/test_docs.py checks the table and the man page)."""

import inspect
import os
import types
from pathlib import Path

from supervisor import config
from supervisor.config import DEFAULT_PATH, Config
from supervisor.layout import Layout
from supervisor.main import parse_args
from supervisor.manifest.loading import load
from supervisor.manifest.models import ManifestError, worker_path
from supervisor.uwsgi import launcher
from support import ROOT, write_manifest


def settings(*argv):
    return config.from_arguments(parse_args(list(argv)))


def test_no_arguments_give_the_declared_defaults():
    assert settings() == Config()
    assert Config().metrics_listen == "127.0.0.1:9180" and Config().sample_interval == 5.0


def test_every_option_reaches_config():
    got = settings(
        "--conf-dir", "/c", "--runtime-dir", "/r", "--socket-group", "0", "--control-group", "",
        "--log-dir", "/l", "--log-max-bytes", "4096", "--log-keep", "2", "--journal", "no",
        "--quiet", "--metrics-listen", "", "--sample-interval", "0.5", "--no-units",
    )  # fmt: skip
    assert got == Config(
        conf_dir=Path("/c"),
        runtime_dir=Path("/r"),
        socket_gid=0,
        control_gid=None,
        log_dir=Path("/l"),
        log_max_bytes=4096,
        log_keep=2,
        journal=False,
        quiet=True,
        metrics_listen=None,
        sample_interval=0.5,
        units=False,
    )
    assert settings("--journal", "yes").journal is True and settings("--journal", "auto").journal is None


def test_defaults_are_written_once():
    """No other module of the daemon repeats a default of config.py."""
    for path in (ROOT / "supervisor").glob("*.py"):
        if path.name in ("config.py", "launcher.py"):
            continue
        text = path.read_text()
        assert "9180" not in text, path
        assert DEFAULT_PATH not in text and "/usr/bin:/bin" not in text, path
        if path.name != "cli.py":  # wsgictl has a --conf-dir and a --runtime-dir of its own
            for _, option in config.options():
                assert f'"{option.flag}"' not in text, (path, option.flag)
    from supervisor.logs.pipeline import FileSink

    parameters = inspect.signature(FileSink).parameters
    assert parameters["max_bytes"].default is parameters["keep"].default is inspect.Parameter.empty


def test_one_default_path_for_workers_check_and_launcher(tmp_path, monkeypatch):
    assert launcher.DEFAULT_PATH == DEFAULT_PATH  # launcher.py imports nothing of ours: a copy, kept equal
    # a command on the caller's PATH only: the worker would not find it, so neither does check
    mine = tmp_path / "bin"
    mine.mkdir()
    (mine / "only-here").write_text("#!/bin/sh\n")
    (mine / "only-here").chmod(0o755)
    monkeypatch.setenv("PATH", f"{mine}:{os.environ['PATH']}")
    conf = tmp_path / "conf.d"
    write_manifest(conf, '[services.w]\nkind = "worker"\ncommand = ["only-here"]\n')
    try:
        load(conf)
        raise AssertionError("check found a program that the worker would not")
    except ManifestError as exc:
        assert f"program 'only-here' is not on the PATH ({DEFAULT_PATH})" in str(exc)
    # on the worker's PATH (its environment's, or its venv's bin/) it is found
    write_manifest(
        conf, f'[services.w]\nkind = "worker"\ncommand = ["only-here"]\nenvironment = {{ PATH = "{mine}" }}\n'
    )
    spec = load(conf).services["w"]
    assert worker_path(spec) == str(mine)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to("/usr/bin/python3")
    (mine / "only-here").rename(venv / "bin" / "only-here")
    write_manifest(conf, f'[services.w]\nkind = "worker"\ncommand = ["only-here"]\nvenv = "{venv}"\n')
    spec = load(conf).services["w"]
    assert worker_path(spec) == f"{venv}/bin:{DEFAULT_PATH}"

    # and the worker runs with that very PATH
    from supervisor.workers.driver import ProcessDriver

    driver = ProcessDriver.__new__(ProcessDriver)
    driver.layout = Layout(tmp_path)
    env = driver._environment(types.SimpleNamespace(spec=spec, name="w"))
    assert env["PATH"] == worker_path(spec)
