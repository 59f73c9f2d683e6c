import pytest
from burners import burning

from support import Daemon


@pytest.fixture
def daemon(tmp_path):
    """A daemon on a private runtime dir; the test writes its manifest, then calls start()."""
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture(params=["uwsgi", "gunicorn"])
def server(request):
    """The WSGI server an API test runs its services under: every promise holds for both."""
    return request.param


@pytest.fixture(autouse=True)
def host_load(request):
    """ "quiet", or "busy" for the second run of a `busy` test: CPU burners beside it, ended after it."""
    load = getattr(request, "param", "quiet")
    if load != "busy":
        yield load
        return
    with burning():
        yield load


def pytest_generate_tests(metafunc):
    """A test marked `busy` runs on the quiet machine and again beside CPU burners (`-m busy` selects both)."""
    if metafunc.definition.get_closest_marker("busy"):
        metafunc.parametrize("host_load", ["quiet", "busy"], indirect=True)


# the fast tests of the pure parts (no process) run first: a broken lifecycle shows in seconds
FAST_FIRST = (
    "test_lifecycle.py",
    "test_supervisor.py",
    "test_render.py",
    "test_manifest.py",
    "test_totals.py",
    "test_exception_lines.py",
    "test_vassal_app.py",
    "test_logs_unit.py",
    "test_cli.py",
    "test_config.py",
    "test_protocol.py",
    "test_top_view.py",
)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: 0 if item.path.name in FAST_FIRST else 1)
