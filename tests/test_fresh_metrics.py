"""Metrics are fresh at scrape time, and a scrape never waits on a vassal that does not answer."""

import asyncio
import os
import signal
import time
from types import SimpleNamespace

import pytest
from test_metrics import scrape, value

from supervisor.observe.cgroups import ServiceGroups
from supervisor.observe.sampler import Sampler
from support import APPS, metrics_daemon, uwsgi_request

MANIFEST = f"""
[services.api]
kind = "api"
app = "{APPS / "stuck.py"}"
processes = 1

[services.other]
kind = "api"
app = "{APPS / "stuck.py"}"
processes = 1
"""


@pytest.fixture
def slow_sampler(tmp_path, server):
    """Both APIs under `server`, sampled in the background only every 30 s."""
    with metrics_daemon(tmp_path, MANIFEST, server, sample_interval=30) as d:
        yield d


def test_a_request_just_before_a_scrape_is_counted_in_it(slow_sampler):
    before = value(scrape(slow_sampler.metrics_url), "wsgi_requests_total", service="api") or 0
    time.sleep(1.1)  # past what a scrape takes as fresh: the next one samples again
    for _ in range(3):
        assert uwsgi_request(slow_sampler.socket("api"), "/")[0] == 200
    text = scrape(slow_sampler.metrics_url)
    assert value(text, "wsgi_requests_total", service="api") == before + 3
    assert value(text, "wsgi_metrics_sample_age_seconds", service="api") is not None


@pytest.mark.parametrize("server", ["uwsgi"])  # a gunicorn arbiter's figures come from a file: it cannot stall them
def test_a_scrape_answers_while_a_vassal_does_not(slow_sampler):
    assert uwsgi_request(slow_sampler.socket("api"), "/")[0] == 200
    time.sleep(1.1)
    assert value(scrape(slow_sampler.metrics_url), "wsgi_requests_total", service="api") == 1
    master = slow_sampler.status("api")["api"]["pid"]
    os.kill(master, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # let the last sample grow older than a scrape accepts
        text = scrape(slow_sampler.metrics_url)  # answers, with the last figures
        assert value(text, "wsgi_requests_total", service="api") >= 1
        stale = value(text, "wsgi_metrics_sample_age_seconds", service="api")
        fresh = value(text, "wsgi_metrics_sample_age_seconds", service="other")
        assert stale is not None and stale > 1, text
        assert fresh is not None and fresh < stale
    finally:
        os.kill(master, signal.SIGCONT)
    assert uwsgi_request(slow_sampler.socket("api"), "/")[0] == 200


def test_concurrent_scrapes_share_one_sample():
    """Two scrapes while a source is slow start one sample between them, and neither waits it out."""

    class NoSockets:
        def inodes(self):
            return {}

    context = SimpleNamespace(
        services=lambda: [], config=SimpleNamespace(sample_interval=30.0), groups=ServiceGroups.unavailable("test")
    )
    sampler = Sampler(context, lambda: None, NoSockets())
    started = []
    release = None

    async def slow_source():
        started.append(1)
        await release.wait()

    async def scrapes():
        nonlocal release
        release = asyncio.Event()
        sampler.sources.append(slow_source)
        await asyncio.gather(sampler.fresh(), sampler.fresh())
        assert len(started) == 1 and not sampler.sample().done()  # both gave up waiting; one still runs
        release.set()
        await sampler.sample()
        assert sampler.sampled_at is not None

    asyncio.run(scrapes())
