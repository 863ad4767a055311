"""Sign-in, CSRF, throttling, sign-out, sessions and the language switch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from tests.support.dashboard import PASSWORD, csrf_token, sign_in
from server.dashboard.common import safe_next
from server.extensions import db
from server.models import DashboardSession, LoginFailure, Person, utcnow
from server.throttle import MAX_FAILURES_PER_USER, THROTTLE_WINDOW, throttled_until


def _login(client, username: str, password: str, **extra: str):
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_token(client), **extra})


def test_sign_in_with_correct_password_leads_to_the_role_start_page(app: Flask, world) -> None:
    client = app.test_client()
    response = _login(client, "docent", PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/nu"
    assert "Nu" in client.get("/nu").get_data(as_text=True)


@pytest.mark.parametrize("username, password", [("docent", "wrong password!"),
                                                ("onbekend", PASSWORD), ("", "")])
def test_sign_in_is_refused_for_wrong_or_unknown_credentials(app: Flask, world, username,
                                                             password) -> None:
    client = app.test_client()
    response = _login(client, username, password)
    assert response.status_code == 401
    assert client.get("/nu").status_code == 302  # still anonymous


def test_post_without_csrf_token_is_rejected_and_changes_nothing(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    response = client.post("/nu/grant", data={"lesson_id": world.own_lesson, "duration": "10"})
    assert response.status_code == 400
    assert "CSRF-controle" in response.get_data(as_text=True)
    with app.app_context():
        from server.models import ExceptionGrant
        assert db.session.query(ExceptionGrant).filter_by(lesson_id=world.own_lesson).count() == 0


@pytest.mark.parametrize("token", ["", "forged-token", "IjEyMyI.abc.def"])
def test_sign_in_form_with_missing_or_forged_csrf_token_is_rejected(app: Flask, world,
                                                                    token: str) -> None:
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "docent", "password": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 400
    assert client.get("/nu").status_code == 302


def test_csrf_token_of_another_session_is_rejected(app: Flask, world) -> None:
    other = app.test_client()
    token = csrf_token(other)
    client = app.test_client()
    sign_in(client, "docent")
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 400
    assert client.get("/nu").status_code == 200  # still signed in


def test_five_failures_lock_the_username_from_that_address_even_for_the_right_password(
        app: Flask, world) -> None:
    client = app.test_client()
    for _ in range(MAX_FAILURES_PER_USER):
        assert _login(client, "docent", "wrong password!").status_code == 401
    locked = _login(client, "docent", PASSWORD)
    assert locked.status_code == 429
    assert client.get("/nu").status_code == 302
    # Another user from the same address is not locked by docent's failures.
    assert _login(app.test_client(), "leiding", PASSWORD).status_code == 302


def test_throttle_lifts_when_the_failures_are_older_than_the_window(app: Flask, world) -> None:
    with app.app_context():
        old = utcnow() - THROTTLE_WINDOW - timedelta(seconds=1)
        for _ in range(MAX_FAILURES_PER_USER):
            db.session.add(LoginFailure(username="docent", remote_addr="127.0.0.1", at=old))
        db.session.commit()
        assert throttled_until("docent", "127.0.0.1", utcnow()) is None
    assert _login(app.test_client(), "docent", PASSWORD).status_code == 302


def test_successful_sign_in_clears_earlier_failures(app: Flask, world) -> None:
    client = app.test_client()
    for _ in range(MAX_FAILURES_PER_USER - 1):
        _login(client, "docent", "wrong password!")
    assert _login(client, "docent", PASSWORD).status_code == 302
    with app.app_context():
        assert db.session.query(LoginFailure).filter_by(username="docent").count() == 0


def test_sign_out_ends_the_session(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    token = csrf_token(client, "/nu")
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get("/nu").status_code == 302


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_a_copied_session_cookie_is_worthless_after_sign_out(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    copy = app.test_client()  # another browser, given the same cookie
    copy.set_cookie("session", _session_cookie(client))
    assert copy.get("/nu").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/nu")})
    assert copy.get("/nu").status_code == 302  # the row is gone: the copy is signed out too
    with app.app_context():
        assert db.session.query(DashboardSession).count() == 0


def test_signing_out_on_one_device_leaves_the_other_signed_in(app: Flask, world) -> None:
    phone, desktop = app.test_client(), app.test_client()
    sign_in(phone, "docent")
    sign_in(desktop, "docent")
    phone.post("/logout", data={"csrf_token": csrf_token(phone, "/nu")})
    assert phone.get("/nu").status_code == 302
    assert desktop.get("/nu").status_code == 200


def test_an_idle_session_ends_and_says_so(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    idle = app.config["LESFOCUS_DASHBOARD_IDLE_MINUTES"]
    with app.app_context():
        row = db.session.query(DashboardSession).one()
        # Used a minute ago: still signed in, and the last use is written again.
        row.last_seen_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    assert client.get("/nu").status_code == 200
    with app.app_context():
        row = db.session.query(DashboardSession).one()
        assert utcnow() - row.last_seen_at < timedelta(minutes=1)
        row.last_seen_at = utcnow() - timedelta(minutes=idle, seconds=5)
        db.session.commit()
    answer = client.get("/nu")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
    page = client.get("/login").get_data(as_text=True)
    assert f"Je bent afgemeld na {idle} minuten zonder activiteit" in page
    with app.app_context():
        assert db.session.query(DashboardSession).count() == 0


def test_a_session_cookie_without_a_session_row_is_signed_out(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    with app.app_context():
        db.session.query(DashboardSession).delete()  # as after an upgrade from release 1
        db.session.commit()
    assert client.get("/nu").status_code == 302


def test_sign_out_by_get_is_not_possible(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    assert client.get("/logout").status_code == 405
    assert client.get("/nu").status_code == 200


def test_changed_password_ends_other_sessions(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    with app.app_context():
        from server.passwords import hash_password
        person = db.session.get(Person, world.people["docent"])
        person.password_hash = hash_password("another password 123")
        db.session.commit()
    assert client.get("/nu").status_code == 302


def test_disabled_account_is_signed_out_and_cannot_sign_in(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    with app.app_context():
        db.session.get(Person, world.people["docent"]).active = False
        db.session.commit()
    assert client.get("/nu").status_code == 302
    assert _login(app.test_client(), "docent", PASSWORD).status_code == 401


# Targets that a browser takes to another host (it drops tabs and line breaks, reads a backslash as
# a slash, and resolves scheme-relative and absolute URLs), or that break the Location header.
_HOSTS = ("evil.example", "evil.example:8443", "127.0.0.1", "[::1]", "user@evil.example")
_ELSEWHERE = sorted({
    *(f"{lead}{host}/x" for host in _HOSTS for lead in (
        "//", "///", "////", "/\\", "\\\\", "\\/", "/\t/", "/\n/", "/\r/", "/\t\t/",
        "/\r\n/", " //", "\t//", "\n//", "\x00//", "/%2F", "/%2f", "/%5C", "/%5c",
        "/%09/", "/%0a/", "/%0D/", "/\u3000/", "/\u2215/")),
    *(f"{scheme}{host}/" for host in _HOSTS for scheme in (
        "https://", "http://", "HTTPS://", "ftp://", "http:/", "http:", "https:\\\\",
        " https://", "\thttp://")),
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<p>x</p>",
    "/nu\r\nSet-Cookie: planted=1", "/nu\nLocation: //evil.example/", "/nu<script>",
    "/nu\"onload=\"x", "/" + "a" * 5000, "", "nu", "?next=/nu", "#top",
})


@pytest.mark.parametrize("target", _ELSEWHERE)
def test_safe_next_refuses_every_target_off_this_site(target: str) -> None:
    assert safe_next(target, "/home") == "/home"


@pytest.mark.parametrize("target", ["/week", "/nu?lesson=3", "/leiding/audit?page=2#x",
                                    "/it/segments/4", "/nu/a%20b", "/", "/a:b@c"])
def test_safe_next_keeps_paths_of_this_site(target: str) -> None:
    assert safe_next(target, "/home") == target


@pytest.mark.parametrize("next_url, expected", [
    ("/week", "/week"), ("//evil.example/x", "/nu"), ("https://evil.example/", "/nu"),
    ("/\t/evil.example/", "/nu"), ("/\\evil.example/", "/nu"), ("/%09/evil.example/", "/nu"),
    ("/nu\nSet-Cookie: planted=1", "/nu"), ("/%2F/evil.example/", "/nu")])
def test_sign_in_returns_only_to_local_pages(app: Flask, world, next_url, expected) -> None:
    response = _login(app.test_client(), "docent", PASSWORD, next=next_url)
    assert response.status_code == 302
    assert response.headers["Location"] == expected


def test_session_cookie_is_httponly_and_samesite_lax(app: Flask, world) -> None:
    client = app.test_client()
    response = _login(client, "docent", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_interface_is_dutch_by_default_and_switches_to_english(app: Flask, world) -> None:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "Inloggen" in page and 'lang="nl"' in page
    sign_in(client, "docent")
    assert "Rest van de les" in client.get("/nu").get_data(as_text=True)
    token = csrf_token(client, "/nu")
    client.post("/language", data={"lang": "en", "csrf_token": token, "next": "/nu"})
    page = client.get("/nu").get_data(as_text=True)
    assert "Rest of the lesson" in page and 'lang="en"' in page
    with app.app_context():
        assert db.session.get(Person, world.people["docent"]).locale == "en"


def test_unknown_language_is_refused(app: Flask, world) -> None:
    client = app.test_client()
    response = client.post("/language", data={"lang": "fr", "csrf_token": csrf_token(client)})
    assert response.status_code == 400


def test_dashboard_session_may_read_the_api_but_not_write_through_it(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "ict")
    assert client.get("/api/v1/rooms").status_code == 200
    # Writes carry no CSRF token, so a cookie alone must not be enough for them.
    response = client.post("/api/v1/rooms", json={"code": "9.99"})
    assert response.status_code == 401
    assert app.test_client().get("/api/v1/rooms").status_code == 401


def test_many_failures_from_one_address_do_not_lock_out_other_usernames(app: Flask,
                                                                        world) -> None:
    # A school's NAT: one student's guesses must not keep the teachers at that address out.
    from server.throttle import MAX_FAILURES_PER_ADDRESS
    with app.app_context():
        now = utcnow()
        for index in range(MAX_FAILURES_PER_ADDRESS * 2):
            db.session.add(LoginFailure(username=f"guess{index}", remote_addr="127.0.0.1",
                                        at=now))
        db.session.commit()
    assert _login(app.test_client(), "leiding", PASSWORD).status_code == 302


@pytest.mark.parametrize("path", ["/login", "/does-not-exist"])
def test_html_pages_forbid_framing_and_foreign_scripts(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
