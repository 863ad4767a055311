"""The agent's side of the API: enrolment, request tokens, long-polled policy, heartbeat."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta

import jwt
import pytest
from tests.support.api import (AUDIENCE, add_lesson, add_person, bearer, count_rows, minutes,
                         new_gateway, now_utc)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from server.app import create_app
from server.extensions import db
from server.gateways import issue_enrollment_token
from server.models import AuditEvent, EnrollmentToken, Gateway, GatewayCounter
from server.tokens import public_jwk, public_key_pem


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- enrolment ----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["jwk", "pem"])
def test_enrolment_stores_the_agent_key_and_returns_the_server_keys(app, client, form):
    gateway_id, token = new_gateway(app, "gw")
    key = Ed25519PrivateKey.generate()
    public = public_jwk(key.public_key()) if form == "jwk" else public_key_pem(key.public_key())
    response = client.post("/api/v1/gateways/enroll", json={"token": token, "public_key": public})
    assert response.status_code == 201
    body = response.get_json()
    assert body["gateway_id"] == gateway_id
    assert body["server_keys"] == client.get("/api/v1/keys").get_json()
    with app.app_context():
        gateway = db.session.get(Gateway, gateway_id)
        assert gateway.public_key_pem == public_key_pem(key.public_key())
        assert gateway.enrolled_at is not None


def test_enrolment_token_works_only_once(app, client):
    _, token = new_gateway(app, "gw")
    first = Ed25519PrivateKey.generate().public_key()
    second = Ed25519PrivateKey.generate().public_key()
    assert client.post("/api/v1/gateways/enroll",
                       json={"token": token, "public_key": public_jwk(first)}).status_code == 201
    audit_rows = count_rows(app, AuditEvent)
    again = client.post("/api/v1/gateways/enroll",
                        json={"token": token, "public_key": public_jwk(second)})
    assert again.status_code == 403
    assert again.get_json()["field"] == "token"
    assert "used already" in again.get_json()["message"]
    with app.app_context():
        stored = db.session.scalar(select(Gateway.public_key_pem))
    assert stored == public_key_pem(first)  # the second key was not written
    assert count_rows(app, AuditEvent) == audit_rows


def test_a_new_enrolment_token_retires_the_older_unused_ones(app, client):
    gateway_id, older = new_gateway(app, "gw")
    with app.app_context():
        newer = issue_enrollment_token(db.session.get(Gateway, gateway_id), actor="test")
        db.session.commit()
    key = Ed25519PrivateKey.generate().public_key()
    refused = client.post("/api/v1/gateways/enroll",
                          json={"token": older, "public_key": public_jwk(key)})
    assert refused.status_code == 403 and refused.get_json()["field"] == "token"
    assert "newer one was issued" in refused.get_json()["message"]
    with app.app_context():
        assert db.session.scalar(select(Gateway.public_key_pem)) is None
    assert client.post("/api/v1/gateways/enroll",
                       json={"token": newer, "public_key": public_jwk(key)}).status_code == 201


def test_expired_enrolment_token_is_refused_and_nothing_is_written(app, client):
    gateway_id, token = new_gateway(app, "gw")
    with app.app_context():
        db.session.execute(update(EnrollmentToken).values(
            expires_at=now_utc() - timedelta(seconds=1)))
        db.session.commit()
    response = client.post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(Ed25519PrivateKey.generate().public_key())})
    assert response.status_code == 403
    assert "expired" in response.get_json()["message"]
    with app.app_context():
        assert db.session.get(Gateway, gateway_id).public_key_pem is None
        assert db.session.scalar(select(EnrollmentToken.used_at)) is None


@pytest.mark.parametrize("body, field", [
    ({"token": "lfe_unknown", "public_key": "KEY"}, "token"),
    ({"public_key": "KEY"}, "token"),
    ({"token": 5, "public_key": "KEY"}, "token"),
    ({"token": "TOKEN"}, "public_key"),
    ({"token": "TOKEN", "public_key": "not a key"}, "public_key"),
    ({"token": "TOKEN", "public_key": {"kty": "RSA", "n": "x", "e": "AQAB"}}, "public_key"),
    ({"token": "TOKEN", "public_key": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}},
     "public_key"),
    ({"token": "TOKEN", "public_key": ["a"]}, "public_key"),
])
def test_bad_enrolment_is_refused_naming_the_field_and_keeps_the_token_unused(app, client, body,
                                                                             field):
    gateway_id, token = new_gateway(app, "gw")
    good_key = public_jwk(Ed25519PrivateKey.generate().public_key())
    body = {k: (token if v == "TOKEN" else good_key if v == "KEY" else v) for k, v in body.items()}
    response = client.post("/api/v1/gateways/enroll", json=body)
    assert 400 <= response.status_code < 500
    assert response.get_json()["field"] == field
    with app.app_context():
        assert db.session.get(Gateway, gateway_id).public_key_pem is None
        assert db.session.scalar(select(EnrollmentToken.used_at)) is None
    # The token still works after the refused attempt.
    retry = client.post("/api/v1/gateways/enroll", json={"token": token, "public_key": good_key})
    assert retry.status_code == 201


# The 8 points of small order of edwards25519 under every 32-byte encoding OpenSSL takes for
# them (canonical, y + p, and the sign bit set where x = 0), and non-canonical encodings: keys
# that many signatures verify under, or that name a point twice. Worked out from RFC 8032 §5.1.
SMALL_ORDER_OR_NON_CANONICAL = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    # y = p + 2 .. y = 2^255 - 1: no canonical point has these.
    "efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("encoding", SMALL_ORDER_OR_NON_CANONICAL)
@pytest.mark.parametrize("form", ["jwk", "pem"])
def test_enrolment_refuses_keys_of_small_order_and_non_canonical_keys(app, client, encoding,
                                                                      form):
    gateway_id, token = new_gateway(app, "gw")
    raw = bytes.fromhex(encoding)
    if form == "jwk":
        key = {"kty": "OKP", "crv": "Ed25519",
               "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    else:  # the same 32 bytes in a SubjectPublicKeyInfo
        prefix = bytes.fromhex("302a300506032b6570032100")
        key = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(prefix + raw).decode()
               + "\n-----END PUBLIC KEY-----\n")
    response = client.post("/api/v1/gateways/enroll", json={"token": token, "public_key": key})
    assert response.status_code == 400
    assert response.get_json()["field"] == "public_key"
    assert "refused" in response.get_json()["message"] or "curve" in \
        response.get_json()["message"]
    with app.app_context():
        assert db.session.get(Gateway, gateway_id).public_key_pem is None
        assert db.session.scalar(select(EnrollmentToken.used_at)) is None


def test_enrolment_takes_real_keys_in_both_forms(app, client):
    for n in range(40):
        gateway_id, token = new_gateway(app, f"gw{n}")
        public = Ed25519PrivateKey.generate().public_key()
        key = public_jwk(public) if n % 2 else public_key_pem(public)
        response = client.post("/api/v1/gateways/enroll",
                               json={"token": token, "public_key": key})
        assert response.status_code == 201, response.get_json()


def test_new_enrolment_token_re_enrols_with_a_new_key(app, client, enrolled):
    agent = enrolled("gw")
    with app.app_context():
        gateway = db.session.get(Gateway, agent.gateway_id)
        from server.gateways import issue_enrollment_token
        token = issue_enrollment_token(gateway, actor="test", reenrol=True)
        db.session.commit()
    new_key = Ed25519PrivateKey.generate()
    assert client.post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(new_key.public_key())}).status_code == 201
    old = client.get("/api/v1/gateways/self/policy", headers=agent.headers())
    assert old.status_code == 401
    agent.key = new_key
    assert client.get("/api/v1/gateways/self/policy", headers=agent.headers()).status_code == 200


# --- agent tokens -------------------------------------------------------------------------------

def _forged_none(agent) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = _b64(json.dumps({"sub": agent.gateway_id, "aud": AUDIENCE, "iat": now,
                              "exp": now + 60}).encode())
    return f"{header}.{claims}."


def _hs256_with_public_key(agent) -> str:
    # The classic key-confusion attack: HMAC keyed with the public key the server holds.
    pem = agent.key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = _b64(json.dumps({"sub": agent.gateway_id, "aud": AUDIENCE, "iat": now,
                              "exp": now + 60}).encode())
    signature = hmac.new(pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _tampered(agent) -> str:
    token = agent.token()
    head, claims, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    payload["exp"] += 60
    return f"{head}.{_b64(json.dumps(payload).encode())}.{sig}"


BAD_TOKENS = {
    "forged with a random key": lambda a, o: a.token(key=Ed25519PrivateKey.generate()),
    "signed by another gateway's key": lambda a, o: a.token(key=o.key),
    "other gateway's token naming this gateway": lambda a, o: o.token(sub=a.gateway_id),
    "expired": lambda a, o: a.token(now=time.time() - 600, lifetime=120),
    "lifetime over 300 s": lambda a, o: a.token(lifetime=301 + 30),
    "lifetime over 300 s without iat": lambda a, o: jwt.encode(
        {"sub": a.gateway_id, "aud": AUDIENCE, "exp": int(time.time()) + 3600}, a.key,
        algorithm="EdDSA"),
    "alg none": lambda a, o: _forged_none(a),
    "HS256 keyed with the public key": lambda a, o: _hs256_with_public_key(a),
    "tampered claims": lambda a, o: _tampered(a),
    "wrong audience": lambda a, o: a.token(aud="https://evil.example"),
    "no exp": lambda a, o: jwt.encode({"sub": a.gateway_id, "aud": AUDIENCE}, a.key,
                                      algorithm="EdDSA"),
    "no aud": lambda a, o: jwt.encode({"sub": a.gateway_id, "exp": int(time.time()) + 60},
                                      a.key, algorithm="EdDSA"),
    "no sub": lambda a, o: jwt.encode({"aud": AUDIENCE, "exp": int(time.time()) + 60}, a.key,
                                      algorithm="EdDSA"),
    "unknown gateway": lambda a, o: a.token(sub="00000000-0000-0000-0000-000000000000"),
    "not a JWT": lambda a, o: "garbage",
    "an API token of a person": lambda a, o: "API",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_agent_endpoints_refuse_bad_tokens_with_401(app, client, enrolled, case):
    agent, other = enrolled("gw-a"), enrolled("gw-b")
    token = BAD_TOKENS[case](agent, other)
    if token == "API":
        add_person(app, "it", "it_admin")
        token = bearer(client, "it")["Authorization"].split()[1]
    headers = {"Authorization": f"Bearer {token}"}
    responses = [client.get("/api/v1/gateways/self/policy", headers=headers),
                 client.post("/api/v1/gateways/self/heartbeat", headers=headers,
                             json={"policy_version": "x", "agent_version": "evil"})]
    for response in responses:
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert set(response.get_json()) >= {"error", "message"}
    with app.app_context():
        assert db.session.get(Gateway, agent.gateway_id).agent_version is None


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"Authorization": "Bearer "}])
def test_agent_endpoint_without_a_bearer_token_is_401(client, headers):
    response = client.get("/api/v1/gateways/self/policy", headers=headers)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("audience", ["http://localhost", "http://localhost/",
                                      "http://evil.example", AUDIENCE])
def test_without_public_url_no_agent_request_is_served_whatever_the_host_header(
        app, client, enrolled, audience):
    # Issue 13, item 7: the audience once followed the Host header, which the caller chooses.
    agent = enrolled("gw")
    app.config["LESFOCUS_PUBLIC_URL"] = None
    for host in ("localhost", "evil.example"):
        refused = client.get("/api/v1/gateways/self/policy", base_url=f"http://{host}",
                             headers=agent.headers(aud=audience))
        assert refused.status_code == 503
        assert "LESFOCUS_PUBLIC_URL" in refused.get_json()["message"]


def test_the_audience_is_the_public_url_with_or_without_its_final_slash(client, enrolled):
    agent = enrolled("gw")
    for audience, status in ((AUDIENCE, 200), (AUDIENCE + "/", 200),
                             ("http://localhost", 401), ("https://lesfocus.test", 401),
                             (AUDIENCE + "/api", 401)):
        answer = client.get("/api/v1/gateways/self/policy", base_url="http://localhost",
                            headers=agent.headers(aud=audience))
        assert answer.status_code == status, (audience, answer.get_json())


# --- policy -------------------------------------------------------------------------------------

def test_policy_is_signed_for_this_gateway_with_an_etag(app, client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["1.01"])
    response = client.get("/api/v1/gateways/self/policy", headers=agent.headers())
    assert response.status_code == 200
    body = response.get_json()
    assert response.headers["ETag"] == f'"{body["version"]}"'
    jwks = client.get("/api/v1/keys").get_json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(body["policy"], key, algorithms=["EdDSA"], audience=agent.gateway_id)
    assert claims["ver"] == body["version"]
    assert [s["id"] for s in claims["segments"]] == agent.segment_ids


def _enrollment_of(client, agent):
    from agent.policy_source import Enrollment
    return Enrollment(server_url=AUDIENCE, gateway_id=agent.gateway_id,
                      server_keys=tuple(client.get("/api/v1/keys").get_json()["keys"]))


def test_agents_of_the_first_release_get_format_1_and_read_what_new_agents_read(app, client,
                                                                                enrolled):
    # Rolling upgrade: the server is new, some gateways still run the first release's agent,
    # which asks without `format` and knows only format 1.0.
    from agent.policy_source import verify_policy
    from lesfocus_policy import blocked_at
    from tests.support import release_1_agent
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["1.01"])
    start = now_utc().replace(microsecond=0) - timedelta(minutes=10)
    add_lesson(app, "1.01", start, start + timedelta(minutes=50))
    add_lesson(app, "1.01", start + timedelta(minutes=50), start + timedelta(minutes=100))
    old = client.get("/api/v1/gateways/self/policy", headers=agent.headers()).get_json()
    new = client.get("/api/v1/gateways/self/policy?format=2", headers=agent.headers()).get_json()
    assert old["version"] == new["version"]
    enrollment = _enrollment_of(client, agent)
    legacy = release_1_agent.verify_policy(old["policy"], enrollment)
    current = verify_policy(new["policy"], enrollment)
    assert legacy.version == current.version and current.format == "2.0"
    for minute in (0, 20, 45, 60, 95, 120):
        at = start + timedelta(minutes=minute)
        assert [s.blocked for s in blocked_at(legacy, at).segments] == [
            s.blocked for s in blocked_at(current, at).segments], minute
    assert blocked_at(current, start + timedelta(minutes=20)).segments[0].blocked
    # The first release's agent polls with the version it has and waits; it is not re-sent.
    unchanged = client.get("/api/v1/gateways/self/policy",
                           headers={**agent.headers(), "If-None-Match": f'"{old["version"]}"'})
    assert unchanged.status_code == 304


@pytest.mark.parametrize("fmt", ["3", "1.0", "two", "x" * 500])
def test_an_unknown_policy_format_is_refused_naming_the_field(client, enrolled, fmt):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    response = client.get(f"/api/v1/gateways/self/policy?format={fmt}", headers=agent.headers())
    assert response.status_code == 400
    assert response.get_json()["field"] == "format"
    assert "format=2" in response.get_json()["message"]


def test_a_policy_above_the_documented_maximum_is_refused_to_the_agent_and_logged(
        app, client, enrolled, monkeypatch, caplog):
    import server.policy
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    monkeypatch.setattr(server.policy, "MAX_POLICY_BYTES", 200)
    response = client.get("/api/v1/gateways/self/policy?format=2", headers=agent.headers())
    assert response.status_code == 503
    message = response.get_json()["message"]
    assert "more than the 200 bytes agents read" in message and "1 segments" in message
    assert message in caplog.text


def test_policy_with_current_etag_and_no_wait_is_304(client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    version = client.get("/api/v1/gateways/self/policy", headers=agent.headers()).get_json()[
        "version"]
    response = client.get("/api/v1/gateways/self/policy",
                          headers={**agent.headers(), "If-None-Match": f'"{version}"'})
    assert response.status_code == 304
    assert response.headers["ETag"] == f'"{version}"'


def test_long_poll_answers_304_when_nothing_changes_within_the_wait(client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    version = client.get("/api/v1/gateways/self/policy", headers=agent.headers()).get_json()[
        "version"]
    started = time.monotonic()
    response = client.get("/api/v1/gateways/self/policy?wait=1",
                          headers={**agent.headers(), "If-None-Match": f'"{version}"'})
    assert response.status_code == 304
    assert 0.9 <= time.monotonic() - started < 5


def test_stale_etag_gets_the_policy_at_once(client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    response = client.get("/api/v1/gateways/self/policy?wait=30",
                          headers={**agent.headers(), "If-None-Match": '"old-version"'})
    assert response.status_code == 200


@pytest.mark.parametrize("wait", ["abc", "1.5"])
def test_long_poll_wait_must_be_a_number(client, enrolled, wait):
    agent = enrolled("gw")
    response = client.get(f"/api/v1/gateways/self/policy?wait={wait}", headers=agent.headers())
    assert response.status_code == 400
    assert response.get_json()["field"] == "wait"


@pytest.mark.slow
def test_grant_wakes_a_waiting_agent_at_once(app, client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    teacher = add_person(app, "jans", "teacher", teacher_code="JANS")
    start = now_utc() - minutes(10)
    lesson_id = add_lesson(app, "2.14", start, start + minutes(50), teacher_id=teacher)
    first = client.get("/api/v1/gateways/self/policy", headers=agent.headers()).get_json()
    result: dict[str, object] = {}

    def poll() -> None:
        with app.test_client() as poller:
            began = time.monotonic()
            response = poller.get("/api/v1/gateways/self/policy?wait=20",
                                  headers={**agent.headers(),
                                           "If-None-Match": f'"{first["version"]}"'})
            result["status"] = response.status_code
            result["version"] = (response.get_json() or {}).get("version")
            result["done"] = time.monotonic()
            result["began"] = began

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # the poll is waiting now
    granted_at = time.monotonic()
    grant = client.post("/api/v1/exceptions", headers=bearer(client, "jans"),
                        json={"scope": "lesson", "lesson_id": lesson_id, "minutes": 15})
    assert grant.status_code == 201, grant.get_json()
    thread.join(timeout=20)
    assert result["status"] == 200
    assert result["version"] != first["version"]
    assert result["done"] - granted_at < 1.5  # woken by the grant, not by the 20 s timeout


@pytest.mark.slow
def test_change_from_another_app_is_seen_by_the_change_feed(app, client, enrolled, database_url,
                                                            tmp_path):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    start = now_utc() + minutes(60)
    first = client.get("/api/v1/gateways/self/policy", headers=agent.headers()).get_json()
    result: dict[str, int] = {}

    def poll() -> None:
        with app.test_client() as poller:
            result["status"] = poller.get(
                "/api/v1/gateways/self/policy?wait=10",
                headers={**agent.headers(), "If-None-Match": f'"{first["version"]}"'}
            ).status_code

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    # Written by a second app on the same database, as another server process would: seen
    # through LISTEN/NOTIFY on PostgreSQL and the change log on SQLite.
    other = create_app({"INSTANCE_PATH": str(tmp_path / "other"), "DATABASE_URL": database_url,
                        "SECRET_KEY": "test-secret-key", "TESTING": True})
    try:
        add_lesson(other, "2.14", start, start + minutes(50))
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
    began = time.monotonic()
    thread.join(timeout=15)
    assert result["status"] == 200
    assert time.monotonic() - began < 5


@pytest.mark.slow
def test_second_long_poll_of_a_gateway_replaces_the_first_at_once(app, client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    other = enrolled("gw-other", cidrs=["10.2.0.0/24"])
    versions = {a.gateway_id: client.get("/api/v1/gateways/self/policy",
                                         headers=a.headers()).get_json()["version"]
                for a in (agent, other)}
    results: dict[str, tuple[int, float, dict | None]] = {}

    def poll(name: str, who, wait: int) -> None:
        with app.test_client() as poller:
            response = poller.get(f"/api/v1/gateways/self/policy?wait={wait}", headers={
                **who.headers(), "If-None-Match": f'"{versions[who.gateway_id]}"'})
            results[name] = (response.status_code, time.monotonic(), response.get_json())

    first = threading.Thread(target=poll, args=("first", agent, 20))
    bystander = threading.Thread(target=poll, args=("bystander", other, 3))
    first.start()
    bystander.start()
    time.sleep(0.5)  # both wait now
    replaced_at = time.monotonic()
    second = threading.Thread(target=poll, args=("second", agent, 2))
    second.start()
    first.join(timeout=10)
    status, done, body = results["first"]
    assert status == 409
    assert "replaced" in body["message"]
    assert done - replaced_at < 1.5  # answered at once, not after its 20 s
    second.join(timeout=10)
    bystander.join(timeout=10)
    assert results["second"][0] == 304  # the newer poll waited out its own wait
    assert results["second"][1] - replaced_at >= 1.9
    assert results["bystander"][0] == 304  # another gateway's poll is left alone
    assert results["bystander"][1] - replaced_at >= 2.4


# --- heartbeat ----------------------------------------------------------------------------------

def _hour(offset: int = 0) -> str:
    hour = now_utc().replace(minute=0, second=0) + timedelta(hours=offset)
    return hour.isoformat().replace("+00:00", "Z")


def test_heartbeat_records_state_and_adds_counters(app, client, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    seg = agent.segment_ids[0]
    counters = [{"segment_id": seg, "service": "tiktok", "hour": _hour(), "count": 3},
                {"segment_id": seg, "service": "instagram", "hour": _hour(-1), "count": 1}]
    for _ in range(2):
        response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                               json={"policy_version": "v1", "agent_version": "0.1.0",
                                     "counters": counters})
        assert response.status_code == 200, response.get_json()
    with app.app_context():
        gateway = db.session.get(Gateway, agent.gateway_id)
        assert gateway.policy_version_applied == "v1"
        assert gateway.agent_version == "0.1.0"
        assert gateway.last_contact_at is not None
        rows = {(c.service_id, c.count) for c in db.session.scalars(select(GatewayCounter))}
    assert rows == {("tiktok", 6), ("instagram", 2)}


def test_policy_applied_at_is_set_by_the_heartbeat_that_first_reports_a_version(
        app, client, enrolled, monkeypatch):
    import server.api.gateways as gateways_api
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    add_person(app, "it", "it_admin")
    start = now_utc().replace(microsecond=0)
    beats = [("v1", start), ("v1", start + minutes(1)), (None, start + minutes(2)),
             ("v2", start + minutes(3)), ("v2", start + minutes(4))]
    applied_at = []
    for version, server_time in beats:
        monkeypatch.setattr(gateways_api, "utcnow", lambda at=server_time: at)
        body = {"agent_version": "2.0.0"} | ({"policy_version": version} if version else {})
        response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                               json=body)
        assert response.status_code == 200, response.get_json()
        with app.app_context():
            gateway = db.session.get(Gateway, agent.gateway_id)
            assert gateway.last_contact_at == server_time
            applied_at.append(gateway.policy_applied_at)
    assert applied_at == [start, start, start, start + minutes(3), start + minutes(3)]
    (listed,) = client.get("/api/v1/gateways", headers=bearer(client, "it")).get_json()["gateways"]
    assert listed["policy_version_applied"] == "v2"
    assert listed["policy_applied_at"] == (start + minutes(3)).isoformat().replace("+00:00", "Z")


def test_heartbeat_skips_counters_of_other_gateways_and_unknown_services(app, client, enrolled):
    agent = enrolled("gw-a", cidrs=["10.1.0.0/24"])
    other = enrolled("gw-b", cidrs=["10.2.0.0/24"])
    response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(), json={
        "counters": [
            {"segment_id": other.segment_ids[0], "service": "tiktok", "hour": _hour(),
             "count": 1},
            {"segment_id": agent.segment_ids[0], "service": "no-such-service",
             "hour": _hour(), "count": 1},
            {"segment_id": agent.segment_ids[0], "service": "tiktok", "hour": _hour(5),
             "count": 1}]})
    assert response.status_code == 200
    assert response.get_json()["skipped"] == 3
    assert count_rows(app, GatewayCounter) == 0


@pytest.mark.parametrize("counters, field", [
    ("many", "counters"),
    ([5], "counters[0]"),
    ([{"segment_id": "1", "service": "tiktok", "hour": "H", "count": 1}],
     "counters[0].segment_id"),
    ([{"segment_id": "SEG", "service": 7, "hour": "H", "count": 1}], "counters[0].service"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "yesterday", "count": 1}],
     "counters[0].hour"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "2026-11-23T10:30:00Z", "count": 1}],
     "counters[0].hour"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "H", "count": -1}],
     "counters[0].count"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "H", "count": 1.5}],
     "counters[0].count"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "H", "count": True}],
     "counters[0].count"),
    ([{"segment_id": "SEG", "service": "tiktok", "hour": "H", "count": 1}] * 10_001, "counters"),
])
def test_malformed_heartbeat_is_400_with_field_and_writes_nothing(app, client, enrolled,
                                                                  counters, field):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    good = {"segment_id": agent.segment_ids[0], "service": "tiktok", "hour": _hour(), "count": 2}
    if isinstance(counters, list):
        counters = [good] + [
            {k: (agent.segment_ids[0] if v == "SEG" else _hour() if v == "H" else v)
             for k, v in c.items()} if isinstance(c, dict) else c for c in counters]
        field = field.replace("[0]", "[1]") if field != "counters" else field
    response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                           json={"agent_version": "9", "counters": counters})
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert count_rows(app, GatewayCounter) == 0
    with app.app_context():
        assert db.session.get(Gateway, agent.gateway_id).agent_version is None


def test_heartbeat_body_over_the_limit_is_413(app, client, enrolled):
    agent = enrolled("gw")
    app.config["LESFOCUS_MAX_JSON_BODY"] = 1000
    response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                           json={"agent_version": "x" * 4100})
    assert response.status_code == 413
    assert response.get_json()["error"] == "Request Entity Too Large"



def test_long_waits_end_at_a_random_moment_of_their_last_sixth_short_ones_in_full():
    from server.api.gateways import _spread
    assert {_spread(w) for w in (1, 5, 29)} == {1.0, 5.0, 29.0}
    spread = [_spread(60) for _ in range(500)]
    assert all(50 <= s <= 60 for s in spread)
    assert max(spread) - min(spread) > 5  # they do drift apart
