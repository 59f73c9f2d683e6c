"""Writes wsgi-supervisor.json: a Grafana dashboard on the daemon's metric names.

One row per service (a repeated row over the `service` variable): state,
request rate, errors, queue depth, memory, restarts; below them the latency
(a heatmap of the request duration histogram, and p50/p99) and the share of
5xx responses. Run it again after changing a panel:
`python contrib/grafana/make_dashboard.py` (tests/test_alerts.py checks that
the JSON is what this writes).
"""

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance",service="$service"'


def panel(pid, title, kind, exprs, x, unit="short", legend="{{service}}", width=4, extra=None, y=1):
    p = {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"h": 6, "w": width, "x": x, "y": y},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": e, "legendFormat": lg, "datasource": DATASOURCE}
            for i, (e, lg) in enumerate(exprs if isinstance(exprs[0], tuple) else [(e, legend) for e in exprs])
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if extra:
        p.update(extra)
    return p


STATES = ["starting", "running", "reloading", "stopping", "stopped", "backoff", "failed"]
COLOURS = {
    "running": "green",
    "starting": "blue",
    "reloading": "blue",
    "stopping": "orange",
    "stopped": "grey",
    "backoff": "orange",
    "failed": "red",
}

state_panel = panel(
    2,
    "State",
    "stat",
    [(f"max by (state) (wsgi_service_state{{{SEL}}} == 1)", "{{state}}")],
    0,
    extra={
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "name", "colorMode": "background"},
        "fieldConfig": {
            "defaults": {"unit": "none", "color": {"mode": "fixed"}},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": s},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
                }
                for s, c in COLOURS.items()
            ],
        },
    },
)
BUCKETS = f"wsgi_request_duration_seconds_bucket{{{SEL}}}"


def quantile(q):
    return f"histogram_quantile({q}, sum by (le) (rate({BUCKETS}[$__rate_interval])))"


latency_heatmap = panel(
    8,
    "Latency",
    "heatmap",
    [(f"sum by (le) (increase({BUCKETS}[$__rate_interval]))", "{{le}}")],
    0,
    "s",
    width=8,
    y=7,
    extra={
        "options": {
            "calculate": False,
            "yAxis": {"unit": "s"},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "cellGap": 1,
            "tooltip": {"show": True, "yHistogram": True},
        },
    },
)
latency_heatmap["targets"][0]["format"] = "heatmap"  # one series per bucket, as Grafana draws them

panels = [
    {
        "id": 1,
        "type": "row",
        "title": "$service",
        "repeat": "service",
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "panels": [],
    },
    state_panel,
    panel(3, "Requests / s", "timeseries", [f"sum(rate(wsgi_requests_total{{{SEL}}}[$__rate_interval]))"], 4, "reqps"),
    panel(
        4,
        "Errors / s",
        "timeseries",
        [
            (f"sum(rate(wsgi_exceptions_total{{{SEL}}}[$__rate_interval]))", "exceptions"),
            (f"sum(rate(wsgi_harakiri_total{{{SEL}}}[$__rate_interval]))", "harakiri"),
        ],
        8,
        "reqps",
    ),
    panel(
        5,
        "Queue depth",
        "timeseries",
        [
            (f"max(wsgi_listen_queue_length{{{SEL}}})", "waiting"),
            (f'sum(wsgi_workers{{{SEL},status="busy"}})', "busy workers"),
        ],
        12,
    ),
    panel(
        6,
        "Memory (PSS; USS: its processes' own)",
        "timeseries",
        [
            (f'sum(wsgi_service_memory_bytes{{{SEL},type="pss"}})', "PSS"),
            (f'sum(wsgi_service_memory_bytes{{{SEL},type="uss"}})', "USS"),
        ],
        16,
        "bytes",
    ),
    panel(7, "Restarts (1h)", "stat", [f"sum(increase(wsgi_service_restarts_total{{{SEL}}}[1h]))"], 20),
    latency_heatmap,
    panel(
        9,
        "Latency p50 / p99",
        "timeseries",
        [(quantile(q), f"p{round(q * 100)}") for q in (0.5, 0.99)],
        8,
        "s",
        width=8,
        y=7,
    ),
    panel(
        10,
        "5xx ratio",
        "timeseries",
        [
            (
                f'sum(rate(wsgi_responses_total{{{SEL},code="5xx"}}[$__rate_interval]))'
                f" / sum(rate(wsgi_responses_total{{{SEL}}}[$__rate_interval]))",
                "5xx",
            )
        ],
        16,
        "percentunit",
        width=8,
        y=7,
    ),
]

dashboard = {
    "title": "wsgi-supervisor",
    "uid": "wsgi-supervisor",
    "tags": ["wsgi-supervisor", "openstack"],
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {
        "list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {
                "name": "instance",
                "type": "query",
                "datasource": DATASOURCE,
                "label": "host",
                "multi": True,
                "includeAll": True,
                "allValue": ".+",
                "query": "label_values(wsgi_supervisor_build_info, instance)",
                "refresh": 2,
            },
            {
                "name": "service",
                "type": "query",
                "datasource": DATASOURCE,
                "multi": True,
                "includeAll": True,
                "query": 'label_values(wsgi_service_info{instance=~"$instance"}, service)',
                "refresh": 2,
            },
        ]
    },
    "panels": panels,
}

if __name__ == "__main__":
    out = Path(__file__).with_name("wsgi-supervisor.json")
    out.write_text(json.dumps(dashboard, indent=2) + "\n")
    print(f"wrote {out}")
