"""Usernames, the same rule for the CLI, the dashboard and both sign-ins (issue 13, item 9).

A username is 2 to 150 of `A-Z a-z 0-9 . _ @ -` and unique regardless of case: `JJansen` and
`jjansen` are one name, as people type them. Signing in finds the person by the name in any
case. Two people whose names differ only in case (made by an older release's CLI) cannot sign in
by a spelling that is not exactly theirs: which one was meant cannot be told; IT renames one.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select

from .extensions import db
from .models import Person

USERNAME = re.compile(r"[A-Za-z0-9._@-]{2,150}")


def valid_username(username: str) -> bool:
    """Whether `username` has the allowed form."""
    return USERNAME.fullmatch(username) is not None


def username_taken(username: str, person: Person | None = None) -> bool:
    """Whether someone other than `person` has `username`, in any case."""
    others = db.session.scalars(select(Person).where(
        func.lower(Person.username) == username.lower()).limit(2)).all()
    return any(other is not person for other in others)


def find_by_username(username: str) -> Person | None:
    """The person signing in as `username`: the one with exactly that name, else the only one
    with it in another case; None when there is none, or several and none exactly."""
    if not username or len(username) > 150:
        return None
    found = db.session.scalars(select(Person).where(
        func.lower(Person.username) == username.lower()).limit(20)).all()
    exact = [person for person in found if person.username == username]
    if exact:
        return exact[0]
    return found[0] if len(found) == 1 else None


# What the audit trail and import jobs show where a deleted person's name was (issue 14, item 3);
# the dashboard shows it translated ("verwijderde persoon").
DELETED_PERSON = "deleted person"
# Keys of audit details that hold a person's own data (person.create/update events).
_PERSONAL_DETAILS = ("username", "display_name", "teacher_code")


def delete_person(person: Person, *, actor: Person | str) -> None:
    """Delete `person` and their personal data: the row (name, username, teacher code, password
    hash), their dashboard sessions, failed sign-ins under their username; API tokens stop
    working since they name a person that no longer exists. The audit trail stays readable:
    events they did show `DELETED_PERSON`, events about them lose the name fields. Exceptions
    they granted stay, without the name (granted_by becomes NULL).

    A FieldError on `person` when `actor` is `person` (nobody deletes their own account, so one
    IT admin always remains).
    """
    from . import audit
    from .fields import N_, FieldError
    from .models import AuditEvent, DashboardSession, ExceptionGrant, ImportJob, LoginFailure
    from sqlalchemy import delete, update
    if isinstance(actor, Person) and actor.id == person.id:
        raise FieldError("person", N_("You cannot delete yourself; another IT admin can."))
    person_id = person.id
    db.session.execute(update(AuditEvent).where(AuditEvent.actor_id == person_id)
                       .values(actor_id=None, actor_label=DELETED_PERSON))
    # Audit events are append-only for the ORM (models.py); taking a removed person's name out of
    # them is the one rewrite the privacy promise asks for, done as plain UPDATEs.
    about = db.session.execute(select(AuditEvent.id, AuditEvent.details).where(
        AuditEvent.object_type == "person", AuditEvent.object_id == str(person_id))).all()
    for event_id, details in about:
        if any(key in (details or {}) for key in _PERSONAL_DETAILS):
            db.session.execute(update(AuditEvent).where(AuditEvent.id == event_id).values(
                details={key: value for key, value in details.items()
                         if key not in _PERSONAL_DETAILS}))
    db.session.execute(update(ImportJob).where(ImportJob.requested_by_id == person_id)
                       .values(requested_by_id=None, requested_by_label=DELETED_PERSON))
    db.session.execute(update(ExceptionGrant).where(ExceptionGrant.granted_by_id == person_id)
                       .values(granted_by_id=None))
    db.session.execute(update(ExceptionGrant).where(ExceptionGrant.revoked_by_id == person_id)
                       .values(revoked_by_id=None))
    db.session.execute(delete(DashboardSession).where(DashboardSession.person_id == person_id))
    if person.username:
        db.session.execute(delete(LoginFailure).where(
            LoginFailure.username == person.username.lower()))
    audit.record("person.delete", school_id=person.school_id, actor=actor,
                 object_type="person", object_id=person_id)
    db.session.delete(person)
    db.session.flush()
