"""`lesfocus worker`: exactly one active worker (PostgreSQL advisory lock, SQLite lock file),
the standby taking over when the active one is killed, and the jobs and imports it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select

from server.extensions import db
from server.imports import queue_import
from server.models import ImportJob, Lesson, Person, School
from server.worker import FileLeaderLock, PostgresLeaderLock, leader_lock_for, run_worker

from tests.support.worker_process import WorkerProcess

CSV = (b"date,start,end,room,group,teacher,subject\n"
       b"2026-11-23,09:00,09:50,2.14,3havo-b,DOCE,en\n")


def _queue_csv(app: Flask) -> int:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        person = Person(school_id=school.id, username="ict", display_name="ICT",
                        roles=["it_admin"])
        db.session.add(person)
        db.session.flush()
        job = queue_import(school, CSV, "rooster.csv", None, actor=person)
        db.session.commit()
        return job.id


def _job_state(app: Flask, job_id: int) -> str:
    with app.app_context():
        state = db.session.scalar(select(ImportJob.state).where(ImportJob.id == job_id))
        db.session.remove()
        return state


def test_a_lock_file_has_one_holder_until_it_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    first, second = FileLeaderLock(path), FileLeaderLock(path)
    try:
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire() and not second.still_held()
        first.release()
        assert second.try_acquire()
        assert (tmp_path / "worker.lock").read_text().strip().isdigit()  # the holder's pid
    finally:
        first.release()
        second.release()


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_the_advisory_lock_goes_with_its_session(app: Flask, database_url: str) -> None:
    url = sa.make_url(database_url)
    first, second = PostgresLeaderLock(url), PostgresLeaderLock(url)
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire()
        # The server ends the session of a worker whose host vanished (no FIN) within ~20 s.
        session = first._connection()  # the lock's own connection, not the app's pool
        assert [session.exec_driver_sql(f"SHOW tcp_keepalives_{name}").scalar()
                for name in ("idle", "interval", "count")] == ["5", "5", "3"]
        # The first worker's connection ends (its host died, an admin ended it): the lock goes
        # with it, the first notices at its next check, and the second can take it.
        with admin.connect() as conn:
            ended = conn.scalar(sa.text(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
                "JOIN pg_database d ON d.oid = l.database AND d.datname = current_database() "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()"))
        assert ended == 1
        assert not first.still_held()
        assert second.try_acquire() and second.still_held()
    finally:
        first.release()
        second.release()
        admin.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_lock_of_a_sqlite_worker_is_a_file_in_the_instance_folder(app: Flask) -> None:
    lock = leader_lock_for(app)
    assert isinstance(lock, FileLeaderLock)
    assert lock.path == Path(app.instance_path) / "worker.lock"


def test_an_active_worker_runs_queued_imports_and_stops_when_asked(app: Flask,
                                                                   tmp_path: Path) -> None:
    job_id = _queue_csv(app)
    stop = threading.Event()
    lock = FileLeaderLock(tmp_path / "in-process.lock")
    thread = threading.Thread(target=run_worker, args=(app, stop),
                              kwargs={"lock": lock, "poll_seconds": 0.05}, daemon=True)
    with app.app_context():
        thread.start()
        try:
            for _ in range(600):  # up to a minute, checked every 0.1 s
                if _job_state(app, job_id) in ("done", "failed"):
                    break
                stop.wait(0.1)
        finally:
            stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert _job_state(app, job_id) == "done"
    assert not lock.still_held()  # released on the way out
    with app.app_context():
        assert db.session.scalar(select(Lesson).where(Lesson.source == "csv")) is not None


@pytest.fixture
def two_workers(app: Flask, database_url: str, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Two `lesfocus worker` processes on the app's database and instance folder."""
    settings = {"LESFOCUS_DATABASE_URL": database_url,
                "LESFOCUS_INSTANCE_PATH": app.instance_path,
                "LESFOCUS_SECRET_KEY": "test-secret-key"}
    workers = [WorkerProcess(settings, tmp_path / f"worker-{n}.log") for n in (1, 2)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def test_one_worker_is_active_and_the_standby_takes_over_when_it_is_killed(
        app: Flask, two_workers: list[WorkerProcess]) -> None:
    for worker in two_workers:
        worker.start()
    for worker in two_workers:
        worker.wait_for(r"worker (active|standing by)")
        assert f"instance folder {app.instance_path}" in worker.log
    active = [w for w in two_workers if w.logged(r"worker active")]
    assert len(active) == 1, [w.log for w in two_workers]
    (first,) = active
    (standby,) = [w for w in two_workers if w is not first]
    assert standby.logged(r"worker standing by")
    first.wait_for(r"job retention ran")

    seen = len(standby.log)
    first.kill()
    standby.wait_for(r"worker active", timeout=45, after=seen)
    standby.wait_for(r"job retention ran", timeout=45, after=seen)

    # The new active worker also takes the queued imports.
    job_id = _queue_csv(app)
    standby.wait_for(rf"import {job_id} done", timeout=45)
    assert _job_state(app, job_id) == "done"
    assert standby.stop() == 0
    assert standby.logged(r"worker stopped")
