"""Throttling of password guessing, for the dashboard form and `POST /api/v1/auth/token` alike.

Attempts are rows of `login_failures` in the database, so every `lesfocus serve` process counts
the same guesses and a restart forgets none of them. An attempt is written before its password
is checked and removed again when the password was right: parallel guesses then cannot all slip
past the limit between one request's count and its write.

A school's staff and students usually share ONE public address (the school's NAT), so nothing
here locks an address as a whole: one student guessing many usernames must not keep every
teacher out. The lock is per (username, address); an address that fails very often only shrinks
what each username may still try from it (`MAX_FAILURES_PER_USER_FROM_BUSY_ADDRESS`), which a
teacher who types the right password does not notice.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from .extensions import db
from .models import LoginFailure, utcnow

THROTTLE_WINDOW = timedelta(minutes=5)
# Wrong passwords for one username from one address within the window before that pair waits.
MAX_FAILURES_PER_USER = 5
# Failures from one address within the window (all usernames) that make the address "busy": far
# more than a school's staff mistype in five minutes, so only a guessing run reaches it.
MAX_FAILURES_PER_ADDRESS = 50
MAX_FAILURES_PER_USER_FROM_BUSY_ADDRESS = 2


def throttle_key(username: str) -> str:
    """The username as the throttle counts it: trimmed, lower-cased, at most 150 characters."""
    return username.strip().lower()[:150]


def throttled_until(username: str, address: str, now: datetime,
                    ignore_id: int | None = None) -> datetime | None:
    """When `username` may try again from `address`, or None when it may try now.

    `ignore_id` leaves one attempt out of the count (the caller's own, just written).
    """
    since = now - THROTTLE_WINDOW
    key, address = throttle_key(username), address[:64]
    others = () if ignore_id is None else (LoginFailure.id != ignore_id,)
    from_address = db.session.scalar(
        select(func.count(LoginFailure.id))
        .where(LoginFailure.remote_addr == address, LoginFailure.at > since, *others)) or 0
    limit = (MAX_FAILURES_PER_USER_FROM_BUSY_ADDRESS if from_address >= MAX_FAILURES_PER_ADDRESS
             else MAX_FAILURES_PER_USER)
    times = list(db.session.scalars(
        select(LoginFailure.at)
        .where(LoginFailure.username == key, LoginFailure.remote_addr == address,
               LoginFailure.at > since, *others)
        .order_by(LoginFailure.at)))
    if len(times) < limit:
        return None
    # Allowed again once the count in the window is back below the limit.
    return times[len(times) - limit] + THROTTLE_WINDOW


def count_attempt(username: str, address: str, now: datetime | None = None) -> datetime | None:
    """Count one sign-in attempt (committed); None when its password may be checked, else until
    when the pair must wait (the attempt is then not counted).

    A counted attempt stays a failure until `forget_failures` is called after a right password.
    """
    now = utcnow() if now is None else now
    key, address = throttle_key(username), address[:64]
    # Rows older than the window count for nothing; dropping them here keeps the table tiny.
    db.session.execute(delete(LoginFailure).where(LoginFailure.at <= now - THROTTLE_WINDOW))
    attempt = LoginFailure(username=key, remote_addr=address, at=now)
    db.session.add(attempt)
    db.session.flush()
    attempt_id = attempt.id
    db.session.commit()
    until = throttled_until(key, address, now, ignore_id=attempt_id)
    if until is not None:
        db.session.execute(delete(LoginFailure).where(LoginFailure.id == attempt_id))
        db.session.commit()
    return until


def forget_failures(username: str, address: str) -> None:
    """Forget the failures of `username` from `address` after a right password (committed)."""
    db.session.execute(delete(LoginFailure).where(
        LoginFailure.username == throttle_key(username), LoginFailure.remote_addr == address[:64]))
    db.session.commit()


def seconds_until(moment: datetime, now: datetime | None = None) -> int:
    """Whole seconds from `now` to `moment`, at least 1 (for Retry-After)."""
    now = utcnow() if now is None else now
    return max(1, math.ceil((moment - now).total_seconds()))
