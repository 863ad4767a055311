"""Append-only audit trail: one function records an event in the caller's transaction."""

from __future__ import annotations

from typing import Any

from .extensions import db
from .models import AuditEvent, Person


def record(action: str, *, school_id: int | None, actor: Person | str | None,
           object_type: str, object_id: Any = None, **details: Any) -> AuditEvent:
    """Add an audit event to the session (committed with the change it describes)."""
    if isinstance(actor, Person):
        actor_id, actor_label = actor.id, actor.username or actor.label
    else:
        actor_id, actor_label = None, actor or "system"
    event = AuditEvent(school_id=school_id, actor_id=actor_id, actor_label=actor_label,
                       action=action, object_type=object_type,
                       object_id=None if object_id is None else str(object_id), details=details)
    db.session.add(event)
    return event
