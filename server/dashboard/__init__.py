"""The server-rendered dashboard for teachers, school leaders and IT (SPEC §1, issue 5).

One blueprint, one module per audience: `auth` (sign-in, sign-out, language), `teacher` ("Nu", week
view, grants and revocations), `leader` (school-wide exceptions, overview, audit log) and `it`
(rooms, segments, gateways, timetable import, services, reminders, people). Every form is protected
against CSRF and every view checks the signed-in person's roles itself.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, g, render_template, request
from flask_babel import Babel, gettext
from flask_wtf.csrf import CSRFError, CSRFProtect

bp = Blueprint("dashboard", __name__, template_folder="../templates")
babel = Babel()
csrf = CSRFProtect()

LANGUAGES = ("nl", "en")


def _select_locale() -> str:
    from .common import selected_language
    return selected_language()


def _select_timezone() -> str:
    user = getattr(g, "dashboard_user", None)
    return user.school.timezone if user is not None else "Europe/Amsterdam"


@bp.before_request
def _protect_forms() -> None:
    # CSRF is checked here rather than app-wide, so the JSON API (bearer tokens) is untouched.
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


# Only our own scripts, styles and forms; no framing, so no page can trick a teacher into a tap.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.after_app_request
def _security_headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


@bp.errorhandler(CSRFError)
def _csrf_failed(err: CSRFError) -> tuple[str, int]:
    # Say what to do in the reader's language; the library's text is English and technical.
    err.description = gettext("This form has expired or did not come from this site (CSRF check). "
                              "Reload the page and try again.")
    return render_template("error.html", status=400, error=err), 400


def init_app(app: Flask) -> None:
    """Register the dashboard: translations, CSRF protection and the audience modules."""
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    # A teacher's "Nu" page may stay open for a whole lesson: tokens live as long as the session.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", app.config.get("LESFOCUS_DEFAULT_LOCALE", "nl"))
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_select_locale, timezone_selector=_select_timezone)
    from . import auth, common, it, leader, sso, teacher  # noqa: F401  (they attach their routes to bp)
    common.init_app(app)
    app.register_blueprint(bp)
