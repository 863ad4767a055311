"""Scheduled jobs (retention); they run in exactly one process, only when enabled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import delete

from .extensions import db
from .models import AuditEvent, GatewayCounter, utcnow


def apply_retention(audit_days: int, counter_days: int) -> dict[str, int]:
    """Delete audit events and counters older than their retention limits; return the counts."""
    now = utcnow()
    audit = db.session.execute(
        delete(AuditEvent).where(AuditEvent.at < now - timedelta(days=audit_days)))
    counters = db.session.execute(
        delete(GatewayCounter).where(GatewayCounter.hour < now - timedelta(days=counter_days)))
    db.session.commit()
    return {"audit_events": audit.rowcount or 0, "counters": counters.rowcount or 0}


def init_app(app: Flask) -> None:
    """Start the scheduler when `LESFOCUS_SCHEDULER_ENABLED` is set (one process only)."""
    if not app.config["LESFOCUS_SCHEDULER_ENABLED"]:
        return
    scheduler = BackgroundScheduler(timezone="UTC")

    def retention_job() -> Any:
        with app.app_context():
            return apply_retention(app.config["LESFOCUS_AUDIT_RETENTION_DAYS"],
                                   app.config["LESFOCUS_COUNTER_RETENTION_DAYS"])

    scheduler.add_job(retention_job, "interval", hours=6, id="retention",
                      replace_existing=True, next_run_time=utcnow())
    scheduler.start()
    app.extensions["lesfocus.scheduler"] = scheduler
