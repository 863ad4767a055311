"""Gateways and their one-time enrolment tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from . import audit
from .extensions import db
from .models import EnrollmentToken, Gateway, Person, School, utcnow


GATEWAY_NAME_MAX = 100


def hash_token(token: str) -> str:
    """The SHA-256 under which an enrolment token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_gateway(school: School, name: str, *, actor: Person | str) -> Gateway:
    """Create a gateway of `school`; FieldError (a ValueError) for an empty, long or taken name."""
    from .fields import N_, FieldError
    name = name.strip()
    if not name:
        raise FieldError("name", N_("A gateway needs a name."))
    if len(name) > GATEWAY_NAME_MAX:
        raise FieldError("name", N_("At most %(n)d characters."), n=GATEWAY_NAME_MAX)
    if db.session.scalar(select(Gateway).where(Gateway.school_id == school.id,
                                               Gateway.name == name)) is not None:
        raise FieldError("name", N_("This school has a gateway with this name already."))
    gateway = Gateway(school_id=school.id, name=name)
    db.session.add(gateway)
    db.session.flush()
    audit.record("gateway.create", school_id=school.id, actor=actor, object_type="gateway",
                 object_id=gateway.id, name=name)
    return gateway


def issue_enrollment_token(gateway: Gateway, *, actor: Person | str) -> str:
    """Create a one-time enrolment token for `gateway` and return it (stored only hashed).

    The gateway's older unused tokens end now: only the newest one given out can enrol
    (issue 13, item 6), so a token copied from an old page or message is worthless."""
    token = "lfe_" + secrets.token_urlsafe(32)
    hours = current_app.config["LESFOCUS_ENROLLMENT_TOKEN_HOURS"]
    now = utcnow()
    db.session.execute(update(EnrollmentToken).where(
        EnrollmentToken.gateway_id == gateway.id, EnrollmentToken.used_at.is_(None),
        EnrollmentToken.expires_at > now).values(expires_at=now))
    db.session.add(EnrollmentToken(gateway_id=gateway.id, token_hash=hash_token(token),
                                   created_at=now, expires_at=now + timedelta(hours=hours)))
    audit.record("gateway.enrollment_token", school_id=gateway.school_id, actor=actor,
                 object_type="gateway", object_id=gateway.id, valid_hours=hours)
    return token


def rename_gateway(gateway: Gateway, name: str, *, actor: Person | str) -> Gateway:
    """Give `gateway` a new name; FieldError on `name` for an empty, too long or taken one."""
    from .fields import N_, FieldError
    name = (name or "").strip()
    if not name:
        raise FieldError("name", N_("A gateway needs a name."))
    if len(name) > GATEWAY_NAME_MAX:
        raise FieldError("name", N_("At most %(n)d characters."), n=GATEWAY_NAME_MAX)
    other = db.session.scalar(select(Gateway).where(Gateway.school_id == gateway.school_id,
                                                    Gateway.name == name))
    if other is not None and other is not gateway:
        raise FieldError("name", N_("This school has a gateway with this name already."))
    if name != gateway.name:
        audit.record("gateway.rename", school_id=gateway.school_id, actor=actor,
                     object_type="gateway", object_id=gateway.id, name=name,
                     old_name=gateway.name)
        gateway.name = name
        db.session.flush()
    return gateway
