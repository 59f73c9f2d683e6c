"""The operator's documentation: docs/ builds without a warning, its reference tables are the code's,
the man pages are what the parsers write, a wheel carries them with the units and the completion,
and README is a front page whose links lead into docs/."""

import re
import subprocess
import sys
import zipfile

import pytest

from supervisor import config
from supervisor.manifest.models import ApiService, WorkerService
from support import ROOT

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import manpages
import reference


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0 and not built.stderr, built.stderr
    return out


def test_the_docs_build_without_a_warning_and_the_index_reaches_every_page(html):
    index = (html / "index.html").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.stem != "index":
            assert f'href="{page.stem}.html"' in index, page.name


def test_the_daemon_options_in_the_docs_are_the_declaration(html):
    page = (html / "daemon.html").read_text()
    for field, option in config.options():
        assert f"{option.flag}" in page, option.flag
        shown = config.shown_default(field, option)
        if shown is not None:
            assert shown in page
    assert config.options_table().splitlines()[2].split("|")[1].strip(" `").startswith("--conf-dir")


def test_every_manifest_key_is_in_the_docs_with_its_default(html):
    page = (html / "manifest.html").read_text()
    for model in (ApiService, WorkerService):
        for key in model.model_fields:
            assert f'<code class="docutils literal notranslate"><span class="pre">{key}</span></code>' in page, key
    row = next(line for line in reference.manifest_keys().splitlines() if line.startswith("| `processes`"))
    assert "`2`" in row and "≥ 1, ≤ 512" in row and "| api |" in row


def test_every_wsgictl_command_is_in_the_docs(html):
    page = (html / "wsgictl.html").read_text()
    listed = [name for name, *_ in reference.commands()]
    assert "status" in listed and "units install" in listed and "complete" not in listed
    for name in listed:
        assert f"wsgictl {name}" in page, name


def test_the_man_pages_are_what_the_parsers_write_and_groff_reads_them_cleanly():
    for relative, make in manpages.PAGES.items():
        path = ROOT / "man" / relative
        assert path.read_text() == make(), f"{path} is stale: run `make man`"
        checked = subprocess.run(["groff", "-man", "-ww", "-z", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    wsgictl = (ROOT / "man/man1/wsgictl.1").read_text()
    for name, *_ in reference.commands():
        assert f".SS {manpages.text(name)}\n" in wsgictl
    daemon = (ROOT / "man/man8/wsgi-supervisor.8").read_text()
    for _, option in config.options():
        assert "\\fB" + manpages.text(option.flag) in daemon


def test_a_wheel_carries_the_man_pages_the_units_and_the_completion(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("wsgi_supervisor-*.whl")
    data = "wsgi_supervisor-0.1.0.data/data/share/"
    carried = {
        "man/man1/wsgictl.1": ROOT / "man/man1/wsgictl.1",
        "man/man8/wsgi-supervisor.8": ROOT / "man/man8/wsgi-supervisor.8",
        "wsgi-supervisor/units/wsgi-supervisor.service": ROOT / "units/wsgi-supervisor.service",
        "wsgi-supervisor/units/wsgi@.service": ROOT / "units/wsgi@.service",
        "bash-completion/completions/wsgictl": ROOT / "completion/wsgictl",
        "zsh/site-functions/_wsgictl": ROOT / "completion/_wsgictl",
    }
    with zipfile.ZipFile(wheel) as archive:
        for inside, source in carried.items():
            assert archive.read(data + inside) == source.read_bytes(), inside

    # installed into a venv of its own (pip --python: never into the one running the tests, whose
    # editable install an install with --prefix would remove), `man` finds the page through MANPATH
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    found = subprocess.run(
        ["man", "-w", "wsgictl"], capture_output=True, text=True, env={"MANPATH": str(venv / "share/man")}
    )
    assert found.stdout.strip() == str(venv / "share/man/man1/wsgictl.1"), found.stderr
    assert (venv / "share/wsgi-supervisor/units/wsgi@.service").exists()
    assert (venv / "share/bash-completion/completions/wsgictl").exists()


def test_readme_is_a_front_page_whose_links_lead_into_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which is not there"
