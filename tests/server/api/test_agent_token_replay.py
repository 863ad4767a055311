"""Agent tokens (issue 13, item 7): one request per token, in every process; the audience is
LESFOCUS_PUBLIC_URL only; `lesfocus serve` does not start without it.

The real agent's client (agent/policy_source.py, `ServerClient`) signs a new token per request,
so it keeps working request after request; a copy of one of its tokens does not.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.policy_source import Enrollment, Response, ServerClient
from server.agent_tokens import MAX_JTI_LENGTH, purge_expired
from server.extensions import db
from server.models import AgentTokenUse, utcnow
from server.tokens import public_jwk

from tests.support.api import AUDIENCE, Agent, count_rows, new_gateway


def _poll(client, token: str):
    return client.get("/api/v1/gateways/self/policy",
                      headers={"Authorization": f"Bearer {token}"})


def test_a_token_serves_one_request_only(client, enrolled):
    agent = enrolled("gw")
    token = agent.token()
    assert _poll(client, token).status_code == 200
    for _ in range(3):  # the replays of the measurement: 50 before, now each one refused
        again = _poll(client, token)
        assert again.status_code == 401
        assert "used already" in again.get_json()["message"]
    heartbeat = client.post("/api/v1/gateways/self/heartbeat", json={},
                            headers={"Authorization": f"Bearer {token}"})
    assert heartbeat.status_code == 401
    assert _poll(client, agent.token()).status_code == 200  # a new token: served


def test_a_token_without_a_usable_jti_is_refused(client, enrolled):
    agent = enrolled("gw")
    for jti in (None, "", 7, "x" * (MAX_JTI_LENGTH + 1)):
        answer = _poll(client, agent.token(jti=jti))
        message = answer.get_json()["message"]
        assert answer.status_code == 401 and ("jti" in message or "JWT ID" in message), message
    assert _poll(client, agent.token(jti="x" * MAX_JTI_LENGTH)).status_code == 200


def test_one_gateways_jti_does_not_block_another_gateway(client, enrolled):
    first, second = enrolled("gw1"), enrolled("gw2")
    assert _poll(client, first.token(jti="same")).status_code == 200
    assert _poll(client, second.token(jti="same")).status_code == 200


def test_a_token_used_through_one_process_is_refused_by_another(make_app):
    first, second = make_app(), make_app()
    gateway_id, token = new_gateway(first, "gw")
    key = Ed25519PrivateKey.generate()
    assert first.test_client().post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(key.public_key())}).status_code == 201
    agent = Agent(gateway_id, key, [])
    once = agent.token()
    assert _poll(first.test_client(), once).status_code == 200
    assert _poll(second.test_client(), once).status_code == 401
    assert _poll(second.test_client(), agent.token()).status_code == 200


def test_parallel_copies_of_one_token_are_served_once(app, enrolled):
    agent = enrolled("gw")
    token = agent.token()
    statuses: list[int] = []
    start = threading.Barrier(12)

    def use() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(_poll(client, token).status_code)

    threads = [threading.Thread(target=use) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses) == [200] + [401] * 11


def test_used_tokens_are_deleted_when_their_lifetime_is_over(app, client, enrolled):
    agent = enrolled("gw")
    for _ in range(3):
        assert _poll(client, agent.token(lifetime=60)).status_code == 200
    assert count_rows(app, AgentTokenUse) == 3
    with app.app_context():
        rows = list(db.session.scalars(db.select(AgentTokenUse)))
        # Kept no longer than the token's lifetime plus the 30 s leeway.
        assert all(r.expires_at <= utcnow() + timedelta(seconds=60 + 30 + 2) for r in rows)
        assert purge_expired(utcnow()) == 0
        assert purge_expired(utcnow() + timedelta(seconds=95)) == 3
    assert count_rows(app, AgentTokenUse) == 0


def test_the_real_agent_client_polls_and_beats_many_times(app, client, enrolled):
    """ServerClient as the agent runs it, its HTTP sent to the app: a new token each time."""
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])

    def request(method: str, url: str, body=None, headers=None, timeout: float = 10.0):
        parts = urlsplit(url)
        answer = client.open(parts.path + (f"?{parts.query}" if parts.query else ""),
                             method=method, headers=headers or {},
                             data=None if body is None else json.dumps(body),
                             content_type="application/json")
        return Response(answer.status_code, {k.lower(): v for k, v in answer.headers.items()},
                        answer.get_data())

    server = ServerClient(Enrollment(AUDIENCE, agent.gateway_id, ()), agent.key, request)
    version = None
    for _ in range(5):
        answer = server.fetch_policy(version, 0)
        if answer is not None:
            version = answer[0]
        server.heartbeat({"agent_version": "test", "policy_version": version})
    assert version is not None
    assert server.fetch_policy(version, 0) is None  # 304: unchanged, and accepted


REFUSED_PUBLIC_URLS = [
    (None, "LESFOCUS_PUBLIC_URL is not set"), ("", "LESFOCUS_PUBLIC_URL is not set"),
    ("lesfocus.school.example", "is not a base URL"), ("ftp://x.example", "is not a base URL"),
    ("https://x.example/?a=1", "is not a base URL")]


def test_serve_refuses_to_start_without_a_public_url(app, monkeypatch):
    from server import serving
    from server.cli import serve_command
    started: list[object] = []
    monkeypatch.setattr(serving, "exec_server", lambda *args: started.append(args))
    for value, said in REFUSED_PUBLIC_URLS:
        app.config["LESFOCUS_PUBLIC_URL"] = value
        result = app.test_cli_runner().invoke(serve_command, ["--port", "0"])
        assert result.exit_code == 1 and started == [], value
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], result.stderr
    app.config["LESFOCUS_PUBLIC_URL"] = "https://lesfocus.school.example"
    assert app.test_cli_runner().invoke(serve_command, ["--port", "0"]).exit_code == 0
    assert len(started) == 1
