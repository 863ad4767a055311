"""End to end through nginx as production has it: HTTPS from docs/nginx/lesfocus.conf in front of
a real `lesfocus serve` with LESFOCUS_TRUSTED_PROXIES=1.

Clients connect from chosen loopback addresses (127.0.0.0/8 is all loopback on Linux), so the
address nginx forwards can be told apart from nginx's own 127.0.0.1: a classroom laptop is
127.0.0.5, a segment of exactly that address.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.config import DEFAULTS
from server.tokens import public_jwk

from tests.support.live_server import LEADER, LEADER_PASSWORD, LiveServer
from tests.support.nginx import (SHIPPED_MAIN, SHIPPED_SITE, NginxProxy, find_nginx,
                                 make_self_signed_certificate)
from tests.support.realparts import require
from tests.support.slow_clients import closed_by_peer, open_half_headers
from tests.support.waiting_agents import raise_open_file_limit

pytestmark = [pytest.mark.slow]

LAPTOP = "127.0.0.5"  # in the classroom segment
ELSEWHERE = "127.0.0.6"  # in no segment
SLOW_LAPTOP = "127.0.0.7"  # sends half a request header and stops


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Proxied:
    live: LiveServer
    nginx: NginxProxy
    certificate: Path

    def request(self, method: str, path: str, *, source: str = LAPTOP, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0,
                https: bool = True) -> Answer:
        """One request to nginx from the loopback address `source`."""
        if https:
            context = ssl.create_default_context(cafile=str(self.certificate))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.nginx.https_port, source_address=(source, 0),
                context=context, timeout=timeout)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.nginx.http_port,
                                              source_address=(source, 0), timeout=timeout)
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        try:
            conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """`lesfocus serve` (school e2e, SQLite) behind nginx on free loopback ports."""
    binary = find_nginx()
    require(binary is not None, "Debian's nginx (apt-get install nginx-light)")
    folder = tmp_path_factory.mktemp("nginx-e2e")
    certificate, key = make_self_signed_certificate(folder / "tls")
    with pytest.MonkeyPatch.context() as patch:
        nginx = NginxProxy(folder / "nginx", binary, upstreams=[], certificate=certificate,
                           key=key)
        # As production runs it: one trusted proxy, and the public URL is nginx's.
        patch.setenv("LESFOCUS_TRUSTED_PROXIES", "1")
        patch.setenv("LESFOCUS_PUBLIC_URL", nginx.public_url)
        live = LiveServer(folder / "server").start()
        nginx.upstreams = [f"127.0.0.1:{live.port}"]
        try:
            nginx.start()
        except BaseException:
            live.close()
            raise
        try:
            yield Proxied(live, nginx, certificate)
        finally:
            nginx.stop()
            live.close()


def _wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def test_dashboard_login_page_loads_over_https_and_plain_http_redirects(proxied) -> None:
    page = proxied.request("GET", "/login")
    assert page.status == 200
    assert 'name="csrf_token"' in page.body.decode()
    redirect = proxied.request("GET", "/login?next=/nu", https=False)
    assert redirect.status == 301
    assert re.fullmatch(r"https://127\.0\.0\.1/login\?next=/nu", redirect.headers["Location"])


def test_lesson_status_answers_for_the_address_nginx_forwarded(proxied) -> None:
    live = proxied.live
    live.add_segment("klas 1.01", [f"{LAPTOP}/32"], room="1.01")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    live.add_lesson("1.01", now - timedelta(minutes=10), now + timedelta(minutes=40), "les-1")

    def laptop_in_lesson() -> bool:
        answer = proxied.request("GET", "/api/v1/lesson-status")
        assert answer.status == 200, answer.body
        return answer.json()["in_lesson"]

    # The serving process sees the new segment and lesson through its change watcher.
    _wait_for("lesson-status to show the lesson for the laptop", laptop_in_lesson)
    # Another address is outside the segment, also when it names the laptop in its own header:
    # nginx appends the real address and the server reads only that entry.
    for headers in ({}, {"X-Forwarded-For": LAPTOP}):
        answer = proxied.request("GET", "/api/v1/lesson-status", source=ELSEWHERE,
                                 headers=headers)
        assert answer.status == 200 and answer.json()["in_lesson"] is False


def _failures(live: LiveServer) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from server.extensions import db
    from server.models import LoginFailure

    with live.app.app_context():
        return [(row.username, row.remote_addr)
                for row in db.session.scalars(select(LoginFailure))]


def test_login_failure_is_recorded_for_the_address_nginx_forwarded(proxied) -> None:
    refused = proxied.request("POST", "/api/v1/auth/token",
                              body={"username": LEADER, "password": "wrong password!"},
                              headers={"X-Forwarded-For": "10.9.9.9"})
    assert refused.status == 401 and refused.json()["message"] == "wrong username or password"
    assert (LEADER, LAPTOP) in _failures(proxied.live)
    assert not any(address in {"127.0.0.1", "10.9.9.9"} for _, address in _failures(proxied.live))
    # The right password from the same address clears the failure.
    signed_in = proxied.request("POST", "/api/v1/auth/token",
                                body={"username": LEADER, "password": LEADER_PASSWORD})
    assert signed_in.status == 200, signed_in.body
    assert (LEADER, LAPTOP) not in _failures(proxied.live)


def test_agent_long_poll_through_nginx_waits_and_answers_304(proxied) -> None:
    key = Ed25519PrivateKey.generate()
    enrolled = proxied.request("POST", "/api/v1/gateways/enroll", source="127.0.0.9", body={
        "token": proxied.live.enrollment_token, "public_key": public_jwk(key.public_key())})
    assert enrolled.status == 201, enrolled.body
    gateway_id = enrolled.json()["gateway_id"]

    def agent_headers(**extra: str) -> dict[str, str]:
        issued = int(time.time())
        token = jwt.encode({"sub": gateway_id, "aud": proxied.nginx.public_url, "iat": issued,
                            "exp": issued + 120, "jti": uuid.uuid4().hex}, key,
                           algorithm="EdDSA")
        return {"Authorization": f"Bearer {token}", **extra}

    current = proxied.request("GET", "/api/v1/gateways/self/policy", source="127.0.0.9",
                              headers=agent_headers())
    assert current.status == 200, current.body
    etag = current.headers["ETag"]
    wait = 5
    # An earlier test's change may still arrive as a new policy; then wait on that one.
    for _ in range(5):
        started = time.monotonic()
        polled = proxied.request("GET", f"/api/v1/gateways/self/policy?wait={wait}",
                                 source="127.0.0.9", headers=agent_headers(**{
                                     "If-None-Match": etag}), timeout=wait + 60)
        elapsed = time.monotonic() - started
        if polled.status == 304:
            break
        assert polled.status == 200, (polled.status, polled.body)
        etag = polled.headers["ETag"]
    assert polled.status == 304
    assert polled.headers["ETag"] == etag
    assert wait - 0.5 <= elapsed < wait + 30


def test_a_thousand_half_open_connections_to_nginx_do_not_delay_a_fresh_request(proxied) -> None:
    site = SHIPPED_SITE.read_text()
    header_timeout = _seconds(_directive(site, "client_header_timeout"))
    context = ssl.create_default_context(cafile=str(proxied.certificate))
    nginx = proxied.nginx

    def connect() -> socket.socket:
        raw = socket.create_connection((nginx.host, nginx.https_port), timeout=10,
                                       source_address=(SLOW_LAPTOP, 0))
        return context.wrap_socket(raw, server_hostname=nginx.host)

    raise_open_file_limit(4096)
    opened_at = time.monotonic()
    # TLS done, then half a header: what a laptop that loses its Wi-Fi mid-request leaves behind.
    half_open = open_half_headers(connect, 1000)
    try:
        began = time.monotonic()
        keys = proxied.request("GET", "/api/v1/keys", source=ELSEWHERE)
        latency = time.monotonic() - began
        print(f"\nGET /api/v1/keys through nginx beside 1,000 half-open TLS connections: "
              f"{latency * 1000:.0f} ms (target <= 1 s on a quiet machine)")
        assert keys.status == 200 and keys.json()["keys"]
        assert latency < 5.0
        closed, answers = closed_by_peer(half_open, header_timeout + 20)
        print(f"nginx closed {closed} of them {time.monotonic() - opened_at:.1f} s after they "
              f"opened (client_header_timeout {header_timeout} s)")
        assert closed == 1000
        # Dropped without a request reaching the server: nginx answers a header timeout with
        # nothing and logs it as 408.
        assert answers == []
        timed_out = [line for line in (nginx.folder / "access.log").read_text().splitlines()
                     if line.startswith(f"{SLOW_LAPTOP} ")]
        assert len(timed_out) == 1000 and all('" 408 ' in line for line in timed_out)
        assert proxied.request("GET", "/api/v1/keys", source=SLOW_LAPTOP).status == 200
    finally:
        for sock in half_open:
            sock.close()


def _directive(block: str, name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", block, re.MULTILINE)
    assert len(found) == 1, f"{name} should be set once in {block[:60]!r}..."
    return found[0].strip()


def _seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([sm]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * (60 if unit == "m" else 1)


def test_shipped_config_matches_the_server_limits() -> None:
    text = SHIPPED_SITE.read_text()
    poll = text[text.index("location = /api/v1/gateways/self/policy"):]
    poll = poll[:poll.index("}")]
    # nginx must not cut a poll the server may hold for its longest wait.
    assert _seconds(_directive(poll, "proxy_read_timeout")) > DEFAULTS["POLICY_LONG_POLL_MAX"]
    assert _directive(poll, "proxy_buffering") == "off"
    size = _directive(text, "client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == DEFAULTS["MAX_CONTENT_LENGTH"]
    assert _directive(text, "proxy_set_header X-Forwarded-For") == "$proxy_add_x_forwarded_for"
    assert _directive(text, "proxy_request_buffering") == "on"


def test_shipped_main_file_has_room_for_a_board_of_agents_beside_slow_clients() -> None:
    text = SHIPPED_MAIN.read_text()
    connections = int(_directive(text, "worker_connections"))
    # Two connections per waiting agent of a board (3,000 gateways, docs/deploy-server.md,
    # Sizing) and the probe's 1,000 half-open sockets, in one worker process alone.
    assert connections >= 2 * 3000 + 1000
    # A client connection and its upstream connection are a file descriptor each.
    assert int(_directive(text, "worker_rlimit_nofile")) >= 2 * connections
