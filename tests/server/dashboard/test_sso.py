"""Sign-in with the school account (OpenID Connect, issue 15), at the HTTP level.

Against the real, certified `oidc-provider` (tests/support/oidc): a sign-in that works and lands
in the same server-side session as a password; sign-out there too; a tampered `state`; an
unknown identity (refused, or a teacher login when IT allows it); the provider's key rotation
(a restart makes a new `kid`; the cached JWKS is fetched again once); the provider down.
With forged ID tokens (tests/support/oidc_provider.ForgingProvider, keys the test holds served as
the provider's JWKS): another audience, expired, another nonce, signed by an unpublished key,
`alg: none` and HS256 with the client secret, another issuer, an unverified e-mail, a sign-in
cancelled at the provider, the e-mail only in UserInfo (signs in) or UserInfo of another `sub`,
the provider gone between the sign-in page and the token request; and a good forged token as
the control that the forging path signs in at all.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import sso
from server.extensions import db
from server.models import DashboardSession, Person, School, SsoProvider
from server.sealed import unseal
from tests.support.dashboard import PASSWORD, csrf_token
from tests.support.oidc_provider import (CLIENT_ID, CLIENT_SECRET, ForgingProvider,
                                         RealProvider, dev_sign_in, rsa_key)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CALLBACK = "http://lesfocus.test/login/sso/callback"


@pytest.fixture(scope="module")
def real_provider() -> Iterator[RealProvider]:
    provider = RealProvider([CALLBACK], ["http://lesfocus.test/login"]).start()
    yield provider
    provider.stop()


@pytest.fixture
def forger() -> Iterator[ForgingProvider]:
    provider = ForgingProvider().start()
    yield provider
    provider.stop()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    sso.forget_cached()
    yield
    sso.forget_cached()


def _add_provider(app: Flask, tmp_path: Path, name: str, issuer: str, *extra: str) -> None:
    secret = tmp_path / f"{name}.secret"
    secret.write_text(CLIENT_SECRET + "\n")
    result = app.test_cli_runner().invoke(args=[
        "sso", "add", name, "--issuer", issuer, "--client-id", CLIENT_ID,
        "--client-secret-file", str(secret), "--school", "test", *extra])
    assert result.exit_code == 0, result.output
    assert CLIENT_SECRET not in result.output


def _set_email(app: Flask, username: str, email: str) -> None:
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == username))
        person.email = email
        db.session.commit()


def _start(client, name: str) -> str:
    response = client.get(f"/login/sso/{name}")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def _callback(client, url: str):
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def _sessions(app: Flask, username: str) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(DashboardSession.id)).join(
            Person, Person.id == DashboardSession.person_id).where(Person.username == username))


def test_real_provider_signs_a_teacher_in_and_out(app: Flask, world, tmp_path: Path,
                                                   real_provider: RealProvider) -> None:
    _add_provider(app, tmp_path, "Schoolaccount", real_provider.issuer)
    _set_email(app, "docent", "Docent@School.test")  # stored as typed by an old release
    with app.app_context():  # the CLI sealed the secret; nothing else holds it in clear
        provider = db.session.scalar(select(SsoProvider))
        assert CLIENT_SECRET not in provider.client_secret
        assert unseal(provider.client_secret, sso.secret_context(provider)) == CLIENT_SECRET
        db.session.scalar(select(Person).where(Person.username == "docent")).email = \
            "docent@school.test"
        db.session.commit()
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "Inloggen met Schoolaccount" in page
    authorization = _start(client, "Schoolaccount")
    query = parse_qs(urlsplit(authorization).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    response = _callback(client, dev_sign_in(authorization, "docent", CALLBACK))
    assert response.status_code == 302 and response.headers["Location"].endswith("/nu")
    assert client.get("/nu").status_code == 200
    assert _sessions(app, "docent") == 1  # the same server-side session as a password's
    # Sign-out ends the session here and sends the browser to the provider's end_session.
    page = client.post("/logout", data={"csrf_token": csrf_token(client, "/nu")})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Uitloggen bij Schoolaccount" in text and real_provider.issuer + "/session/end" in text
    assert "id_token_hint=" in text
    assert _sessions(app, "docent") == 0
    assert client.get("/nu").status_code == 302


def test_a_tampered_state_signs_no_one_in(app: Flask, world, tmp_path: Path,
                                          real_provider: RealProvider) -> None:
    _add_provider(app, tmp_path, "Schoolaccount", real_provider.issuer)
    _set_email(app, "docent", "docent@school.test")
    client = app.test_client()
    callback = dev_sign_in(_start(client, "Schoolaccount"), "docent", CALLBACK)
    query = parse_qs(urlsplit(callback).query)
    tampered = callback.replace(query["state"][0], query["state"][0][:-2] + "xx")
    response = _callback(client, tampered)
    assert response.status_code == 400
    assert "niet in deze browser begonnen" in response.get_data(as_text=True)
    # The right state afterwards does not help: the sign-in it belonged to is spent.
    assert _callback(client, callback).status_code == 400
    assert _sessions(app, "docent") == 0


def test_an_unknown_school_account_is_refused_unless_it_may_create_teachers(
        app: Flask, world, tmp_path: Path, real_provider: RealProvider) -> None:
    _add_provider(app, tmp_path, "Schoolaccount", real_provider.issuer)
    client = app.test_client()
    response = _callback(client, dev_sign_in(_start(client, "Schoolaccount"), "nieuw",
                                             CALLBACK))
    assert response.status_code == 403
    assert "nieuw@school.test is niet bekend in lesfocus" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Person).where(Person.email == "nieuw@school.test")) \
            is None
        db.session.scalar(select(SsoProvider)).create_accounts = True
        db.session.commit()
    response = _callback(client, dev_sign_in(_start(client, "Schoolaccount"), "nieuw",
                                             CALLBACK))
    assert response.status_code == 302
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.email == "nieuw@school.test"))
        assert person.roles == ["teacher"] and person.password_hash is None
        assert person.school.slug == "test"


def test_a_rotated_provider_key_is_fetched_once_and_accepted(
        app: Flask, world, tmp_path: Path, real_provider: RealProvider) -> None:
    _add_provider(app, tmp_path, "Schoolaccount", real_provider.issuer)
    _set_email(app, "docent", "docent@school.test")
    client = app.test_client()
    first_kid = real_provider.kid
    assert _callback(client, dev_sign_in(_start(client, "Schoolaccount"), "docent",
                                         CALLBACK)).status_code == 302
    assert [key.kid for key in sso._jwks[real_provider.issuer + "/jwks"].keys] == [first_kid]
    real_provider.restart()  # same issuer, a new signing key (the next tests use it too)
    assert real_provider.kid != first_kid
    client = app.test_client()
    assert _callback(client, dev_sign_in(_start(client, "Schoolaccount"), "docent",
                                         CALLBACK)).status_code == 302
    assert [key.kid for key in sso._jwks[real_provider.issuer + "/jwks"].keys] == \
        [real_provider.kid]


def test_a_provider_that_is_down_gets_a_clear_message(app: Flask, world,
                                                      tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{probe.getsockname()[1]}"
    _add_provider(app, tmp_path, "Schoolaccount", issuer)
    response = app.test_client().get("/login/sso/Schoolaccount")
    assert response.status_code == 502
    assert "Schoolaccount is nu niet bereikbaar" in response.get_data(as_text=True)


def test_password_sign_in_can_be_switched_off_per_school(app: Flask, world,
                                                         tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["school", "password-login", "test", "off"])
    assert refused.exit_code == 1 and "sso add" in refused.output  # would lock everyone out
    _add_provider(app, tmp_path, "Schoolaccount", "https://127.0.0.1:1/tenant/v2.0")
    assert runner.invoke(args=["school", "password-login", "test", "off"]).exit_code == 0
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
    assert f"Medewerkers van {school.name} melden zich alleen aan met het schoolaccount" in page
    response = client.post("/login", data={"username": "docent", "password": PASSWORD,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 403 and "alleen aan met het schoolaccount" in \
        response.get_data(as_text=True)
    assert _sessions(app, "docent") == 0
    api = client.post("/api/v1/auth/token", json={"username": "docent", "password": PASSWORD})
    assert api.status_code == 403
    # A wrong password still reads as a wrong password (it tells a guesser nothing new).
    wrong = client.post("/login", data={"username": "docent", "password": "wrong password!",
                                        "csrf_token": csrf_token(client)})
    assert wrong.status_code == 401


FORGED_CASES = ("good", "audience", "expired", "nonce", "issuer", "unpublished key", "alg none",
                "hs256 with the secret", "unverified email", "cancelled at the provider",
                "email in userinfo only", "userinfo of another subject",
                "provider down at the token step")
# What the log line's English detail names for each refusal: the check that was meant.
FORGED_REASONS = {"audience": "(aud)", "expired": "ExpiredTokenError", "nonce": "(nonce)",
                  "issuer": "(iss)", "unpublished key": "signature", "alg none": "'none'",
                  "hs256 with the secret": "'HS256'",
                  "userinfo of another subject": "another subject"}


def test_forged_id_tokens(app: Flask, world, tmp_path: Path, forger: ForgingProvider,
                          caplog: pytest.LogCaptureFixture) -> None:
    # One app for every case (each case a fresh browser and fresh caches): "good" first, the
    # control that a forged token that passes every check does sign in.
    _add_provider(app, tmp_path, "Forge", forger.issuer)
    _set_email(app, "docent", "docent@school.test")
    for case in FORGED_CASES:
        sso.forget_cached()
        caplog.clear()
        forger.overrides, forger.signing_key = {}, None
        forger.id_token = ForgingProvider.id_token.__get__(forger)  # type: ignore[method-assign]
        if case == "audience":
            forger.overrides = {"aud": "another-client"}
        elif case == "expired":
            forger.overrides = {"exp": 1_000_000_000 - 600, "iat": 1_000_000_000 - 900}
        elif case == "nonce":
            forger.overrides = {"nonce": "a-nonce-of-another-sign-in"}
        elif case == "issuer":
            forger.overrides = {"iss": "https://login.example.invalid"}
        elif case == "unpublished key":
            forger.signing_key = rsa_key("not-published")
        elif case == "unverified email":
            forger.overrides = {"email_verified": False}
        elif case == "email in userinfo only":
            forger.overrides = {"email": None, "email_verified": None}
            forger.userinfo = {"sub": "s-1", "email": "Docent@school.test",
                               "email_verified": True}
        elif case == "userinfo of another subject":
            forger.overrides = {"email": None, "email_verified": None}
            forger.userinfo = {"sub": "someone-else", "email": "docent@school.test"}
        client = app.test_client()
        authorization = _start(client, "Forge")
        nonce = parse_qs(urlsplit(authorization).query)["nonce"][0]
        if case == "alg none":
            token = _unsigned(forger, nonce)
            forger.id_token = lambda nonce: token  # type: ignore[method-assign]
        elif case == "hs256 with the secret":
            token = _hs256(forger, nonce)
            forger.id_token = lambda nonce: token  # type: ignore[method-assign]
        fetches = forger.jwks_fetches
        query = forger.authorize(authorization)
        if case == "provider down at the token step":  # the last case: it stays down
            forger.stop()
        if case == "cancelled at the provider":  # what a provider sends when one says no
            query = "error=access_denied&" + query.split("&", 1)[1]
        response = _callback(client, f"{CALLBACK}?{query}")
        text = response.get_data(as_text=True)
        if case == "good":
            assert response.status_code == 302 and _sessions(app, "docent") == 1, case
            continue
        if case == "email in userinfo only":  # a provider that puts it there: signed in
            assert response.status_code == 302 and _sessions(app, "docent") == 2, case
            continue
        assert _sessions(app, "docent") == len(
            {"good", "email in userinfo only"} & set(FORGED_CASES[:FORGED_CASES.index(case)])
        ), case  # only the sign-ins meant to work made sessions
        if case == "unverified email":
            assert response.status_code == 403 and "niet bekend in lesfocus" in text, case
            continue
        if case == "provider down at the token step":
            assert response.status_code == 502 and "is nu niet bereikbaar" in text, case
            continue
        if case == "cancelled at the provider":
            assert response.status_code == 400 and "heeft je niet aangemeld" in text, case
            continue
        assert response.status_code == 400, (case, text)
        assert "dat lesfocus niet kan vertrouwen" in text, case
        assert any(FORGED_REASONS[case] in record.getMessage() for record in caplog.records), \
            (case, caplog.text)
        if case == "unpublished key":
            assert forger.jwks_fetches == fetches + 2  # once, then once more for the unknown kid


def _unsigned(forger: ForgingProvider, nonce: str) -> str:
    import base64
    import json
    import time

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    now = int(time.time())
    return part({"alg": "none"}) + "." + part({
        "iss": forger.issuer, "aud": CLIENT_ID, "sub": "s-1", "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "docent@school.test"}) + "."


def _hs256(forger: ForgingProvider, nonce: str) -> str:
    import time

    from joserfc import jwt
    from joserfc.jwk import OctKey
    now = int(time.time())
    return jwt.encode({"alg": "HS256"}, {
        "iss": forger.issuer, "aud": CLIENT_ID, "sub": "s-1", "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "docent@school.test"}, OctKey.import_key(CLIENT_SECRET))


def test_the_it_page_adds_and_removes_a_provider_without_showing_its_secret(
        app: Flask, world) -> None:
    from tests.support.dashboard import sign_in
    client = app.test_client()
    sign_in(client, "ict")
    token = csrf_token(client, "/it/aanmelden")
    response = client.post("/it/aanmelden", data={
        "csrf_token": token, "name": "Microsoft", "issuer":
        "https://127.0.0.1:1/00000000-0000-0000-0000-000000000000/v2.0",
        "client_id": "abc-123", "client_secret": "very-secret-value-xyz",
        "username_claim": "upn"}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "Microsoft" in text and "abc-123" in text
    assert "very-secret-value-xyz" not in text and "http://lesfocus.test/login/sso/callback" in text
    assert "Inloggen met Microsoft" in app.test_client().get("/login").get_data(as_text=True)
    bad = client.post("/it/aanmelden", data={"csrf_token": token, "name": "X", "issuer": "ftp:x",
                                             "client_id": "a", "client_secret": "b",
                                             "username_claim": "email"})
    assert bad.status_code == 400
    with app.app_context():
        provider_id = db.session.scalar(select(SsoProvider.id))
    client.post(f"/it/aanmelden/{provider_id}/verwijderen", data={"csrf_token": token})
    with app.app_context():
        assert db.session.scalar(select(func.count(SsoProvider.id))) == 0


def test_a_sign_in_left_at_the_provider_too_long_is_not_finished(
        app: Flask, world, tmp_path: Path, forger: ForgingProvider) -> None:
    _add_provider(app, tmp_path, "Forge", forger.issuer)
    _set_email(app, "docent", "docent@school.test")
    client = app.test_client()
    authorization = _start(client, "Forge")
    with client.session_transaction() as session:
        session["sso_pending"] = {**session["sso_pending"],
                                  "started": session["sso_pending"]["started"]
                                  - sso.PENDING_SECONDS - 5}
    response = _callback(client, f"{CALLBACK}?{forger.authorize(authorization)}")
    assert response.status_code == 400 and "duurde te lang" in response.get_data(as_text=True)
    assert _sessions(app, "docent") == 0


def test_cli_emails_are_unique_in_any_case_and_secrets_never_listed(
        app: Flask, world, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    made = runner.invoke(args=["user", "add", "smit", "--school", "test", "--role", "teacher",
                               "--email", " P.Smit@School.TEST ", "--no-password"])
    assert made.exit_code == 0, made.output
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == "smit"))
        assert person.email == "p.smit@school.test" and person.password_hash is None
    again = runner.invoke(args=["user", "add", "smit2", "--school", "test", "--role", "teacher",
                                "--email", "p.smit@school.test", "--no-password"])
    assert again.exit_code == 2 and "belongs to another person" in again.output
    assert runner.invoke(args=["user", "add", "x1", "--school", "test", "--role", "teacher",
                               "--no-password"]).exit_code == 2  # --no-password needs --email
    taken = runner.invoke(args=["user", "email", "docent", "P.SMIT@school.test"])
    assert taken.exit_code == 1 and "belongs to" in taken.output
    assert runner.invoke(args=["user", "email", "docent", "d@school.test"]).exit_code == 0
    _add_provider(app, tmp_path, "Entra", "https://127.0.0.1:1/t/v2.0",
                  "--username-claim", "upn")
    listed = runner.invoke(args=["sso", "list"])
    assert '"username_claim": "upn"' in listed.output and CLIENT_SECRET not in listed.output
    bad = runner.invoke(args=["sso", "add", "Plain", "--issuer", "http://idp.example.org",
                              "--client-id", "x", "--client-secret-file",
                              str(tmp_path / "Entra.secret")])
    assert bad.exit_code == 1 and "https:// is required" in bad.output
    assert runner.invoke(args=["sso", "remove", "entra"]).exit_code == 0
    assert runner.invoke(args=["sso", "list"]).output == ""


def test_it_gives_a_person_an_email_address_on_the_people_page(app: Flask, world) -> None:
    from tests.support.dashboard import sign_in
    client = app.test_client()
    sign_in(client, "ict")
    token = csrf_token(client, "/it/mensen")
    made = client.post("/it/mensen", data={"csrf_token": token, "username": "devries",
                                           "display_name": "De Vries", "roles": "teacher",
                                           "email": "A.deVries@School.test"})
    assert made.status_code == 302, made.get_data(as_text=True)  # no password needed with one
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == "devries"))
        assert person.email == "a.devries@school.test" and person.password_hash is None
    taken = client.post(f"/it/mensen/{world.people['docent']}", data={
        "csrf_token": token, "username": "docent", "display_name": "Docent",
        "roles": "teacher", "active": "on", "email": "a.devries@SCHOOL.test"})
    assert taken.status_code == 400
    assert "Dit e-mailadres hoort bij iemand anders" in taken.get_data(as_text=True)
