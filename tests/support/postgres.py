"""Fresh PostgreSQL databases on the test cluster of `make test` (LESFOCUS_TEST_POSTGRES_URL).

`fresh_database` hands out an empty database and drops it afterwards. Its URL reaches the server
over the cluster's Unix socket rather than TCP on 127.0.0.1, so that processes in the tests'
network namespaces (which have loopbacks of their own) reach the same cluster.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.support.realparts import require


@contextmanager
def fresh_database(prefix: str = "e2e") -> Iterator[str]:
    """An empty database; its SQLAlchemy URL over the Unix socket. Dropped on leaving."""
    base = os.environ.get("LESFOCUS_TEST_POSTGRES_URL")
    require(bool(base), "PostgreSQL (LESFOCUS_TEST_POSTGRES_URL)")
    assert base is not None
    url = make_url(base)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            socket_dir = conn.execute(sa.text("SHOW unix_socket_directories")).scalar_one()
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        local = url.set(host=None, port=None, database=name).update_query_dict(
            {"host": socket_dir.split(",")[0].strip(), "port": str(url.port or 5432)})
        yield local.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
