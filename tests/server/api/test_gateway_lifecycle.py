"""Gateway lifecycle (issue 13, item 6): disable, enable, remove, and the explicit re-enrolment.

A disabled or removed gateway's agent tokens get 401 at once, in this process and in another
one (two apps on one database; the other's key cache is held on a frozen clock, so neither its
expiry nor its recheck can be what refuses); its segments are reported unenforced; all of it
audited.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from server.agent_keys import keys_of
from server.extensions import db
from server.models import AuditEvent, EnrollmentToken, Gateway, GatewayCounter, Room, Segment
from server.tokens import public_jwk

from tests.support.api import add_person, bearer, count_rows

CLASSROOM = {"REMOTE_ADDR": "10.1.0.5"}


def _poll(client, agent) -> int:
    return client.get("/api/v1/gateways/self/policy", headers=agent.headers()).status_code


def _heartbeat(client, agent) -> int:
    return client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                       json={"agent_version": "test"}).status_code


def _actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_disable_refuses_the_agent_at_once_and_enable_lets_it_back(app, client, enrolled):
    add_person(app, "it", "it_admin")
    it = bearer(client, "it")
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    assert _poll(client, agent) == 200
    assert "enforced" not in client.get("/api/v1/lesson-status",
                                        environ_base=CLASSROOM).get_json()

    answer = client.post(f"/api/v1/gateways/{agent.gateway_id}/disable", headers=it)
    assert answer.status_code == 200 and answer.get_json()["gateway"]["disabled_at"]
    for status in (_poll(client, agent), _heartbeat(client, agent)):
        assert status == 401
    refused = client.get("/api/v1/gateways/self/policy", headers=agent.headers())
    assert "disabled" in refused.get_json()["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    status = client.get("/api/v1/lesson-status", environ_base=CLASSROOM).get_json()
    assert status["enforced"] is False and status["blocked_services"] == []
    assert status["rooms"] == ["gw-room"]
    # Disabling twice writes no second event.
    assert client.post(f"/api/v1/gateways/{agent.gateway_id}/disable", headers=it).status_code \
        == 200
    # No enrolment while disabled.
    assert client.post(f"/api/v1/gateways/{agent.gateway_id}/enrollment-token", headers=it,
                       json={"reenrol": True}).status_code == 409

    assert client.post(f"/api/v1/gateways/{agent.gateway_id}/enable",
                       headers=it).status_code == 200
    assert _poll(client, agent) == 200 and _heartbeat(client, agent) == 200
    assert "enforced" not in client.get("/api/v1/lesson-status",
                                        environ_base=CLASSROOM).get_json()
    assert [a for a in _actions(app) if a in ("gateway.disable", "gateway.enable")] == [
        "gateway.disable", "gateway.enable"]


def test_disable_and_remove_through_another_process_refuse_without_the_key_cache_expiring(
        make_app, enrolled_elsewhere):
    first, second, agent = enrolled_elsewhere
    cache = keys_of(first)
    frozen = cache.clock()
    cache.clock = lambda: frozen  # the kept key never gets old: only the feed can refuse
    client = first.test_client()
    assert _poll(client, agent) == 200
    add_person(second, "it", "it_admin")
    it = bearer(second.test_client(), "it")
    assert second.test_client().post(f"/api/v1/gateways/{agent.gateway_id}/disable",
                                     headers=it).status_code == 200
    # At once, though this process's key cache still holds the key and its feed may not have
    # heard yet: the replay check's write reads the gateway's row (server/agent_tokens.py).
    assert _poll(client, agent) == 401 and _heartbeat(client, agent) == 401
    assert second.test_client().post(f"/api/v1/gateways/{agent.gateway_id}/enable",
                                     headers=it).status_code == 200
    assert _poll(client, agent) == 200
    assert second.test_client().delete(f"/api/v1/gateways/{agent.gateway_id}",
                                       headers=it).status_code == 200
    assert _poll(client, agent) == 401 and _heartbeat(client, agent) == 401


@pytest.fixture
def enrolled_elsewhere(make_app):
    """An agent enrolled through the second of two apps on one database."""
    from tests.support.api import Agent, add_segment_for, new_gateway
    first, second = make_app(), make_app()
    gateway_id, token = new_gateway(second, "gw-far")
    add_segment_for(second, gateway_id, "far", ["10.2.0.0/24"], ["far-room"])
    key = Ed25519PrivateKey.generate()
    assert second.test_client().post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(key.public_key())}).status_code == 201
    return first, second, Agent(gateway_id, key, [])


def test_remove_deletes_the_gateway_its_segments_and_counters_but_keeps_the_rooms(
        app, client, enrolled):
    add_person(app, "it", "it_admin")
    add_person(app, "boss", "leader")
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["1.01"])
    assert client.delete(f"/api/v1/gateways/{agent.gateway_id}",
                         headers=bearer(client, "boss")).status_code == 403
    answer = client.delete(f"/api/v1/gateways/{agent.gateway_id}", headers=bearer(client, "it"))
    assert answer.status_code == 200
    assert answer.get_json() == {"deleted": agent.gateway_id, "segments_deleted": ["gw-seg"]}
    assert _poll(client, agent) == 401 and _heartbeat(client, agent) == 401
    for model in (Gateway, Segment, GatewayCounter, EnrollmentToken):
        assert count_rows(app, model) == 0
    assert count_rows(app, Room) == 1
    status = client.get("/api/v1/lesson-status", environ_base=CLASSROOM).get_json()
    assert status["rooms"] == [] and status["blocked_services"] == []
    assert client.delete(f"/api/v1/gateways/{agent.gateway_id}",
                         headers=bearer(client, "it")).status_code == 404
    assert "gateway.remove" in _actions(app)


def test_another_schools_gateway_is_404_for_every_action(app, client, enrolled):
    from tests.support.schools import seed_school
    with app.app_context():
        seed_school("other", "Ander college")
        db.session.commit()
    add_person(app, "it-other", "it_admin", slug="other")
    agent = enrolled("gw")
    it = bearer(client, "it-other")
    for method, path in (("post", "disable"), ("post", "enable"), ("post", "enrollment-token")):
        assert getattr(client, method)(f"/api/v1/gateways/{agent.gateway_id}/{path}",
                                       headers=it, json={"reenrol": True}).status_code == 404
    assert client.delete(f"/api/v1/gateways/{agent.gateway_id}", headers=it).status_code == 404
    assert _poll(client, agent) == 200


def test_an_enrolled_gateway_takes_a_new_key_only_through_the_explicit_re_enrolment(
        app, client, enrolled):
    add_person(app, "it", "it_admin")
    it = bearer(client, "it")
    agent = enrolled("gw")
    plain = client.post(f"/api/v1/gateways/{agent.gateway_id}/enrollment-token", headers=it)
    assert plain.status_code == 409 and plain.get_json()["field"] == "reenrol"
    for bad in ("yes", 1, None, []):
        assert client.post(f"/api/v1/gateways/{agent.gateway_id}/enrollment-token", headers=it,
                           json={"reenrol": bad}).get_json()["field"] == "reenrol"
    # A token written before this release (or by hand) without the re-enrolment mark is refused.
    from datetime import timedelta

    from server.gateways import hash_token
    from server.models import utcnow
    with app.app_context():
        db.session.add(EnrollmentToken(gateway_id=agent.gateway_id, token_hash=hash_token("old"),
                                       expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
    thief = Ed25519PrivateKey.generate()
    stolen = client.post("/api/v1/gateways/enroll",
                         json={"token": "old", "public_key": public_jwk(thief.public_key())})
    assert stolen.status_code == 403 and "re-enrol" in stolen.get_json()["message"]
    assert _poll(client, agent) == 200  # the live gateway kept its key

    token = client.post(f"/api/v1/gateways/{agent.gateway_id}/enrollment-token", headers=it,
                        json={"reenrol": True}).get_json()["enrollment_token"]
    new_key = Ed25519PrivateKey.generate()
    assert client.post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(new_key.public_key())}).status_code == 201
    assert _poll(client, agent) == 401
    agent.key = new_key
    assert _poll(client, agent) == 200
    actions = _actions(app)
    assert "gateway.reenrol_token" in actions and "gateway.reenrol" in actions


def test_the_it_page_disables_enables_re_enrols_and_removes_with_confirmation(app, enrolled):
    from tests.support.dashboard import csrf_token, sign_in
    add_person(app, "it", "it_admin")
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    browser = app.test_client()
    sign_in(browser, "it")
    token = csrf_token(browser)
    base = f"/it/gateways/{agent.gateway_id}"
    page = browser.get(base).get_data(as_text=True)
    assert "Opnieuw koppelen" in page and "Uitschakelen" in page and "data-confirm" in page
    browser.post(f"{base}/uitschakelen", data={"csrf_token": token})
    page = browser.get(base).get_data(as_text=True)
    assert "Uitgeschakeld sinds" in page and "Inschakelen" in page
    assert _poll(app.test_client(), agent) == 401
    browser.post(f"{base}/inschakelen", data={"csrf_token": token})
    assert _poll(app.test_client(), agent) == 200
    # Re-enrolment without the box ticked gives no token.
    before = count_rows(app, EnrollmentToken)
    browser.post(f"{base}/token", data={"csrf_token": token})
    assert count_rows(app, EnrollmentToken) == before
    page = browser.post(f"{base}/token", data={"csrf_token": token, "reenrol": "yes"}).get_data(
        as_text=True)
    assert "lesfocus-agent enroll" in page and count_rows(app, EnrollmentToken) == before + 1
    # Removal without the box ticked removes nothing.
    browser.post(f"{base}/verwijderen", data={"csrf_token": token})
    assert count_rows(app, Gateway) == 1
    browser.post(f"{base}/verwijderen", data={"csrf_token": token, "confirm": "yes"})
    assert count_rows(app, Gateway) == 0 and count_rows(app, Segment) == 0
    assert {"gateway.disable", "gateway.enable", "gateway.reenrol_token",
            "gateway.remove"} <= set(_actions(app))


def test_the_teachers_page_says_a_disabled_gateways_room_is_not_enforced(app, enrolled):
    from server.gateways import set_gateway_disabled
    from server.dashboard.state import room_states, state_text
    from server.models import utcnow
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["1.01"])
    with app.test_request_context():
        gateway = db.session.get(Gateway, agent.gateway_id)
        set_gateway_disabled(gateway, True, actor="test")
        db.session.commit()
        room = db.session.scalar(select(Room).where(Room.code == "1.01"))
        state = room_states([room], utcnow())[0]
        assert state.unenforced and not state.has_network and state.blocked == []
        assert state.gateways[0].confirmation == "disabled"
        assert "ICT heeft de gateway uitgeschakeld" in state_text([state], {})
