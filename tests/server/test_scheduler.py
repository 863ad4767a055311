"""Retention: audit events older than a year, counters older than 90 days and finished imports
older than 30 days are deleted."""

from datetime import timedelta

from sqlalchemy import select

from server.extensions import db
from server.gateways import create_gateway
from server.models import AuditEvent, GatewayCounter, ImportJob, School, utcnow
from server.network import add_segment
from server.scheduler import apply_retention


def test_retention_deletes_only_what_is_past_its_limit(app):
    now = utcnow()
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        gateway = create_gateway(school, "gw", actor="pytest")
        segment = add_segment(school, gateway, "A", ["10.0.0.0/24"], ["1.01"], actor="pytest")
        for days in (400, 364):
            db.session.add(AuditEvent(school_id=school.id, at=now - timedelta(days=days),
                                      actor_label="pytest", action=f"old.{days}",
                                      object_type="test"))
        for days in (91, 89):
            hour = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
            db.session.add(GatewayCounter(gateway_id=gateway.id, segment_id=segment.id,
                                          service_id="tiktok", hour=hour, count=days))
        for name, state, days in (("old.csv", "done", 31), ("recent.csv", "failed", 29),
                                  ("waiting.csv", "queued", None)):
            db.session.add(ImportJob(
                school_id=school.id, requested_by_label="pytest", filename=name, size=1,
                state=state, created_at=now - timedelta(days=40),
                finished_at=None if days is None else now - timedelta(days=days)))
        db.session.commit()

        deleted = apply_retention(audit_days=365, counter_days=90, import_days=30)

        assert deleted == {"audit_events": 1, "counters": 1, "import_jobs": 1,
                           "dashboard_sessions": 0, "agent_token_uses": 0}
        assert set(db.session.scalars(select(ImportJob.filename))) == {"recent.csv",
                                                                       "waiting.csv"}
        actions = set(db.session.scalars(select(AuditEvent.action)))
        assert "old.400" not in actions and "old.364" in actions
        assert [c.count for c in db.session.scalars(select(GatewayCounter))] == [89]
