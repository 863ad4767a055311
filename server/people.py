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
