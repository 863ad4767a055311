"""What every dashboard module shares: the signed-in person, role checks, times and forms."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from flask import Flask, abort, flash, g, redirect, request, session, url_for
from flask_babel import format_date, format_datetime, gettext
from sqlalchemy import delete, select

from ..bounds import DATE_YEARS, MAX_ID, year_in_range
from ..extensions import db
from ..fields import N_
from ..models import DashboardSession, Person, School, Service, utcnow
from ..passwords import password_marker
from ..school_settings import idle_minutes_of
from . import LANGUAGES, bp

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def session_marker(person: Person) -> str:
    """A short digest of the password hash: a new password signs out every other session."""
    return password_marker(person.password_hash)


# How often a session's last use is written at most (one write a minute per signed-in person).
SESSION_TOUCH_SECONDS = 60


def _session_row_id(token: object) -> str | None:
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(person: Person) -> str:
    """A new dashboard session of `person` (a row; the caller commits); the cookie's token."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(DashboardSession(id=_session_row_id(token), person_id=person.id,
                                    created_at=now, last_seen_at=now))
    return token


def end_session(token: object) -> None:
    """Sign the session with `token` out everywhere (its row goes; the caller commits)."""
    row_id = _session_row_id(token)
    if row_id is not None:
        db.session.execute(delete(DashboardSession).where(DashboardSession.id == row_id))


def _signed_out() -> None:
    for key in ("person_id", "auth", "sid"):
        session.pop(key, None)


