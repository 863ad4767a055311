"""Sign-in throttling in the database: shared by server processes and by both sign-in paths."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.test import TestResponse

from server.extensions import db
from server.models import LoginFailure
from server.throttle import (MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USER,
                             MAX_FAILURES_PER_USER_FROM_BUSY_ADDRESS)

from tests.support.api import PASSWORD, add_person
from tests.support.dashboard import csrf_token

SCHOOL_NAT = "203.0.113.7"  # every student and teacher of the school comes from this address
WRONG = "wrong password!"


@pytest.fixture
def servers(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """Make server processes' apps on ONE database (as `lesfocus serve` processes share it)."""
    return make_app


def _api_login(application: Flask, username: str, password: str, address: str = SCHOOL_NAT):
    return application.test_client().post(
        "/api/v1/auth/token", json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address})


def _form_login(application: Flask, username: str, password: str, address: str = SCHOOL_NAT):
    client = application.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_token(client)})


def _guess_wrong(login: Callable[..., TestResponse], application: Flask, username: str,
                 times: int) -> None:
    """`times` wrong passwords for `username` through `login`, each refused as wrong (401)."""
    for _ in range(times):
        assert login(application, username, WRONG).status_code == 401


def test_failures_through_one_server_process_are_counted_by_another(servers) -> None:
    first, second = servers(), servers()
    add_person(first, "jans", "teacher")
    for index in range(MAX_FAILURES_PER_USER):
        assert _api_login((first, second)[index % 2], "jans", WRONG).status_code == 401
    for application in (first, second):
        refused = _api_login(application, "jans", PASSWORD)
        assert refused.status_code == 429
        assert refused.get_json()["message"].startswith("too many failed logins; try again in")
        assert 0 < int(refused.headers["Retry-After"]) <= 300
    # A restarted process (a new app on the same database) still knows them.
    assert _api_login(servers(), "jans", PASSWORD).status_code == 429


def test_dashboard_and_api_sign_in_share_one_throttle(servers) -> None:
    app = servers()
    add_person(app, "jans", "teacher")
    _guess_wrong(_form_login, app, "Jans", MAX_FAILURES_PER_USER - 1)
    assert _api_login(app, "jans", WRONG).status_code == 401
    assert _api_login(app, "jans", PASSWORD).status_code == 429
    assert _form_login(app, "jans", PASSWORD).status_code == 429
    # The same username from elsewhere is not locked by them.
    assert _api_login(app, "jans", PASSWORD, address="192.0.2.9").status_code == 200


def test_right_password_clears_the_failures_for_both_paths(servers) -> None:
    app = servers()
    add_person(app, "jans", "teacher")
    _guess_wrong(_api_login, app, "jans", MAX_FAILURES_PER_USER - 1)
    assert _form_login(app, "jans", PASSWORD).status_code == 302
    with app.app_context():
        assert db.session.scalars(select(LoginFailure)).all() == []
    _guess_wrong(_api_login, app, "jans", MAX_FAILURES_PER_USER - 1)
    assert _api_login(app, "jans", PASSWORD).status_code == 200


def test_a_student_guessing_from_the_school_address_does_not_lock_teachers_out(servers) -> None:
    first, second = servers(), servers()
    add_person(first, "jans", "teacher")
    add_person(first, "boss", "leader")
    # A student behind the school's NAT guesses other usernames until each one is refused and
    # the address is busy, spread over two server processes.
    guessed = [f"leerling{n}" for n in range(MAX_FAILURES_PER_ADDRESS // MAX_FAILURES_PER_USER)]
    for index, username in enumerate(guessed):
        application = (first, second)[index % 2]
        _guess_wrong(_api_login, application, username, MAX_FAILURES_PER_USER)
        assert _api_login(application, username, WRONG).status_code == 429
    # The address is busy now: a new username gets fewer guesses before it waits...
    _guess_wrong(_api_login, second, "anders", MAX_FAILURES_PER_USER_FROM_BUSY_ADDRESS)
    assert _api_login(second, "anders", WRONG).status_code == 429
    # ...but teachers and leaders at the same address sign in with their right password.
    assert _api_login(first, "jans", PASSWORD).status_code == 200
    assert _api_login(second, "boss", PASSWORD).status_code == 200
    assert _form_login(second, "boss", PASSWORD).status_code == 302


def test_parallel_guesses_do_not_slip_past_the_limit(servers) -> None:
    first, second = servers(), servers()
    add_person(first, "jans", "teacher")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(
            lambda n: _api_login((first, second)[n % 2], "jans", WRONG).status_code, range(16)))
    assert set(statuses) <= {401, 429}
    # Each attempt is counted before its password is checked, so at most the limit were tried
    # (racing attempts may refuse each other, never let each other through).
    tried = statuses.count(401)
    assert tried <= MAX_FAILURES_PER_USER
    # What was refused is not counted: sequential guesses reach the limit exactly.
    _guess_wrong(_api_login, second, "jans", MAX_FAILURES_PER_USER - tried)
    assert _api_login(first, "jans", PASSWORD).status_code == 429
