"""The migration creates exactly the schema of server/models.py, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.extensions import db
from server.models import AuditEvent
from server import audit


def test_migration_matches_models(app):
    with app.app_context():
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == [], f"models and migration differ; run `make migration`: {diff}"


def test_audit_events_cannot_be_updated(app):
    with app.app_context():
        event = audit.record("test.event", school_id=None, actor="pytest", object_type="test")
        db.session.commit()
        event.action = "changed"
        try:
            db.session.commit()
        except ValueError as err:
            assert "append-only" in str(err)
            db.session.rollback()
        else:  # pragma: no cover - the listener must stop the update
            raise AssertionError("an audit event was updated")
        assert db.session.get(AuditEvent, event.id).action == "test.event"