@bp.before_app_request
def _load_user() -> None:
    g.dashboard_user = None
    person_id = session.get("person_id")
    if person_id is None:
        return
    person = db.session.get(Person, person_id) if isinstance(person_id, int) else None
    row_id = _session_row_id(session.get("sid"))
    row = None if row_id is None else db.session.get(DashboardSession, row_id)
    if (person is None or not person.active or not person.username or row is None
            or row.person_id != person.id or session.get("auth") != session_marker(person)):
        _signed_out()  # signed out elsewhere, a new password, or a cookie from before
        return
    now = utcnow()
    idle = timedelta(minutes=idle_minutes_of(person.school))
    if now - row.last_seen_at > idle:
        db.session.delete(row)
        db.session.commit()
        _signed_out()
        flash(gettext("You were signed out after %(minutes)d minutes without activity.",
                      minutes=int(idle.total_seconds() // 60)), "info")
        return
    if (now - row.last_seen_at).total_seconds() >= SESSION_TOUCH_SECONDS:
        row.last_seen_at = now
        db.session.commit()
    g.dashboard_user = person


def current_user() -> Person:
    """The signed-in person (only inside views guarded by `login_required`)."""
    user = g.get("dashboard_user")
    if user is None:  # pragma: no cover - login_required runs first
        abort(401)
    return user


def school_object_or_404(model: type[T], object_id: Any,
                         description: str | None = None) -> T:
    """The signed-in user's school's object with `object_id`; 404 for none or another school's."""
    if (object_id is None or isinstance(object_id, bool)
            or (isinstance(object_id, int) and not 1 <= object_id <= MAX_ID)
            or (isinstance(object_id, str) and len(object_id) > 64)):
        abort(404, description=description)  # no row has such an id (gateway ids are UUIDs)
    obj = db.session.get(model, object_id)
    if obj is None or getattr(obj, "school_id", None) != current_user().school_id:
        abort(404, description=description)
    return obj


def login_required(*roles: str) -> Callable[[F], F]:
    """Guard a view: sign-in required, and (when given) at least one of `roles`; else 403."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = g.get("dashboard_user")
            if user is None:
                target = request.full_path if request.method == "GET" else None
                return redirect(url_for("dashboard.login", next=target))
            if roles and not user.has_role(*roles):
                abort(403, description=gettext("Your role does not give access to this page."))
            return view(*args, **kwargs)
        wrapped.roles = roles  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]
    return decorate


def selected_language() -> str:
    """The interface language: the session's choice, then the person's, then Dutch."""
    lang = session.get("lang")
    if lang in LANGUAGES:
        return lang
    user = g.get("dashboard_user")
    if user is not None and user.locale in LANGUAGES:
        return user.locale
    return "nl"


def school_zone(school: School) -> ZoneInfo:
    """The school's timezone."""
    return ZoneInfo(school.timezone or "Europe/Amsterdam")


def parse_local_datetime(text: str, school: School) -> datetime:
    """Parse an `<input type=datetime-local>` value in the school's timezone; ValueError if bad."""
    text = (text or "").strip()
    if not text:
        raise ValueError(gettext("Enter a date and time."))
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(gettext("Enter a date and time such as 2026-11-23 09:00.")) from None
    if not year_in_range(naive):
        raise ValueError(gettext("Enter a date between the years %(first)d and %(last)d.",
                                 first=DATE_YEARS[0], last=DATE_YEARS[1]))
    if naive.tzinfo is not None:
        return naive.astimezone(timezone.utc)
    return naive.replace(tzinfo=school_zone(school)).astimezone(timezone.utc)


def local_input_value(moment: datetime, school: School) -> str:
    """A datetime as the value of an `<input type=datetime-local>` in the school's timezone."""
    return moment.astimezone(school_zone(school)).strftime("%Y-%m-%dT%H:%M")


def school_services(school: School) -> list[Service]:
    """The services the school blocks during lessons, in catalog order by name."""
    services = db.session.scalars(select(Service).order_by(Service.name)).all()
    if school.blocked_services is None:
        return list(services)
    chosen = set(school.blocked_services)
    return [s for s in services if s.id in chosen]


# Service names from server/data/social-services.json that have words to translate; the others
# (brand names) are the same in every language.
SERVICE_NAME_TEXTS = (N_("X (formerly Twitter)"), N_("Telegram (Web)"))


def service_name(name: str) -> str:
    """A service's name in the reader's language."""
    return gettext(name) if name in SERVICE_NAME_TEXTS else name


def service_names() -> dict[str, str]:
    """Service id -> display name in the reader's language, for every known service."""
    return {s.id: service_name(s.name) for s in db.session.scalars(select(Service))}


# A path on this site, as RFC 3986 writes one (path, query, fragment): printable ASCII without
# spaces, quotes, angle brackets or backslashes, starting with one "/" that no "/" follows.
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/?%#]*")
MAX_NEXT_LENGTH = 2000


def safe_next(target: str | None, default: str) -> str:
    """`target` when it is a path on this site, else `default` (no open redirects).

    Browsers take tabs and line breaks out of a URL and read a backslash as a slash, so
    "/<tab>/evil.example/" or "/\\evil.example" lead to another host; a line break in a
    Location header is refused by the server (a 500). Only plain RFC 3986 characters pass, and
    the percent-decoded form must not start another host either ("/%2F/evil.example").
    """
    if not target or len(target) > MAX_NEXT_LENGTH or not _LOCAL_PATH.fullmatch(target):
        return default
    decoded = unquote(target)
    if decoded.startswith(("//", "/\\")) or any(
            char < " " or char in "\\\x7f" for char in decoded):
        return default
    return target


def client_address() -> str:
    """The address the request came from (as the app's proxy settings present it)."""
    return (request.remote_addr or "unknown")[:64]


def _hm(moment: datetime | None) -> str:
    return format_datetime(moment, "HH:mm") if moment else ""


def _hms(moment: datetime | None) -> str:
    return format_datetime(moment, "HH:mm:ss") if moment else ""


def _day(moment: datetime | None) -> str:
    return format_datetime(moment, "EEEE d MMMM") if moment else ""


def _dayname(day: date | None) -> str:
    return format_date(day, "EEEE d MMMM") if day else ""


def _short_dt(moment: datetime | None) -> str:
    return format_datetime(moment, "EEE d MMM HH:mm") if moment else ""


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def session_person_for_reading() -> Person | None:
    """The dashboard's signed-in person for read-only API requests (GET/HEAD), else None.

    The API's writes stay bearer-token only: they carry no CSRF token, so a session cookie must
    not be enough to make them.
    """
    if request.method not in ("GET", "HEAD"):
        return None
    return g.get("dashboard_user")


def _audit_value(value: Any) -> str:
    """An audit detail for people: times in the school's timezone, lists as words."""
    if isinstance(value, list):
        return ", ".join(_audit_value(item) for item in value)
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            return _short_dt(moment)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_audit_value(v)}" for k, v in value.items())
    return str(value)


def _timetable_text(text: str | None) -> str:
    """An importer's stored message in the reader's language (server/timetable/messages.py)."""
    from ..timetable.messages import translate
    return translate(text or "", gettext)


def _without_citation(text: str | None, article: str) -> str:
    """A reminder text as the extension shows it: without its own "(artikel X)" at the end
    (the dialog labels the article once; extension/content/checks.js withoutArticleCitation)."""
    pattern = r"\s*\((?:artikel|article)\s+" + re.escape(article) + r"\)(?=[.!?]?\s*$)"
    return re.sub(pattern, "", text or "", count=1, flags=re.IGNORECASE)


def _person_label(label: str | None) -> str:
    """A stored name of who did something; "deleted person" in the reader's language."""
    from ..people import DELETED_PERSON
    return gettext("deleted person") if label == DELETED_PERSON else (label or "")


def init_app(app: Flask) -> None:
    """Template filters and globals used by every page; the session login for API reads."""
    from ..auth import register_user_loader
    from ..grants import EXTEND_MINUTES
    from .state import line_text
    register_user_loader(session_person_for_reading)
    app.jinja_env.filters.update(hm=_hm, hms=_hms, day=_day, dayname=_dayname,
                                 short_dt=_short_dt, iso=_iso, audit_value=_audit_value,
                                 service_name=service_name, timetable_text=_timetable_text,
                                 person_label=_person_label,
                                 without_citation=_without_citation)
    app.jinja_env.globals.update(service_line_text=line_text, extend_minutes=EXTEND_MINUTES)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"current_language": selected_language(), "languages": LANGUAGES,
                "user": g.get("dashboard_user")}
