"""Sign-in with local accounts (throttled by server/throttle.py), sign-out, the language switch."""

from __future__ import annotations

from flask import abort, g, redirect, render_template, request, session, url_for
from flask_babel import gettext
from werkzeug.wrappers import Response

from ..extensions import db
from ..models import Person, utcnow
from ..passwords import verify_password
from ..people import find_by_username
from ..throttle import count_attempt, forget_failures, throttle_key
from . import LANGUAGES, bp
from .common import (client_address, end_session, login_required, safe_next, session_marker,
                     start_session)


def home_endpoint(person: Person) -> str:
    """The first page a person's roles lead to."""
    if person.has_role("teacher"):
        return "dashboard.now"
    if person.has_role("leader"):
        return "dashboard.leader_overview"
    if person.has_role("it_admin"):
        return "dashboard.it_rooms"
    return "dashboard.no_role"


@bp.get("/")
def index() -> Response:
    """Send the visitor to their own start page, or to the sign-in page."""
    user = g.get("dashboard_user")
    if user is None:
        return redirect(url_for("dashboard.login"))
    return redirect(url_for(home_endpoint(user)))


@bp.get("/no-role")
@login_required()
def no_role() -> str:
    """Shown to a signed-in person without any role."""
    return render_template("no_role.html")


def login_page(status: int = 200, **context: object) -> tuple[str, int]:
    """The sign-in page: the password form (unless no school uses it) and one button per
    school-account provider."""
    from .sso import login_page_context
    context.setdefault("next", request.args.get("next", ""))
    context.setdefault("username", "")
    return render_template("login.html", **login_page_context(), **context), status


def sign_in_person(person: Person) -> None:
    """Start `person`'s dashboard session (a fresh cookie and a DashboardSession row; commits):
    the same after a password and after a school account."""
    lang = session.get("lang")
    # A fresh session on sign-in, so a session id planted before sign-in is worthless.
    session.clear()
    session["person_id"] = person.id
    session["auth"] = session_marker(person)
    session["sid"] = start_session(person)
    db.session.commit()
    if lang in LANGUAGES:
        session["lang"] = lang


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """Sign in with a username and password."""
    if request.method == "GET":
        if g.get("dashboard_user") is not None:
            return redirect(url_for("dashboard.index"))
        return login_page()
    username = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    next_url = request.form.get("next", "")
    key = throttle_key(username)
    address = client_address()
    now = utcnow()
    locked = count_attempt(key, address, now)
    if locked is not None:
        minutes = max(1, int((locked - now).total_seconds() // 60) + 1)
        error = gettext("Too many failed attempts. Try again in %(minutes)d minutes.",
                        minutes=minutes)
        return login_page(429, next=next_url, username=username, error=error)
    person = find_by_username(username) if key else None
    ok = verify_password(person.password_hash if person else None, password)
    if not ok or person is None or not person.active:
        # The attempt count_attempt wrote stays, as a failure.
        error = gettext("Unknown username or wrong password.")
        return login_page(401, next=next_url, username=username, error=error)
    forget_failures(key, address)
    if not person.school.password_login:
        # Said only after the right password, so it tells a guesser nothing.
        error = gettext("%(school)s signs in with the school account only: use the button "
                        "below.", school=person.school.name)
        return login_page(403, next=next_url, username=username, error=error)
    sign_in_person(person)
    return redirect(safe_next(next_url, url_for(home_endpoint(person))))


@bp.post("/logout")
def logout() -> Response | str:
    """Sign out (a POST with the CSRF token, so no other site can sign anyone out); after a
    school account, at its provider too when it offers that."""
    from .sso import provider_logout_url
    lang = session.get("lang")
    signed_in_with = session.get("sso")
    end_session(session.get("sid"))  # a copy of the cookie is worthless from now on
    db.session.commit()
    session.clear()
    if lang in LANGUAGES:
        session["lang"] = lang
    ended = provider_logout_url(signed_in_with)
    if ended is not None:
        # A page rather than a redirect: the CSP's form-action keeps a form's redirect on this
        # site, and the page says what happens.
        return render_template("sso_logout.html", provider=ended[0], url=ended[1])
    return redirect(url_for("dashboard.login"))


@bp.post("/language")
def set_language() -> Response:
    """Switch the interface language; remembered in the session and for the signed-in person."""
    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        abort(400, description=gettext("Unknown language."))
    session["lang"] = lang
    user = g.get("dashboard_user")
    if user is not None and user.locale != lang:
        user.locale = lang
        db.session.commit()
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.index")))
