"""The teacher's "Nu" page: room state from the policy, one-tap grants, revocation, week view."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from tests.support.dashboard import csrf_token, sign_in
from server import changes
from server.extensions import db
from server.models import AuditEvent, ExceptionGrant, Gateway, Lesson, School, utcnow
from lesfocus_policy import status_of
from server.policy import compile_policy, load_policy_inputs


def _grant(client, lesson_id: int, duration: str, services=(), reason: str = ""):
    token = csrf_token(client, "/nu")
    return client.post("/nu/grant", data={"lesson_id": lesson_id, "duration": duration,
                                          "services": list(services), "reason": reason,
                                          "csrf_token": token})


def _exceptions_of(app: Flask, lesson_id: int) -> list[ExceptionGrant]:
    with app.app_context():
        return list(db.session.scalars(select(ExceptionGrant).where(
            ExceptionGrant.lesson_id == lesson_id)))


def test_now_page_shows_running_lesson_and_what_the_policy_blocks(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    page = client.get("/nu").get_data(as_text=True)
    assert "vak0" in page and "2.14" in page and "3havo-b" in page
    assert "Geblokkeerd" in page and "alle sociale media" in page
    assert "Gateway gw-1 is offline" in page  # never contacted


def test_now_page_shows_gateway_online_with_latest_policy(app: Flask, world) -> None:
    with app.app_context():
        gateway = db.session.get(Gateway, world.gateway)
        policy = compile_policy(load_policy_inputs(gateway, utcnow()))
        gateway.last_contact_at = utcnow()
        gateway.policy_version_applied = policy.version
        db.session.commit()
    client = app.test_client()
    sign_in(client, "docent")
    assert "Gateway gw-1 online, nieuwste beleid toegepast" in client.get("/nu").get_data(
        as_text=True)


def test_only_youtube_for_15_minutes_is_granted_audited_and_announced(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    with app.app_context():
        school_id = db.session.scalar(select(School.id).where(School.slug == "test"))
        before = changes.generation(school_id)
    started = utcnow()
    response = _grant(client, world.own_lesson, "15", ["youtube"], "uitlegvideo")
    assert response.status_code == 302
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.services == ["youtube"] and grant.reason == "uitlegvideo"
    assert timedelta(minutes=14) < grant.end - started <= timedelta(minutes=15, seconds=1)
    with app.app_context():
        assert changes.generation(school_id) > before
        assert db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "exception.grant",
            AuditEvent.object_id == str(grant.id))) is not None
        # The policy the gateway gets now lets YouTube through on the room's segment.
        gateway = db.session.get(Gateway, world.gateway)
        policy = compile_policy(load_policy_inputs(gateway, utcnow()))
        blocked = status_of(policy, world.segment, utcnow()).blocked
        assert "youtube" not in blocked and "tiktok" in blocked
    page = client.get("/nu").get_data(as_text=True)
    assert "Nu toegestaan" in page and 'data-end="' in page
    assert re.search(r"alle sociale media behalve\s*<span class=\"tag\">YouTube<", page)


def test_rest_of_the_lesson_ends_with_the_lesson(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    assert _grant(client, world.own_lesson, "rest").status_code == 302
    (grant,) = _exceptions_of(app, world.own_lesson)
    with app.app_context():
        lesson = db.session.get(Lesson, world.own_lesson)
        assert grant.end == lesson.end and grant.services is None


def test_teacher_cannot_grant_for_another_teachers_lesson(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    before = len(_exceptions_of(app, world.other_lesson))
    response = _grant(client, world.other_lesson, "15", ["youtube"])
    assert response.status_code == 403
    assert "lessen die je zelf geeft" in response.get_data(as_text=True)
    assert len(_exceptions_of(app, world.other_lesson)) == before


@pytest.mark.parametrize("duration, services, status", [
    ("45", [], 400), ("", [], 400), ("10", ["myspace"], 400)])
def test_bad_grant_requests_are_refused_and_write_nothing(app: Flask, world, duration, services,
                                                         status) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    assert _grant(client, world.own_lesson, duration, services).status_code == status
    assert _exceptions_of(app, world.own_lesson) == []


def test_unknown_lesson_is_not_found(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    assert _grant(client, 999999, "10").status_code == 404


def test_teacher_revokes_own_exception_and_the_block_returns(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    _grant(client, world.own_lesson, "rest")
    (grant,) = _exceptions_of(app, world.own_lesson)
    token = csrf_token(client, "/nu")
    response = client.post(f"/exceptions/{grant.id}/revoke", data={"csrf_token": token,
                                                                   "next": "/nu"})
    assert response.status_code == 302 and response.headers["Location"] == "/nu"
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.revoked_at is not None
    assert "Nu toegestaan" not in client.get("/nu").get_data(as_text=True)


def test_teacher_cannot_revoke_a_colleagues_exception(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    token = csrf_token(client, "/nu")
    response = client.post(f"/exceptions/{world.exception}/revoke", data={"csrf_token": token})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(ExceptionGrant, world.exception).revoked_at is None


def test_week_view_lists_own_lessons_only(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    page = client.get("/week").get_data(as_text=True)
    assert "vak0" in page and "vak1" not in page
    assert client.get("/week?date=2026-13-01").status_code == 400


def test_now_page_without_a_lesson_says_so(app: Flask, world) -> None:
    with app.app_context():
        lesson = db.session.get(Lesson, world.own_lesson)
        lesson.start, lesson.end = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2)
        db.session.commit()
    client = app.test_client()
    sign_in(client, "docent")
    page = client.get("/nu").get_data(as_text=True)
    assert "Je hebt nu geen les." in page and "Volgende les" in page and "vak0" in page


def test_times_are_shown_in_the_schools_timezone(app: Flask, world) -> None:
    from zoneinfo import ZoneInfo
    with app.app_context():
        lesson = db.session.get(Lesson, world.own_lesson)
        local = lesson.start.astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%H:%M")
        utc = lesson.start.strftime("%H:%M")
    assert local != utc  # Amsterdam is never at UTC+0
    client = app.test_client()
    sign_in(client, "docent")
    for path in ("/nu", "/week"):
        assert f"{local}–" in client.get(path).get_data(as_text=True), path
