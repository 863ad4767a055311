"""Scheduled jobs (retention, timetable syncs): what they do and when; `lesfocus worker` runs them (worker.py).

Only the active worker starts the scheduler, so each job runs in one process. A job is a plain
function of the app; `scheduled_jobs` lists them all with their explicit ids and triggers, so a
new kind (a timetable source's sync every N minutes) is one more entry there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import delete

from .extensions import db
from .school_settings import longest_idle_minutes
from .models import (AgentTokenUse, AuditEvent, DashboardSession, GatewayCounter, ImportJob,
                     utcnow)

log = logging.getLogger("lesfocus.worker")


def apply_retention(audit_days: int, counter_days: int, import_days: int = 30,
                    session_idle_minutes: int = 30) -> dict[str, int]:
    """Delete audit events, counters, finished imports, idle dashboard sessions and the used
    agent tokens whose lifetime is over, past their limits; return the counts."""
    now = utcnow()
    sessions = db.session.execute(delete(DashboardSession).where(
        DashboardSession.last_seen_at < now - timedelta(minutes=session_idle_minutes)))
    audit = db.session.execute(
        delete(AuditEvent).where(AuditEvent.at < now - timedelta(days=audit_days)))
    counters = db.session.execute(
        delete(GatewayCounter).where(GatewayCounter.hour < now - timedelta(days=counter_days)))
    imports = db.session.execute(
        delete(ImportJob).where(ImportJob.state.in_(("done", "failed")),
                                ImportJob.finished_at < now - timedelta(days=import_days)))
    agent_tokens = db.session.execute(delete(AgentTokenUse).where(AgentTokenUse.expires_at < now))
    db.session.commit()
    return {"audit_events": audit.rowcount or 0, "counters": counters.rowcount or 0,
            "import_jobs": imports.rowcount or 0, "dashboard_sessions": sessions.rowcount or 0,
            "agent_token_uses": agent_tokens.rowcount or 0}


@dataclass(frozen=True)
class ScheduledJob:
    """One job: its id (unique, shown in logs), what it runs, and APScheduler trigger arguments."""

    id: str
    run: Callable[..., Any]
    trigger: str
    trigger_args: dict[str, Any] = field(default_factory=dict)
    run_at_start: bool = False
    # True: `run(app, exclusive)` takes the writer lock itself, only around its writes (a job
    # that waits on the network must not hold up imports meanwhile).
    locks_itself: bool = False


def _retention(app: Flask) -> dict[str, int]:
    return apply_retention(app.config["LESFOCUS_AUDIT_RETENTION_DAYS"],
                           app.config["LESFOCUS_COUNTER_RETENTION_DAYS"],
                           app.config["LESFOCUS_IMPORT_RETENTION_DAYS"],
                           longest_idle_minutes())


def _timetable_sync(app: Flask, exclusive: threading.Lock) -> dict[str, int]:
    from .timetable.sync import sync_due
    return sync_due(db.session, write_lock=exclusive)


def _alerts(app: Flask) -> dict[str, int]:
    from .alerts import run_alerts
    return run_alerts(app, utcnow())


def scheduled_jobs(app: Flask) -> list[ScheduledJob]:
    """Every job the worker schedules."""
    return [ScheduledJob("retention", _retention, "interval", {"hours": 6}, run_at_start=True),
            # Each linked timetable source at its own `every_minutes` (server/timetable/sync.py).
            ScheduledJob("timetable-sync", _timetable_sync, "interval", {"minutes": 1},
                         run_at_start=True, locks_itself=True),
            # Incidents for IT, and their e-mails (server/alerts.py).
            ScheduledJob("alerts", _alerts, "interval", {"minutes": 1}, run_at_start=True)]


def start_scheduler(app: Flask, exclusive: threading.Lock) -> BackgroundScheduler:
    """Start a scheduler running `scheduled_jobs(app)`; each run holds `exclusive` (a job that
    `locks_itself` takes it only around its writes).

    `exclusive` is the worker's one writer lock: a job never writes while an import does, which
    on SQLite (one writer at a time) would make one of them wait or fail.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    for job in scheduled_jobs(app):
        # Leaving next_run_time out lets the trigger decide; None would add the job paused.
        first = {"next_run_time": utcnow()} if job.run_at_start else {}
        scheduler.add_job(_run_job, job.trigger, args=(app, job, exclusive), id=job.id,
                          replace_existing=True, coalesce=True, max_instances=1,
                          **first, **job.trigger_args)
    scheduler.start()
    return scheduler


def _run_job(app: Flask, job: ScheduledJob, exclusive: threading.Lock) -> None:
    with nullcontext() if job.locks_itself else exclusive, app.app_context():
        try:
            result = job.run(app, exclusive) if job.locks_itself else job.run(app)
        except Exception:  # a failed run is logged and retried at the next trigger
            db.session.rollback()
            log.exception("job %s failed", job.id)
            return
        finally:
            db.session.remove()
    log.info("job %s ran: %s", job.id, result)
