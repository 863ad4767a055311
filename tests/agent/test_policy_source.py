"""Enrolment, policy verification and parsing, the on-disk store, and sync through failures."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import ConfigError, PolicyError, ServerError
from agent.policy_source import (
    ENROLLMENT_FILE, KEY_FILE, Enrollment, PolicySource, PolicyStore, Response, ServerClient,
    atomic_write, enroll, load_enrollment, public_jwk, retry_after, verify_policy)

NOW = 1_800_000_000  # 2027-01-15, a fixed clock
GATEWAY = "5f0c7a52-1d0e-4c6b-9a55-000000000001"
SERVER_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def enrollment() -> Enrollment:
    return Enrollment(server_url="http://lesfocus.test", gateway_id=GATEWAY,
                      server_keys=({**public_jwk(SERVER_KEY.public_key()), "kid": "k1"},))


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": "http://lesfocus.test", "aud": GATEWAY, "iat": NOW - 10, "exp": NOW + 7 * 86400,
        "ver": "v-abc", "tz": "Europe/Amsterdam",
        "window": {"start": "2027-01-15T00:00:00Z", "end": "2027-01-22T00:00:00Z"},
        "services": {"tiktok": {"name": "TikTok", "domains": ["tiktok.com", "tiktokcdn.com"]},
                     "youtube": {"name": "YouTube", "domains": ["youtube.com"]}},
        "segments": [
            {"id": 1, "name": "2.14", "cidrs": ["10.1.0.0/24", "fd00:1::/64"], "blocks": [
                {"start": "2027-01-15T08:30:00Z", "end": "2027-01-15T09:20:00Z",
                 "services": ["tiktok", "youtube"]},
                {"start": "2027-01-15T09:20:00Z", "end": "2027-01-15T10:10:00Z",
                 "services": ["tiktok"]}]},
            {"id": 2, "name": "2.15", "cidrs": ["10.2.0.0/24"], "blocks": []}],
    }
    base.update(changes)
    return base


def sign(body: dict[str, Any], key: Ed25519PrivateKey = SERVER_KEY, kid: str = "k1") -> str:
    return jwt.encode(body, key, algorithm="EdDSA", headers={"kid": kid})


def test_a_valid_policy_is_verified_and_parsed() -> None:
    policy = verify_policy(sign(claims()), enrollment(), now=NOW)
    assert policy.version == "v-abc" and policy.gateway_id == GATEWAY
    assert policy.services["tiktok"].domains == ("tiktok.com", "tiktokcdn.com")
    assert [s.cidrs for s in policy.segments] == [("10.1.0.0/24", "fd00:1::/64"), ("10.2.0.0/24",)]
    first = policy.segments[0].blocks[0]
    assert first.services == frozenset({"tiktok", "youtube"})
    assert first.start.isoformat() == "2027-01-15T08:30:00+00:00"


def forge_alg_none() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def forge_hs256_with_public_key() -> str:
    # RFC 8725 §3.1: HMAC keyed with the verifier's public key must not verify.
    secret = SERVER_KEY.public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(claims()).encode()))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def forge_payload_not_json() -> str:
    header = b64(json.dumps({"alg": "EdDSA", "kid": "k1"}).encode())
    signing_input = f"{header}.{b64(b'{not json')}"
    return f"{signing_input}.{b64(SERVER_KEY.sign(signing_input.encode()))}"


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "==="))
    body["segments"][0]["blocks"] = []
    return f"{header}.{b64(json.dumps(body).encode())}.{signature}"


@pytest.mark.parametrize("token, reason", [
    (sign(claims(), key=OTHER_KEY), "Signature verification failed"),
    (sign(claims(), key=OTHER_KEY, kid="k9"), "not pinned"),
    (tamper(sign(claims())), "Signature verification failed"),
    (sign(claims(exp=NOW - 1)), "expired"),
    (sign(claims(aud="another-gateway")), "(?i)audience"),
    (sign({k: v for k, v in claims().items() if k != "exp"}), "exp"),
    (forge_alg_none(), "alg 'none'"),
    (forge_hs256_with_public_key(), "alg 'HS256'"),
    (forge_payload_not_json(), "refused"),
    ("not-a-jws", "not a compact JWS"),
    ("", "not a compact JWS"),
])
def test_forged_foreign_or_expired_policies_are_refused(token: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        verify_policy(token, enrollment(), now=NOW)


def mutate(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(claims())
    *parents, last = path.split("/")
    target: Any = body
    for part in parents:
        target = target[int(part) if part.isdigit() else part]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return body


DELETE = object()


@pytest.mark.parametrize("path, value, named", [
    ("ver", DELETE, "ver"),
    ("ver", 7, "ver"),
    ("tz", "", "tz"),
    ("services", [], "services"),
    ("services/tiktok/domains", "tiktok.com", "services.tiktok.domains"),
    ("services/tiktok/domains/0", "tik tok.com", r"services.tiktok.domains\[0\]"),
    ("services/tiktok/name", None, "services.tiktok.name"),
    ("segments", {}, "segments"),
    ("segments/0/id", "1", r"segments\[0\].id"),
    ("segments/0/id", True, r"segments\[0\].id"),
    ("segments/1/id", 1, r"segments\[1\].id: segment 1 appears twice"),
    ("segments/0/cidrs/0", "10.1.0.0/33", r"segments\[0\].cidrs\[0\]"),
    ("segments/1/cidrs/0", "10.1.0.128/25", r"segments\[1\].cidrs\[0\]: .* overlaps"),
    ("segments/0/blocks/0/start", "2027-01-15T08:30:00+01:00", r"blocks\[0\].start.*Z"),
    ("segments/0/blocks/0/end", "yesterday", r"blocks\[0\].end"),
    ("segments/0/blocks/0/end", "2027-01-15T08:00:00Z", r"blocks\[0\]: end is not after start"),
    ("segments/0/blocks/1/start", "2027-01-15T09:00:00Z", r"blocks\[1\]: starts before"),
    ("segments/0/blocks/0/services/0", "myspace", r"blocks\[0\].services\[0\]: unknown"),
    ("window/end", "2027-01-01T00:00:00Z", "window"),
])
def test_malformed_claims_are_refused_naming_the_field(path: str, value: Any, named: str) -> None:
    with pytest.raises(PolicyError, match=f"malformed: .*{named}"):
        verify_policy(sign(mutate(path, value)), enrollment(), now=NOW)


@pytest.fixture
def source(tmp_path: Path) -> PolicySource:
    return PolicySource(tmp_path, enrollment(), clock=lambda: NOW)


def test_a_refused_policy_leaves_the_last_valid_one_in_force_and_on_disk(
        source: PolicySource, tmp_path: Path) -> None:
    good = sign(claims())
    source.accept(good)
    for bad in (sign(claims(ver="v-evil"), key=OTHER_KEY), sign(claims(ver="v-old", exp=NOW - 5)),
                sign(mutate("segments/0/cidrs", "10.0.0.0/8"))):
        with pytest.raises(PolicyError):
            source.accept(bad)
    assert source.policy is not None and source.policy.version == "v-abc"
    assert (tmp_path / "policy.jws").read_text() == good
    reborn = PolicySource(tmp_path, enrollment(), clock=lambda: NOW)
    assert reborn.load_stored() is not None and reborn.policy.version == "v-abc"


def test_an_older_policy_cannot_replace_a_newer_one(source: PolicySource) -> None:
    source.accept(sign(claims(ver="v-new", iat=NOW - 5)))
    with pytest.raises(PolicyError, match="replay"):
        source.accept(sign(claims(ver="v-older", iat=NOW - 500)))
    assert source.policy.version == "v-new"


def test_a_stored_policy_that_has_expired_is_not_reloaded(tmp_path: Path) -> None:
    PolicyStore(tmp_path).save(sign(claims(exp=NOW + 60)))
    later = PolicySource(tmp_path, enrollment(), clock=lambda: NOW + 61)
    assert later.load_stored() is None and later.policy is None


def test_atomic_write_leaves_one_private_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "policy.jws"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["policy.jws"]


class FakeServer:
    """Answers the agent's requests from a script of responses, recording what was asked."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []

    def __call__(self, method: str, url: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
        self.requests.append((method, url, body, dict(headers or {})))
        answer = self.answers.pop(0) if self.answers else ServerError("connection refused")
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(body: Any, status: int = 200) -> Response:
    return Response(status, {}, json.dumps(body).encode())


def test_enroll_makes_a_private_key_sends_its_jwk_and_pins_the_server_keys(tmp_path: Path) -> None:
    keys = {"keys": [{**public_jwk(SERVER_KEY.public_key()), "kid": "k1"}]}
    server = FakeServer(ok({"gateway_id": GATEWAY, "server_keys": keys}, 201))
    result = enroll("http://lesfocus.test/", "lfe_token", tmp_path / "state", request=server)
    method, url, body, _ = server.requests[0]
    assert (method, url) == ("POST", "http://lesfocus.test/api/v1/gateways/enroll")
    assert body["token"] == "lfe_token" and body["public_key"]["kty"] == "OKP"
    assert result.gateway_id == GATEWAY and result.server_url == "http://lesfocus.test"
    assert load_enrollment(tmp_path / "state") == result
    for name in (KEY_FILE, ENROLLMENT_FILE):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("answer, error", [
    (ok({"error": "Forbidden", "message": "token already used"}, 403), "token already used"),
    (ok({"gateway_id": GATEWAY, "server_keys": []}), "server_keys"),
    (ok({"gateway_id": GATEWAY, "server_keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}),
     r"server_keys\[0\]"),
    (Response(200, {}, b"<html>"), "not JSON"),
])
def test_a_refused_or_garbled_enrolment_pins_nothing(tmp_path: Path, answer: Response,
                                                     error: str) -> None:
    with pytest.raises((ServerError, ConfigError), match=error):
        enroll("http://lesfocus.test", "lfe_token", tmp_path, request=FakeServer(answer))
    assert not (tmp_path / ENROLLMENT_FILE).exists()


def test_agent_tokens_are_eddsa_for_our_gateway_and_the_server_and_short_lived() -> None:
    key = Ed25519PrivateKey.generate()
    token = ServerClient(enrollment(), key).agent_token()
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    body = jwt.decode(token, key.public_key(), algorithms=["EdDSA"],
                      audience="http://lesfocus.test")
    assert body["sub"] == GATEWAY and 0 < body["exp"] - body["iat"] <= 300


def test_sync_keeps_the_last_valid_policy_through_outages_and_garbage(tmp_path: Path) -> None:
    good = sign(claims())
    server = FakeServer(
        ServerError("connection refused"),
        Response(502, {}, b"bad gateway"),
        ok({"version": "v-x", "policy": "garbage"}),
        ok({"version": "v-abc", "policy": good}),
        Response(304, {}, b""),
        ok({"version": "v-evil", "policy": sign(claims(ver="v-evil"), key=OTHER_KEY)}))
    client = ServerClient(enrollment(), Ed25519PrivateKey.generate(), request=server)
    source = PolicySource(tmp_path, enrollment(), client=client, clock=lambda: NOW)
    seen: list[str] = []
    stop = threading.Event()

    def on_policy(policy: Any) -> None:
        seen.append(policy.version)

    worker = threading.Thread(target=source.run, args=(on_policy, stop),
                              kwargs={"initial_backoff": 0.01, "max_backoff": 0.02})
    worker.start()
    deadline = time.monotonic() + 10
    while server.answers and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    stop.set()
    worker.join(5)
    assert seen == ["v-abc"]
    assert source.policy.version == "v-abc"
    assert source.last_error is not None  # the last answer (foreign signature) was refused
    etags = [headers.get("If-None-Match") for *_, headers in server.requests]
    assert etags[:5] == [None, None, None, None, '"v-abc"']
    assert all(headers["Authorization"].startswith("Bearer ") for *_, headers in server.requests)


@pytest.mark.parametrize("status, header, wanted", [
    (503, "17", 17.0), (429, "3", 3.0), (503, "86400", 300.0), (503, "0", 0.0),
    (503, "Wed, 21 Oct 2026 07:28:00 GMT", None), (503, "-5", None), (503, "", None),
    (500, "17", None), (200, "17", None),
])
def test_retry_after_is_read_from_busy_answers_only(status: int, header: str,
                                                    wanted: float | None) -> None:
    assert retry_after(Response(status, {"retry-after": header}, b"")) == wanted


class RecordingStop(threading.Event):
    """A stop event that records how long the loop asked to wait, and returns at once."""

    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def test_a_busy_server_is_asked_again_no_sooner_than_its_retry_after(tmp_path: Path) -> None:
    busy = Response(503, {"retry-after": "12"}, json.dumps(
        {"error": "Service Unavailable", "message": "the database is busy"}).encode())
    server = FakeServer(busy, Response(502, {}, b"bad gateway"), busy)
    client = ServerClient(enrollment(), Ed25519PrivateKey.generate(), request=server)
    source = PolicySource(tmp_path, enrollment(), client=client, clock=lambda: NOW)
    stop = RecordingStop(stop_after=3)
    source.run(lambda policy: None, stop, initial_backoff=0.5, max_backoff=4)
    # The server's 12 s twice (above the agent's own back-off); in between the usual jitter.
    assert stop.waits[0] == 12 and stop.waits[2] == 12
    assert 0.5 <= stop.waits[1] <= 1.0
    assert "503 Service Unavailable: the database is busy" in (source.last_error or "")


# --- format 2.0 ----------------------------------------------------------------------------------

T0 = 1_800_000_000 - 1_800_000_000 % 3600  # the window starts on the hour


def claims_v2(**changes: Any) -> dict[str, Any]:
    """The same two segments as `claims()`, written in format 2.0 (bit 0 is tiktok)."""
    base = {
        "fmt": "2.0", "iss": "http://lesfocus.test", "aud": GATEWAY, "iat": NOW - 10,
        "exp": T0 + 7 * 86400, "ver": "v-abc", "tz": "Europe/Amsterdam",
        "window": [T0, T0 + 7 * 86400],
        "services": {"tiktok": {"name": "TikTok", "domains": ["tiktok.com", "tiktokcdn.com"]},
                     "youtube": {"name": "YouTube", "domains": ["youtube.com"]}},
        "segments": [
            {"id": 1, "name": "2.14", "cidrs": ["10.1.0.0/24", "fd00:1::/64"],
             "b": [T0 + 3600, 3000, 0b11, 0, 3000, 0b01, 600, 2700, 0]},
            {"id": 2, "name": "2.15", "cidrs": ["10.2.0.0/24"], "b": []}],
    }
    base.update(changes)
    return base


def test_a_format_2_policy_is_verified_and_unpacked() -> None:
    policy = verify_policy(sign(claims_v2()), enrollment(), now=NOW)
    assert policy.format == "2.0" and policy.version == "v-abc"
    first, second, third = policy.segments[0].blocks
    assert first.start.timestamp() == T0 + 3600 and first.end.timestamp() == T0 + 6600
    assert first.services == frozenset({"tiktok", "youtube"})
    assert (second.start, second.services) == (first.end, frozenset({"tiktok"}))
    # Mask 0: a lesson in which an exception allows everything.
    assert third.start.timestamp() == T0 + 10200 and third.services == frozenset()
    assert policy.segments[1].blocks == ()


@pytest.mark.parametrize("path, value, named", [
    ("segments/0/b", [T0 + 3600, 3000], r"segments\[0\].b: expected three integers"),
    ("segments/0/b/4", 0, r"segments\[0\].b\[4\] \(block 1\): length must be positive"),
    ("segments/0/b/3", -1, r"segments\[0\].b\[3\] \(block 1\): starts before"),
    ("segments/0/b/5", 4, r"segments\[0\].b\[5\] \(block 1\): mask 4 names a service"),
    ("segments/0/b/0", T0 - 60, r"segments\[0\].b\[0\] \(block 0\): outside the policy's window"),
    ("segments/0/b/1", 7 * 86400, r"outside the policy's window"),
    ("segments/0/b/2", "3", r"segments\[0\].b\[0:3\] \(block 0\): expected integers"),
    ("segments/0/b/2", True, r"segments\[0\].b\[0:3\] \(block 0\): expected integers"),
    ("window", [T0], "window: expected"),
    ("window", {"start": T0}, "window: expected a list"),
    ("fmt", 2, "fmt: expected a format version"),
])
def test_malformed_format_2_claims_are_refused_naming_the_field(path: str, value: Any,
                                                               named: str) -> None:
    body = copy.deepcopy(claims_v2())
    *parents, last = path.split("/")
    target: Any = body
    for part in parents:
        target = target[int(part) if part.isdigit() else part]
    target[int(last) if last.isdigit() else last] = value
    with pytest.raises(PolicyError, match=f"malformed: .*{named}"):
        verify_policy(sign(body), enrollment(), now=NOW)


def test_an_unknown_major_format_is_refused_with_a_clear_line_and_the_last_policy_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = sign(claims_v2())
    future = sign(claims_v2(fmt="3.0", ver="v-future", iat=NOW - 5))
    server = FakeServer(ok({"version": "v-abc", "policy": good}),
                        ok({"version": "v-future", "policy": future}))
    client = ServerClient(enrollment(), Ed25519PrivateKey.generate(), request=server)
    source = PolicySource(tmp_path, enrollment(), client=client, clock=lambda: NOW)
    stop = threading.Event()
    caplog.set_level("WARNING", logger="lesfocus.agent.policy")
    worker = threading.Thread(target=source.run, args=(lambda policy: None, stop),
                              kwargs={"initial_backoff": 0.01, "max_backoff": 0.02})
    worker.start()
    deadline = time.monotonic() + 10
    while "format 3.0" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(5)
    assert "format 3.0, which this reader does not know" in caplog.text
    assert "keeping policy v-abc" in caplog.text
    assert source.policy.version == "v-abc" and (tmp_path / "policy.jws").read_text() == good
    # A newer minor version of a known major is read: minor versions only add claims.
    assert verify_policy(sign(claims_v2(fmt="2.7", extra={"x": 1})), enrollment(),
                         now=NOW).version == "v-abc"


def test_the_agent_asks_for_format_2() -> None:
    server = FakeServer(Response(304, {}, b""))
    ServerClient(enrollment(), Ed25519PrivateKey.generate(), request=server).fetch_policy("v", 5)
    ((_, url, *_),) = server.requests
    assert "format=2" in url


def test_unchanged_segments_are_taken_over_from_the_policy_in_force() -> None:
    before = verify_policy(sign(claims_v2()), enrollment(), now=NOW)
    changed = claims_v2(ver="v-grant")
    changed["segments"][1]["b"] = [T0 + 3600, 600, 0b10]
    after = verify_policy(sign(changed), enrollment(), now=NOW, previous=before)
    assert after.segments[0] is before.segments[0]  # not read again
    assert after.segments[1] is not before.segments[1]
    assert after.segments[1].blocks[0].services == frozenset({"youtube"})
    # The same segment under a changed service list means something else: read again.
    fewer = claims_v2(ver="v-fewer")
    del fewer["services"]["youtube"]
    fewer["segments"][0]["b"] = [T0 + 3600, 3000, 1]
    again = verify_policy(sign(fewer), enrollment(), now=NOW, previous=after)
    assert again.segments[1] is not after.segments[1]


def test_a_policy_above_the_documented_maximum_is_not_read(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import agent.policy_source as policy_source
    monkeypatch.setattr(policy_source, "MAX_POLICY_BYTES", 100)
    with pytest.raises(PolicyError, match="more than the documented maximum of 100"):
        verify_policy(sign(claims_v2()), enrollment(), now=NOW)


def _resigned(header: dict[str, Any], payload_b64: str) -> str:
    head = b64(json.dumps(header).encode())
    return f"{head}.{payload_b64}.{b64(SERVER_KEY.sign(f'{head}.{payload_b64}'.encode()))}"


@pytest.mark.parametrize("token, reason", [
    (_resigned({"alg": "EdDSA", "kid": "k1", "crit": ["b64"], "b64": False},
               b64(json.dumps(claims()).encode())), "critical extensions"),
    (_resigned({"alg": "EdDSA", "kid": "k1"}, b64(json.dumps(claims()).encode()) + "=="),
     "payload is not base64url"),
    (_resigned({"alg": "EdDSA", "kid": "k1"}, "e30!" + b64(json.dumps(claims()).encode())),
     "payload is not base64url"),
    (_resigned({"alg": "EdDSA", "kid": "k1"}, b64(b"[1, 2]")), "payload is not a JSON object"),
    (sign({k: v for k, v in claims().items() if k != "iss"}), '"iss" claim'),
    (sign(claims(exp=str(NOW + 60))), "expired"),
    ("e30.e30.!!", "unreadable|signature is not base64url|alg"),
])
def test_the_agents_own_jws_check_refuses_what_rfc_7515_refuses(token: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        verify_policy(token, enrollment(), now=NOW)


def test_the_audience_must_be_this_gateway_alone() -> None:
    with pytest.raises(PolicyError, match="audience"):
        verify_policy(sign(claims(aud=["other", GATEWAY])), enrollment(), now=NOW)
