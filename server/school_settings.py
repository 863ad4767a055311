"""School settings that IT sets on the dashboard: for now how long a dashboard session may stay
unused (issue 13, item 8: a classroom PC a teacher walked away from).

The install's default is LESFOCUS_DASHBOARD_IDLE_MINUTES (20); a school may choose its own
between IDLE_MINUTES_RANGE, or go back to the default (None).
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select

from . import audit
from .extensions import db
from .models import Person, School

IDLE_MINUTES_RANGE = (5, 480)  # at least five minutes, at most a school day


class SettingError(ValueError):
    """A setting that cannot be saved; `field` names the form or API field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def install_idle_minutes() -> int:
    """The install's default idle timeout in minutes (LESFOCUS_DASHBOARD_IDLE_MINUTES)."""
    return int(current_app.config["LESFOCUS_DASHBOARD_IDLE_MINUTES"])


def idle_minutes_of(school: School) -> int:
    """Minutes a dashboard session of `school` may stay unused before it ends."""
    return school.idle_minutes or install_idle_minutes()


def longest_idle_minutes() -> int:
    """The longest idle timeout of any school (retention keeps sessions that long)."""
    longest = db.session.scalar(select(func.max(School.idle_minutes)))
    return max(install_idle_minutes(), longest or 0)


def parse_idle_minutes(raw: object) -> int | None:
    """Form or API input as minutes (None: the install's default); SettingError naming
    `idle_minutes` when it is no whole number in IDLE_MINUTES_RANGE."""
    low, high = IDLE_MINUTES_RANGE
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise SettingError("idle_minutes", f"idle_minutes must be a whole number from {low} "
                                           f"to {high}")
    if isinstance(raw, str):
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 4:
            raise SettingError("idle_minutes", f"idle_minutes must be a whole number from {low} "
                                               f"to {high}")
        raw = int(text)
    if not isinstance(raw, int) or not low <= raw <= high:
        raise SettingError("idle_minutes", f"idle_minutes must be a whole number from {low} "
                                           f"to {high}")
    return raw


def set_idle_minutes(school: School, minutes: int | None, *, actor: Person | str) -> bool:
    """Set the school's idle timeout (None: the install's default); False when unchanged. The
    caller commits; audited."""
    if minutes is not None:
        minutes = parse_idle_minutes(minutes)
    if school.idle_minutes == minutes:
        return False
    audit.record("school.idle_minutes", school_id=school.id, actor=actor, object_type="school",
                 object_id=school.id, before=school.idle_minutes, after=minutes)
    school.idle_minutes = minutes
    return True
