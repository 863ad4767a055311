"""Signing in with the school account (OpenID Connect, server/sso.py), and IT's page for the
providers and for switching password sign-in off (issue 15)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import current_app, flash, redirect, request, session, url_for
from flask_babel import gettext
from sqlalchemy import select
from werkzeug.wrappers import Response

from .. import audit
from ..extensions import db
from ..models import SSO_USERNAME_CLAIMS, School, SsoProvider, utcnow
from ..sealed import SealedError
from ..sso import (Pending, SsoError, begin, check_provider_fields, discover, find_person,
                   find_provider, finish, identity, new_teacher, set_client_secret)
from . import bp
from .common import current_user, login_required, safe_next

log = logging.getLogger(__name__)


def _timeout() -> float:
    return float(current_app.config["LESFOCUS_SSO_TIMEOUT_SECONDS"])


def redirect_uri() -> str:
    """The address the providers send people back to (register exactly this one)."""
    base = (current_app.config.get("LESFOCUS_PUBLIC_URL") or request.host_url).rstrip("/")
    return base + url_for("dashboard.sso_callback")


def login_page_context() -> dict[str, Any]:
    """The providers to offer and which schools sign in without a password."""
    providers = db.session.scalars(select(SsoProvider).order_by(SsoProvider.name)).all()
    schools = db.session.scalars(select(School).order_by(School.name)).all()
    sso_only = [school.name for school in schools if not school.password_login]
    return {"providers": providers, "sso_only": sso_only,
            "password_form": not schools or len(sso_only) < len(schools)}


def _message(kind: str, provider: str) -> str:
    if kind == "unreachable":
        return gettext("%(provider)s cannot be reached right now, so signing in with the school "
                       "account does not work. Try again in a few minutes; if it keeps failing, "
                       "tell IT.", provider=provider)
    if kind == "refused":
        return gettext("%(provider)s did not sign you in (cancelled or refused). Try again.",
                       provider=provider)
    if kind == "state":
        return gettext("This sign-in did not start in this browser, or it took too long. "
                       "Sign in again.")
    return gettext("%(provider)s sent an answer that lesfocus cannot trust, so you are not "
                   "signed in. Try again; if it keeps failing, tell IT.", provider=provider)


@bp.get("/login/sso/<name>")
def sso_start(name: str) -> Response | tuple[str, int]:
    """Leave for the provider's sign-in page (PKCE, state and nonce kept in the session)."""
    from .auth import login_page
    provider = find_provider(name)
    if provider is None:
        return login_page(404, error=gettext("There is no school-account sign-in called "
                                             "%(name)s.", name=name[:64]))
    next_url = safe_next(request.args.get("next"), "")
    try:
        url, pending = begin(provider, redirect_uri(), next_url, utcnow(), _timeout())
    except SsoError as err:
        log.warning("sso %s: sign-in not started: %s", provider.name, err.detail)
        return login_page(502, error=_message(err.kind, provider.name))
    session["sso_pending"] = pending.as_dict()
    return redirect(url)


@bp.get("/login/sso/callback")
def sso_callback() -> Response | tuple[str, int]:
    """Back from the provider: check everything, then sign the person in."""
    from .auth import home_endpoint, login_page, sign_in_person
    pending = Pending.from_dict(session.pop("sso_pending", None))
    provider = find_provider(pending.provider) if pending else None
    if pending is None or provider is None:
        return login_page(400, error=_message("state", ""))
    try:
        claims, id_token = finish(provider, pending, request.args.to_dict(), redirect_uri(),
                                  utcnow(), _timeout())
    except SealedError:
        log.error("sso %s: the client secret cannot be unsealed (another sealing key file?)",
                  provider.name)
        return login_page(502, error=_message("unreachable", provider.name))
    except SsoError as err:
        log.warning("sso %s: sign-in refused: %s", provider.name, err.detail)
        status = 502 if err.kind == "unreachable" else 400
        return login_page(status, error=_message(err.kind, provider.name))
    value = identity(provider, claims)
    person = find_person(provider, value) if value else None
    if person is None and value:
        person = new_teacher(provider, value, claims)
    if person is None or not person.active or not person.username:
        db.session.rollback()
        shown = value or gettext("(no %(claim)s)", claim=provider.username_claim)
        return login_page(403, error=gettext(
            "Your school account %(account)s is not known in lesfocus, so you are not signed in. "
            "Ask IT to give your lesfocus login this e-mail address.", account=shown))
    sign_in_person(person)
    # The ID token goes back to the provider as the sign-out hint; a very long one would not
    # fit the cookie, and the hint is optional.
    session["sso"] = {"provider": provider.name,
                      "id_token": id_token if len(id_token) <= 2500 else ""}
    return redirect(safe_next(pending.next, url_for(home_endpoint(person))))


