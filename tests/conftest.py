"""Shared fixtures: an app per test against SQLite and (marked `postgres`) a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from flask import Flask
from flask.testing import FlaskClient

from server.app import create_app
from server.extensions import db
from server.models import School
from server.seed import seed_reminders, seed_services

from tests.support.realparts import require

# Shared 2-core machines: time per example says nothing about correctness here, so no deadlines
# and no "too slow" health check (tests that set their own settings keep them).
settings.register_profile("lesfocus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lesfocus")


def _postgres_url() -> str:
    url = os.environ.get("LESFOCUS_TEST_POSTGRES_URL")
    require(bool(url), "PostgreSQL (LESFOCUS_TEST_POSTGRES_URL)")
    return url  # type: ignore[return-value]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh empty database: SQLite in tmp_path, or a new schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    base = _postgres_url()
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def app(database_url: str, tmp_path) -> Iterator[Flask]:
    """An app with a migrated database, the service catalog and one school with slug `test`."""
    application = create_app({
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_URL": "http://lesfocus.test",
        "TESTING": True,
    })
    with application.app_context():
        from flask_migrate import upgrade
        upgrade()
        seed_services()
        school = School(slug="test", name="Testcollege", timezone="Europe/Amsterdam", aliases=[])
        db.session.add(school)
        db.session.flush()
        seed_reminders(school)
        db.session.commit()
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()
