"""Queued timetable imports: the dashboard queues an upload, `lesfocus worker` runs it.

The request only stores the file and answers; the import (parse, check, write: seconds for a
large school) runs in the worker, so it neither holds up other requests nor, on SQLite, keeps
the database's one write lock during a request. A job is claimed with one conditional UPDATE
(compare and set), so two workers can never run the same job; the import and the job's report
are committed in one transaction, so a worker that dies mid-import leaves the job `running` with
nothing written, and after its lease another worker runs it again. The file's bytes are removed
when the import has run, whatever its outcome; the report stays until retention
(`LESFOCUS_IMPORT_RETENTION_DAYS`, server/scheduler.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import undefer

from .extensions import db
from .models import ImportJob, Person, School, utcnow
from .timetable import FORMATS, ImportReport, TimetableError, import_timetable_bytes
from .timetable.common import MAX_FILE_BYTES

log = logging.getLogger("lesfocus.worker")

# Longer than the largest import takes (100,000 lessons: a few seconds), so a job is taken from a
# worker only when it has really stopped; the import is one transaction, so it cannot renew it.
LEASE = timedelta(minutes=10)
# A file that kills the worker every time (out of memory) is given up after this many tries.
MAX_ATTEMPTS = 3
FINISHED = ("done", "failed")


def queue_import(school: School, data: bytes, filename: str, fmt: str | None, *,
                 actor: Person, now: datetime | None = None,
                 source_name: str | None = None) -> ImportJob:
    """Queue an uploaded timetable for the worker, in the caller's session (the caller commits).

    Only what needs no parsing is checked here (format name, size, source name); the importer
    checks the rest. `source_name`: the file source it goes into (default: the format's name).
    """
    if fmt is not None and fmt not in FORMATS:
        raise TimetableError(f"unknown format {fmt!r:.40} (known: {', '.join(FORMATS)})")
    if source_name is not None:
        from .timetable.sources import check_source_name
        source_name = check_source_name(source_name)
    if not data:
        raise TimetableError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise TimetableError(f"the file is {len(data)} bytes, more than the {MAX_FILE_BYTES} "
                             f"allowed")
    job = ImportJob(school_id=school.id, requested_by_id=actor.id,
                    requested_by_label=(actor.username or actor.label)[:200],
                    filename=filename[:200], format=fmt, source_name=source_name,
                    size=len(data), data=data,
                    state="queued", attempts=0, created_at=now or utcnow())
    db.session.add(job)
    db.session.flush()
    return job


def _claimable(now: datetime, lease: timedelta) -> ColumnElement[bool]:
    return or_(ImportJob.state == "queued",
               and_(ImportJob.state == "running", ImportJob.claimed_at < now - lease,
                    ImportJob.attempts < MAX_ATTEMPTS))


def claim_next_import(now: datetime, lease: timedelta = LEASE) -> int | None:
    """Claim the oldest queued job, or one whose worker's lease ran out; its id, or None.

    Commits. The UPDATE repeats the condition, so of two workers racing for a job one wins and
    the other moves on to the next job.
    """
    _give_up_on_stuck_jobs(now, lease)
    while True:
        candidate = db.session.scalar(
            select(ImportJob.id).where(_claimable(now, lease))
            .order_by(ImportJob.created_at, ImportJob.id).limit(1))
        if candidate is None:
            db.session.commit()  # end the read transaction
            return None
        claimed = db.session.execute(
            update(ImportJob).where(ImportJob.id == candidate, _claimable(now, lease))
            .values(state="running", claimed_at=now, attempts=ImportJob.attempts + 1)
            .execution_options(synchronize_session=False))
        db.session.commit()
        if claimed.rowcount == 1:
            return candidate


def _give_up_on_stuck_jobs(now: datetime, lease: timedelta) -> None:
    stuck = db.session.execute(
        update(ImportJob).where(ImportJob.state == "running",
                                ImportJob.claimed_at < now - lease,
                                ImportJob.attempts >= MAX_ATTEMPTS)
        .values(state="failed", data=None, finished_at=now, error=None)
        .execution_options(synchronize_session=False))
    if stuck.rowcount:
        log.warning("gave up on %d import(s): the worker stopped during each of %d attempts",
                    stuck.rowcount, MAX_ATTEMPTS)
    db.session.commit()


def run_import(job_id: int, now: datetime) -> str:
    """Run a claimed job with the timetable importer; store its report or error; the new state.

    On success the lessons, the audit event and the job's report are one commit. A file the
    importer refuses changes nothing and keeps the importer's message; any other failure is
    logged and shown as "did not finish". Either way the uploaded bytes are deleted.
    """
    job = db.session.get(ImportJob, job_id, options=[undefer(ImportJob.data)])
    if job is None or job.state != "running":
        db.session.commit()
        return "gone"
    school = db.session.get(School, job.school_id)
    actor = db.session.get(Person, job.requested_by_id) if job.requested_by_id else None
    try:
        assert school is not None  # the job goes with its school (ON DELETE CASCADE)
        report = import_timetable_bytes(school, job.data or b"", job.filename, job.format,
                                        actor=actor or job.requested_by_label, now=now,
                                        source_name=job.source_name)
        job.state, job.finished_at, job.data = "done", now, None
        job.report = {"counts": report.counts(), "notes": list(report.notes)}
        db.session.commit()
    except TimetableError as err:
        db.session.rollback()
        _finish_failed(job_id, now, str(err))
        log.info("import %d failed: the file was refused", job_id)
        return "failed"
    except SQLAlchemyError as err:
        db.session.rollback()
        log.error("import %d did not finish: %s", job_id, describe_database_error(err))
        _finish_failed(job_id, now, None)
        return "failed"
    except Exception:
        db.session.rollback()
        log.exception("import %d did not finish", job_id)
        _finish_failed(job_id, now, None)
        return "failed"
    log.info("import %d done: %s", job_id, report.counts())
    return "done"


def _finish_failed(job_id: int, now: datetime, error: str | None) -> None:
    db.session.execute(
        update(ImportJob).where(ImportJob.id == job_id)
        .values(state="failed", finished_at=now, data=None, error=error)
        .execution_options(synchronize_session=False))
    db.session.commit()


def run_next_import(clock: Callable[[], datetime] = utcnow, lease: timedelta = LEASE) -> bool:
    """Claim and run the next job, if any; True when one ran."""
    try:
        job_id = claim_next_import(clock(), lease)
        if job_id is None:
            return False
        log.info("import %d claimed", job_id)
        run_import(job_id, clock())
        return True
    finally:
        db.session.remove()  # a large import leaves 100,000 lessons in the session otherwise


def describe_database_error(err: SQLAlchemyError) -> str:
    """The driver's first line about a database error, without SQLAlchemy's statement and
    parameters (which hold the uploaded file and its lessons)."""
    detail = str(getattr(err, "orig", None) or "").strip().splitlines()
    return f"{type(err).__name__}: {detail[0]}" if detail else type(err).__name__


def stored_report(job: ImportJob) -> ImportReport | None:
    """A finished job's report as the importer returned it (for the dashboard), or None."""
    if job.state != "done" or job.report is None:
        return None
    return ImportReport(**job.report.get("counts", {}), notes=list(job.report.get("notes", [])))
