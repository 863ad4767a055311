"""`POST /auth/token`: username and password for a short-lived API token; failures throttled."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from flask import current_app, jsonify, request
from sqlalchemy import select

from ..errors import ApiError
from ..extensions import db
from ..models import Person
from ..passwords import verify_password
from ..tokens import issue_api_token
from . import bp
from .common import get_str, iso, json_body

MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 300


class LoginThrottle:
    """Counts failed logins per (username, address) in a sliding window; in-process only."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, key: tuple[str, str], now: float | None = None) -> int:
        """Seconds until `key` may try again (0 when it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(key, now)
            if len(times) < self.limit:
                return 0
            return max(1, int(times[0] + self.window - now) + 1)

    def failed(self, key: tuple[str, str], now: float | None = None) -> None:
        """Note one failed attempt of `key`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # bound memory under a spray of usernames
                self._failures.clear()

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the failures of `key` after a good login."""
        with self._lock:
            self._failures.pop(key, None)


def _throttle() -> LoginThrottle:
    return current_app.extensions.setdefault("lesfocus.login_throttle", LoginThrottle())


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
    key = (username.lower(), request.remote_addr or "")
    throttle = _throttle()
    wait = throttle.retry_after(key)
    if wait:
        raise ApiError(429, f"too many failed logins; try again in {wait} s",
                       headers={"Retry-After": str(wait)})
    person = db.session.scalar(select(Person).where(Person.username == username))
    if not verify_password(person.password_hash if person else None, password) \
            or person is None or not person.active:
        throttle.failed(key)
        raise ApiError(401, "wrong username or password")
    throttle.succeeded(key)
    issuer = (current_app.config.get("LESFOCUS_PUBLIC_URL") or request.host_url).rstrip("/")
    token, expires = issue_api_token(current_app.extensions["lesfocus.signing_key"],
                                     person_id=person.id, school_id=person.school_id,
                                     minutes=int(current_app.config["LESFOCUS_API_TOKEN_MINUTES"]),
                                     issuer=issuer)
    return jsonify({"token": token, "token_type": "Bearer",
                    "expires_at": iso(datetime.fromtimestamp(expires, timezone.utc)),
                    "person": {"id": person.id, "username": person.username,
                               "display_name": person.display_name, "roles": person.roles}})
