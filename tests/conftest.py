import pytest

from support import Daemon


@pytest.fixture
def daemon(tmp_path):
    """A daemon on a private runtime dir; the test writes its manifest, then calls start()."""
    d = Daemon(tmp_path)
    yield d
    d.stop()
