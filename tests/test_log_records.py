"""A warning or a traceback is one entry at its level, in the files and in `wsgictl logs`, under either server."""

from support import APPS, Daemon, write_manifest


def test_a_warning_at_import_is_one_entry_at_warning(tmp_path, server):
    logs = tmp_path / "logs"
    d = Daemon(tmp_path, extra_args=["--log-dir", str(logs), "--journal", "no"])
    app = APPS / "warns.py"
    write_manifest(d.conf_dir, f'[services.warns]\nkind = "api"\napp = "{app}"\nprocesses = 1\n', server=server)
    d.start()
    try:
        d.ctl("start", "warns", "--timeout", "60")
        d.wait_for(lambda s: "warns imported" in d.ctl("logs", "warns", "-n", "200").stdout, what="the import line")
        shown = d.ctl("logs", "warns", "-n", "200").stdout.splitlines()
    finally:
        d.stop()
    # one entry: its first line carries the time and the name, the others are indented under it
    heads = [line for line in shown if line[:1].isdigit()]
    (warning,) = [line for line in heads if "FutureWarning" in line]
    after = shown[shown.index(warning) + 1 : shown.index(warning) + 7]
    assert all(line[:1] == " " for line in after), shown
    assert any("Migrate to another one;" in line for line in after)
    assert any(line.rstrip().endswith("warnings.warn(MESSAGE, FutureWarning, stacklevel=1)") for line in after)
    entries = (logs / "warns.log").read_text().split("\n2026-")
    (in_file,) = [e for e in entries if "FutureWarning" in e]
    assert " warns output WARNING " in in_file.split("\n", 1)[0]
    assert "\n    Migrate to another one;" in in_file and in_file.rstrip().endswith("stacklevel=1)")
