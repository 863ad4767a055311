"""Shared fixtures: an app per test against SQLite and (marked `postgres`) a real PostgreSQL.

The schema migration runs once per test session and database kind, into a template; each test
gets a copy of it (a file copy for SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from server.app import create_app
from server.extensions import db

from tests.support.realparts import require
from tests.support.schools import seed_school

# Shared 2-core machines: time per example says nothing about correctness here, so no deadlines
# and no "too slow" health check (tests that set their own settings keep them).
settings.register_profile("lesfocus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The clock-shifted reruns of `make test` look for tests bound to a date, which shows with few
# examples; the full runs of today keep the default count.
settings.register_profile("lesfocus-clock-shift", parent=settings.get_profile("lesfocus"),
                          max_examples=20)
settings.load_profile("lesfocus-clock-shift" if os.environ.get("LESFOCUS_TEST_CLOCK_SHIFT_DAYS")
                      else "lesfocus")


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """Argon2id at its lowest cost in this process: tests sign in and guess passwords thousands
    of times, and the shipped cost (RFC 9106's second choice, 64 MiB and 3 passes) took a third
    of a CPU second per check on the 2-core machines that run `make test`. What a test asserts
    (which password is right, what is refused and counted) does not depend on the cost; the
    shipped cost is asserted by tests/server/test_passwords.py, in a process of its own."""
    from argon2 import PasswordHasher

    from server import passwords

    with pytest.MonkeyPatch.context() as patch:
        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        patch.setattr(passwords, "_hasher", cheap)
        # Unknown users are checked against this hash: the same cost as a real check.
        patch.setattr(passwords, "_DUMMY_HASH", cheap.hash("lesfocus-dummy-password"))
        yield


def _postgres_url() -> str:
    url = os.environ.get("LESFOCUS_TEST_POSTGRES_URL")
    require(bool(url), "PostgreSQL (LESFOCUS_TEST_POSTGRES_URL)")
    return url  # type: ignore[return-value]


def _migrate(url: str, instance: str) -> None:
    """Run the schema migration on the (empty) database at `url`."""
    from flask_migrate import upgrade
    application = create_app({"INSTANCE_PATH": instance, "DATABASE_URL": url,
                              "SECRET_KEY": "test-secret-key", "TESTING": True})
    with application.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()


# `make test` runs the suite on several pytest-xdist workers (scripts/run-tests says why). A
# worker takes a whole test file at a time, so module-scoped fixtures (a lab of namespaces, a
# Chromium) are built once, and tests that read what an earlier test of their file left (the
# leak table of tests/e2e/test_agent_e2e.py) run after it in the same process. The extension
# tests go to one worker together: they load the same extension (one fixed ID), and one of them
# writes a managed policy for that ID into Chromium's machine-wide policy folder.
_ONE_WORKER_FOLDERS = ("tests/extension/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """`--dist loadfile` with the folders above as one unit each."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            folder = next((f for f in _ONE_WORKER_FOLDERS if nodeid.startswith(f)), None)
            return folder or super()._split_scope(nodeid)

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file migrated to the current schema, made once per session."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    _migrate(f"sqlite:///{folder / 'template.sqlite3'}", str(folder / "instance"))
    return str(folder / "template.sqlite3")


@pytest.fixture(scope="session")
def postgres_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL database migrated to the current schema, made once per session; its name."""
    base = _postgres_url()
    name = "tmpl_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    _migrate(make_url(base).set(database=name).render_as_string(hide_password=False),
             str(tmp_path_factory.mktemp("pg-template") / "instance"))
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh database with the current schema: a SQLite copy, or a new PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    base = _postgres_url()
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # FILE_COPY: for a small database a copy of its files is faster than WAL-logging it.
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" '
                             'STRATEGY FILE_COPY'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def app(database_url: str, tmp_path) -> Iterator[Flask]:
    """An app on a fresh migrated database, the service catalog and one school with slug `test`."""
    application = create_app({
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_URL": "http://lesfocus.test",
        "TESTING": True,
    })
    with application.app_context():
        seed_school("test", "Testcollege")
        db.session.commit()
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def make_app(database_url: str, tmp_path) -> Iterator[Callable[..., Flask]]:
    """Apps on ONE fresh database, as several `lesfocus serve` processes share it: each call makes
    another (its own instance folder, extra settings as keywords); the first seeds school `test`."""
    made: list[Flask] = []

    def make(**settings: object) -> Flask:
        application = create_app({"INSTANCE_PATH": str(tmp_path / f"instance{len(made)}"),
                                  "DATABASE_URL": database_url, "SECRET_KEY": "test-secret-key",
                                  "PUBLIC_URL": "http://lesfocus.test", "TESTING": True,
                                  **settings})
        if not made:
            with application.app_context():
                seed_school("test", "Testcollege")
                db.session.commit()
        made.append(application)
        return application

    yield make
    for application in made:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()
