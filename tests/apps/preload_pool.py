"""An app with a SQLAlchemy engine that uses its pool at import, as placement does with its database:
the connection goes back to the pool and stays open (a SQLite file here, a socket to MariaDB there).
POOL_KEEP=1 keeps one checked out instead, as an app that holds its own connection would."""

import gc
import json
import os

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

LOADED_IN = os.getpid()
ENGINE = sa.create_engine(f"sqlite:///{os.environ['POOL_DB']}", poolclass=QueuePool)
with ENGINE.begin() as conn:
    conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY)"))
    conn.execute(sa.text("INSERT OR IGNORE INTO t VALUES (1)"))
if os.environ.get("POOL_KEEP"):
    KEPT = ENGINE.connect()


def application(environ, start_response):
    with ENGINE.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM t")).scalar()
    body = json.dumps(
        {"pid": os.getpid(), "loaded_in": LOADED_IN, "frozen": gc.get_freeze_count(), "rows": rows}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
