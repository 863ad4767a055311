"""`POST /auth/token`: username and password for a short-lived API token; failures throttled."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import current_app, jsonify, request

from ..errors import ApiError
from ..passwords import password_marker, verify_password
from ..people import find_by_username
from ..throttle import count_attempt, forget_failures, seconds_until
from ..tokens import issue_api_token
from . import bp
from .common import get_str, iso, json_body


@bp.post("/auth/token")
def issue_token() -> Any:
    """Exchange a username and password for a short-lived API token."""
    body = json_body()
    username = get_str(body, "username", max_len=150) or ""
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise ApiError(400, "password is required", field="password")
    if len(password) > 1024:
        raise ApiError(400, "password is too long", field="password")
    address = request.remote_addr or "unknown"
    locked = count_attempt(username, address)
    if locked is not None:
        wait = seconds_until(locked)
        raise ApiError(429, f"too many failed logins; try again in {wait} s",
                       headers={"Retry-After": str(wait)})
    person = find_by_username(username)
    if not verify_password(person.password_hash if person else None, password) \
            or person is None or not person.active:
        raise ApiError(401, "wrong username or password")  # the counted attempt stays a failure
    forget_failures(username, address)
    if not person.school.password_login:
        raise ApiError(403, "this school signs in with the school account only; password "
                            "sign-in (and so password tokens) is off for it")
    issuer = (current_app.config.get("LESFOCUS_PUBLIC_URL") or request.host_url).rstrip("/")
    token, expires = issue_api_token(current_app.extensions["lesfocus.signing_key"],
                                     person_id=person.id, school_id=person.school_id,
                                     minutes=int(current_app.config["LESFOCUS_API_TOKEN_MINUTES"]),
                                     issuer=issuer, password=password_marker(person.password_hash))
    return jsonify({"token": token, "token_type": "Bearer",
                    "expires_at": iso(datetime.fromtimestamp(expires, timezone.utc)),
                    "person": {"id": person.id, "username": person.username,
                               "display_name": person.display_name, "roles": person.roles}})
