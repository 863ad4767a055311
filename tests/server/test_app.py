"""The application factory: SQLite connections in WAL mode with a busy timeout, and the instance
folder's default."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from server.config import PACKAGE_ROOT, default_instance_path
from server.extensions import db
from server.models import Room, School

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_every_sqlite_connection_uses_wal_and_waits_five_seconds_for_a_writer(app: Flask) -> None:
    with app.app_context():
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@sqlite_only
def test_a_reader_is_not_refused_while_another_connection_writes(app: Flask) -> None:
    with app.app_context():
        school_id = db.session.scalar(select(School.id).where(School.slug == "test"))
        db.session.remove()
        with db.engine.connect() as writer, db.engine.connect() as reader:
            # The worker's import: one long write transaction. EXCLUSIVE is the strongest lock a
            # writer takes (it has it while it commits or spills its cache); in the old rollback
            # journal mode readers got "database is locked" after the busy timeout.
            writer.exec_driver_sql("BEGIN EXCLUSIVE")
            writer.execute(Room.__table__.insert(),
                           [{"school_id": school_id, "code": f"R{i}"} for i in range(2000)])
            count = reader.scalar(select(func.count()).select_from(Room))
            assert count == 0  # the reader sees the last committed state, at once
            writer.commit()
            reader.rollback()  # end the reader's snapshot
            assert reader.scalar(select(func.count()).select_from(Room)) == 2000


def test_the_default_instance_folder_of_a_checkout_is_its_instance_folder() -> None:
    assert (PACKAGE_ROOT / "pyproject.toml").is_file()  # these tests run from the checkout
    assert default_instance_path() == PACKAGE_ROOT / "instance"
    assert default_instance_path().is_absolute()


def test_an_installed_package_keeps_its_instance_folder_under_the_prefix(tmp_path: Path) -> None:
    site_packages = tmp_path / "lib" / "site-packages"  # holds server/, but no pyproject.toml
    (site_packages / "server").mkdir(parents=True)
    assert default_instance_path(site_packages) == Path(sys.prefix).resolve() / "var" / "lesfocus"


@sqlite_only
def test_the_instance_folder_comes_from_the_environment_first(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            database_url: str) -> None:
    from server.app import create_app
    monkeypatch.setenv("LESFOCUS_INSTANCE_PATH", str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)  # not the checkout: a relative default would land here
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "x", "TESTING": True})
    assert app.instance_path == str(tmp_path / "from-env")
    assert (tmp_path / "from-env" / "policy-signing-key.pem").exists()
    assert not (tmp_path / "instance").exists()


@sqlite_only
def test_the_served_app_runs_no_scheduler_even_with_the_old_switch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    import threading

    from server.app import create_app
    monkeypatch.setenv("LESFOCUS_SCHEDULER_ENABLED", "1")  # what a release-1 deployment set
    app = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "DATABASE_URL": database_url,
                      "SECRET_KEY": "x", "TESTING": True})
    assert "lesfocus.scheduler" not in app.extensions
    assert not [t for t in threading.enumerate() if t.name == "APScheduler"]


def test_the_database_file_and_the_session_secret_are_readable_by_their_owner_only(
        tmp_path: Path) -> None:
    import os
    import stat

    from flask_migrate import upgrade

    from server.app import create_app
    instance = tmp_path / "instance"
    before = os.umask(0o022)  # what most services run with: new files readable by everyone
    try:
        app = create_app({"INSTANCE_PATH": str(instance)})
        with app.app_context():
            upgrade()
            db.session.add(School(slug="s", name="S", timezone="Europe/Amsterdam", aliases=[]))
            db.session.commit()
            files = ["lesfocus.sqlite3", "lesfocus.sqlite3-wal", "lesfocus.sqlite3-shm",
                     "secret_key", "policy-signing-key.pem"]
            for name in files:
                mode = stat.S_IMODE((instance / name).stat().st_mode)
                assert mode == 0o600, (name, oct(mode))
            db.engine.dispose()
    finally:
        os.umask(before)


def test_answers_are_not_stored_by_caches_unless_a_view_says_so(client) -> None:
    assert client.get("/login").headers["Cache-Control"] == "no-store"
    assert client.post("/api/v1/auth/token", json={"username": "x", "password": "y"}
                       ).headers["Cache-Control"] == "no-store"
    assert client.get("/api/v1/keys").headers["Cache-Control"] == "public, max-age=300"


@pytest.mark.parametrize("method, path, allowed", [
    ("post", "/api/v1/lesson-status", {"GET", "HEAD", "OPTIONS"}),
    ("delete", "/api/v1/keys", {"GET", "HEAD", "OPTIONS"}),
    ("put", "/login", {"GET", "HEAD", "OPTIONS", "POST"}),
])
def test_a_method_not_allowed_names_the_allowed_ones(client, method, path, allowed) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == allowed