def provider_logout_url(signed_in_with: Any) -> tuple[str, str] | None:
    """(provider name, its end-session address) for a session that began with a school
    account at a provider that advertises `end_session_endpoint`; None otherwise."""
    if not isinstance(signed_in_with, dict):
        return None
    provider = find_provider(str(signed_in_with.get("provider", "")))
    if provider is None:
        return None
    try:
        endpoint = discover(provider.issuer, _timeout()).get("end_session_endpoint")
    except SsoError:
        return None  # signed out here; the provider's own page is out of reach
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    query = {"client_id": provider.client_id,
             "post_logout_redirect_uri": (current_app.config.get("LESFOCUS_PUBLIC_URL")
                                          or request.host_url).rstrip("/")
             + url_for("dashboard.login")}
    if signed_in_with.get("id_token"):
        query["id_token_hint"] = signed_in_with["id_token"]
    return provider.name, endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)


# --- IT: the providers and password sign-in ---------------------------------------------------

@bp.route("/it/aanmelden", methods=["GET", "POST"])
@login_required("it_admin")
def it_sign_in() -> Response | tuple[str, int]:
    """The school-account providers of the school, and whether passwords still work."""
    from flask import render_template
    school = current_user().school
    errors: list[str] = []
    form = {"name": "", "issuer": "", "client_id": "", "username_claim": "email",
            "create_accounts": False}
    providers = [provider for provider in db.session.scalars(
        select(SsoProvider).order_by(SsoProvider.name))
        if not provider.schools or school in provider.schools]
    if request.method == "POST" and request.form.get("action") == "password_login":
        wanted = request.form.get("password_login") == "on"
        if not wanted and not providers:
            # Nobody could sign in any more, IT included.
            flash(gettext("Add a provider first: without one, nobody of the school could sign "
                          "in."), "error")
            return redirect(url_for("dashboard.it_sign_in"))
        school.password_login = wanted
        audit.record("school.password_login", school_id=school.id, actor=current_user(),
                     object_type="school", object_id=school.id,
                     enabled=school.password_login)
        db.session.commit()
        flash(gettext("Saved."), "success")
        return redirect(url_for("dashboard.it_sign_in"))
    if request.method == "POST":
        form = {key: (request.form.get(key) or "").strip() for key in
                ("name", "issuer", "client_id", "username_claim")}
        form["create_accounts"] = request.form.get("create_accounts") == "on"
        secret = (request.form.get("client_secret") or "").strip()
        if check_provider_fields(form["name"], form["issuer"], form["client_id"], secret,
                                 form["username_claim"]):
            errors.append(gettext("Fill in every field: a name, the issuer (an https:// "
                                  "address), the client id and secret, and one of the "
                                  "claims."))
        elif find_provider(form["name"]) is not None:
            errors.append(gettext("There is a provider called %(name)s already.",
                                  name=form["name"]))
        if not errors:
            provider = SsoProvider(name=form["name"], issuer=form["issuer"],
                                   client_id=form["client_id"],
                                   username_claim=form["username_claim"],
                                   create_accounts=form["create_accounts"], schools=[school],
                                   client_secret="")
            db.session.add(provider)
            set_client_secret(provider, secret)
            audit.record("sso.add", school_id=school.id, actor=current_user(),
                         object_type="sso_provider",
                         object_id=provider.id, name=provider.name, issuer=provider.issuer,
                         client_id=provider.client_id)
            db.session.commit()
            flash(gettext("Added. Register this redirect URI at the provider: %(uri)s",
                          uri=redirect_uri()), "success")
            return redirect(url_for("dashboard.it_sign_in"))
    return render_template("it/sign_in.html", providers=providers, school=school, form=form,
                           errors=errors, claims=SSO_USERNAME_CLAIMS,
                           redirect_uri=redirect_uri()), 400 if errors else 200


@bp.post("/it/aanmelden/<int:provider_id>/verwijderen")
@login_required("it_admin")
def it_sign_in_remove(provider_id: int) -> Response:
    """Remove a provider of only this school (one shared with others is the CLI's)."""
    from flask import abort
    school = current_user().school
    provider = db.session.get(SsoProvider, provider_id) if provider_id < 2**31 else None
    if provider is None or [s.id for s in provider.schools] != [school.id]:
        abort(404, description=gettext("No such provider for this school."))
    audit.record("sso.remove", school_id=school.id, actor=current_user(),
                 object_type="sso_provider", object_id=provider.id,
                 name=provider.name)
    db.session.delete(provider)
    db.session.commit()
    flash(gettext("Removed."), "success")
    return redirect(url_for("dashboard.it_sign_in"))
