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


class GatewayError(ValueError):
    """A gateway action that cannot be done now; the message says why (safe to show IT)."""


def issue_enrollment_token(gateway: Gateway, *, actor: Person | str,
                           reenrol: bool = False) -> str:
    """Create a one-time enrolment token for `gateway` and return it (stored only hashed).

    The gateway's older unused tokens end now: only the newest one given out can enrol
    (issue 13, item 6), so a token copied from an old page or message is worthless.

    An enrolled gateway gets a token only through the explicit re-enrolment (`reenrol=True`,
    "opnieuw koppelen"): its agent's key is then replaced by whoever uses the token, which
    IT must mean. GatewayError otherwise, and for a disabled gateway.
    """
    if gateway.disabled_at is not None:
        raise GatewayError(f"gateway {gateway.name!r} is disabled: enable it before it can "
                           "be enrolled")
    if gateway.public_key_pem is not None and not reenrol:
        raise GatewayError(f"gateway {gateway.name!r} is enrolled already: re-enrol it "
                           "explicitly to replace its agent's key")
    token = "lfe_" + secrets.token_urlsafe(32)
    hours = current_app.config["LESFOCUS_ENROLLMENT_TOKEN_HOURS"]
    now = utcnow()
    db.session.execute(update(EnrollmentToken).where(
        EnrollmentToken.gateway_id == gateway.id, EnrollmentToken.used_at.is_(None),
        EnrollmentToken.expires_at > now).values(expires_at=now))
    reenrolling = gateway.public_key_pem is not None
    db.session.add(EnrollmentToken(gateway_id=gateway.id, token_hash=hash_token(token),
                                   created_at=now, expires_at=now + timedelta(hours=hours),
                                   reenrol=reenrolling))
    audit.record("gateway.reenrol_token" if reenrolling else "gateway.enrollment_token",
                 school_id=gateway.school_id, actor=actor, object_type="gateway",
                 object_id=gateway.id, valid_hours=hours)
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

def set_gateway_disabled(gateway: Gateway, disabled: bool, *, actor: Person | str) -> bool:
    """Disable or enable `gateway`; False when it already was so (nothing written).

    A disabled gateway's agent tokens are refused (401) by every process from the commit on
    (server/agent_tokens.py reads its row with each request's replay check), and its segments
    are reported unenforced once the change feed carries the commit (server/api/lesson_status.py,
    server/dashboard/state.py). Its unused enrolment tokens end.
    """
    if (gateway.disabled_at is not None) == disabled:
        return False
    now = utcnow()
    gateway.disabled_at = now if disabled else None
    if disabled:
        db.session.execute(update(EnrollmentToken).where(
            EnrollmentToken.gateway_id == gateway.id, EnrollmentToken.used_at.is_(None),
            EnrollmentToken.expires_at > now).values(expires_at=now))
    audit.record("gateway.disable" if disabled else "gateway.enable",
                 school_id=gateway.school_id, actor=actor, object_type="gateway",
                 object_id=gateway.id, name=gateway.name)
    return True


def remove_gateway(gateway: Gateway, *, actor: Person | str) -> list[str]:
    """Delete `gateway` with its segments, counters and tokens; the names of the segments.

    Its agent's tokens are refused from the commit on (the row is gone); the segments' rooms
    stay, with no network until IT gives them one behind another gateway.
    """
    segments = [segment.name for segment in gateway.segments]
    audit.record("gateway.remove", school_id=gateway.school_id, actor=actor,
                 object_type="gateway", object_id=gateway.id, name=gateway.name,
                 segments=segments, enrolled=gateway.public_key_pem is not None)
    for segment in list(gateway.segments):
        db.session.delete(segment)
    db.session.flush()
    db.session.delete(gateway)
    db.session.flush()
    return segments
