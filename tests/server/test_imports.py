"""Queued timetable imports: queued by the dashboard, claimed once, run by the worker, the file
deleted afterwards and the report kept; a job of a worker that died is run again after its lease."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask
from sqlalchemy import select

from server.extensions import db
from server.imports import (LEASE, MAX_ATTEMPTS, claim_next_import, queue_import, run_import,
                            run_next_import, stored_report)
from server.models import AuditEvent, ImportJob, Lesson, Person, School
from server.timetable import TimetableError

GOOD = (b"date,start,end,room,group,teacher,subject\n"
        b"2026-11-23,09:00,09:50,2.14,3havo-b,DOCE,en\n"
        b"2026-11-23,10:00,10:50,2.15,3havo-b,DOCE,nl\n")
BROKEN = b"date,start,end,room\n2026-11-23,09:00,09:50,2.14\n2026-11-23,10:00\n"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)


def _it_admin() -> Person:
    school = db.session.scalar(select(School).where(School.slug == "test"))
    person = db.session.scalar(select(Person).where(Person.username == "ict"))
    if person is None:
        person = Person(school_id=school.id, username="ict", display_name="ICT",
                        roles=["it_admin"])
        db.session.add(person)
        db.session.flush()
    return person


def _queue(data: bytes, name: str = "rooster.csv", fmt: str | None = None,
           at: datetime = T0) -> int:
    person = _it_admin()
    job = queue_import(person.school, data, name, fmt, actor=person, now=at)
    db.session.commit()
    return job.id


def _stored_bytes(job_id: int) -> bytes | None:
    return db.session.execute(select(ImportJob.data).where(ImportJob.id == job_id)).scalar_one()


def test_the_worker_runs_a_queued_import_keeps_its_report_and_deletes_the_file(app: Flask) -> None:
    with app.app_context():
        job_id = _queue(GOOD)
        assert _stored_bytes(job_id) == GOOD
        assert db.session.scalar(select(Lesson).where(Lesson.source == "csv")) is None

        assert run_next_import(lambda: T0) is True

        job = db.session.get(ImportJob, job_id)
        assert (job.state, job.attempts, job.error) == ("done", 1, None)
        assert stored_report(job).counts() == {"created": 2, "updated": 0, "cancelled": 0,
                                               "removed": 0, "lessons": 2}
        assert _stored_bytes(job_id) is None  # privacy: no timetable files lying around
        assert len(db.session.scalars(select(Lesson).where(Lesson.source == "csv")).all()) == 2
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "timetable.import"))
        assert event.actor_label == "ict" and event.details["file"] == "rooster.csv"
        assert run_next_import(lambda: T0) is False  # nothing left


def test_a_refused_file_fails_with_the_importers_message_and_changes_nothing(app: Flask) -> None:
    with app.app_context():
        job_id = _queue(BROKEN)
        assert run_next_import(lambda: T0) is True
        job = db.session.get(ImportJob, job_id)
        assert job.state == "failed" and job.error.startswith("line 3")
        assert stored_report(job) is None
        assert _stored_bytes(job_id) is None
        assert db.session.scalar(select(Lesson).where(Lesson.source == "csv")) is None
        assert db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "timetable.import")) is None


@pytest.mark.parametrize(("data", "fmt", "message"), [
    (b"", None, "the file is empty"),
    (GOOD, "xlsx", "unknown format 'xlsx'"),
])
def test_queueing_refuses_what_needs_no_parsing_to_refuse(app: Flask, data: bytes,
                                                          fmt: str | None, message: str) -> None:
    with app.app_context():
        person = _it_admin()
        with pytest.raises(TimetableError, match=message):
            queue_import(person.school, data, "rooster.csv", fmt, actor=person)
        db.session.rollback()
        assert db.session.scalar(select(ImportJob)) is None


def test_jobs_are_claimed_oldest_first_and_each_once(app: Flask) -> None:
    with app.app_context():
        ids = [_queue(GOOD, f"{n}.csv", at=T0 + timedelta(seconds=n)) for n in (2, 0, 1)]
        claimed = [claim_next_import(T0 + timedelta(minutes=1)) for _ in range(4)]
        assert claimed == [ids[1], ids[2], ids[0], None]
        assert {j.state for j in db.session.scalars(select(ImportJob))} == {"running"}


def test_concurrent_claimers_never_get_the_same_job(app: Flask) -> None:
    with app.app_context():
        ids = {_queue(GOOD, f"{n}.csv", at=T0 + timedelta(seconds=n)) for n in range(12)}
    got: list[list[int]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    start = threading.Barrier(len(got))

    def claim_all(mine: list[int]) -> None:
        try:
            with app.app_context():
                start.wait()
                while (job_id := claim_next_import(T0 + timedelta(minutes=1))) is not None:
                    mine.append(job_id)
                db.session.remove()
        except BaseException as err:  # reported below; a thread's exception is lost otherwise
            failures.append(err)

    threads = [threading.Thread(target=claim_all, args=(mine,)) for mine in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    everything = [job_id for mine in got for job_id in mine]
    assert sorted(everything) == sorted(ids)  # every job claimed exactly once


def test_a_job_whose_worker_died_is_run_again_after_its_lease(app: Flask) -> None:
    with app.app_context():
        job_id = _queue(GOOD)
        assert claim_next_import(T0) == job_id  # ... and the worker dies before finishing
        assert claim_next_import(T0 + LEASE - timedelta(seconds=1)) is None
        later = T0 + LEASE + timedelta(seconds=1)
        assert claim_next_import(later) == job_id
        assert run_import(job_id, later) == "done"
        job = db.session.get(ImportJob, job_id)
        assert (job.state, job.attempts, job.claimed_at) == ("done", 2, later)
        assert len(db.session.scalars(select(Lesson).where(Lesson.source == "csv")).all()) == 2


def test_a_file_that_stops_the_worker_every_time_is_given_up(app: Flask) -> None:
    with app.app_context():
        job_id = _queue(GOOD)
        now = T0
        for _attempt in range(MAX_ATTEMPTS):
            assert claim_next_import(now) == job_id
            now += LEASE + timedelta(seconds=1)
        assert claim_next_import(now) is None
        job = db.session.get(ImportJob, job_id)
        assert (job.state, job.error, job.attempts) == ("failed", None, MAX_ATTEMPTS)
        assert _stored_bytes(job_id) is None


def test_a_queued_import_goes_into_the_source_it_names(app: Flask) -> None:
    with app.app_context():
        person = _it_admin()
        job = queue_import(person.school, GOOD, "gebouw-a.csv", None, actor=person, now=T0,
                           source_name="Gebouw-A")
        db.session.commit()
        assert job.source_name == "gebouw-a"
        assert run_next_import(lambda: T0) is True
        assert len(db.session.scalars(select(Lesson).where(Lesson.source == "gebouw-a"))
                   .all()) == 2
        person = _it_admin()  # the worker ended the session
        with pytest.raises(TimetableError, match="reserved"):
            queue_import(person.school, GOOD, "x.csv", None, actor=person, now=T0,
                         source_name="demo")
