"""The teacher's "Nu" page: room state from the policy, one-tap grants, revocation, week view."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select

from tests.support.api import Agent
from tests.support.dashboard import csrf_token, sign_in
from server import changes
from server.dashboard.state import ServiceLine, ServiceState, service_lines
from server.extensions import db
from server.gateways import issue_enrollment_token
from server.models import AuditEvent, ExceptionGrant, Gateway, Lesson, Person, School, utcnow
from server.tokens import public_jwk
from lesfocus_policy import status_of
from server.policy import compile_policy, load_policy_inputs

ZONE = ZoneInfo("Europe/Amsterdam")  # the test school's timezone


def _local(moment: datetime, fmt: str = "%H:%M") -> str:
    return moment.astimezone(ZONE).strftime(fmt)


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
    with app.app_context():
        end = db.session.get(Lesson, world.own_lesson).end
    assert f"Alle sociale media geblokkeerd tot {_local(end)}" in page
    assert "Gateway gw-1 is offline" in page  # never contacted


def _enrol(app: Flask, client, gateway_id: str) -> Agent:
    """Enrol the world's gateway as its agent would, so the test can poll and send heartbeats."""
    with app.app_context():
        token = issue_enrollment_token(db.session.get(Gateway, gateway_id), actor="pytest",
                                       reenrol=True)
        db.session.commit()
    key = Ed25519PrivateKey.generate()
    response = client.post("/api/v1/gateways/enroll",
                           json={"token": token, "public_key": public_jwk(key.public_key())})
    assert response.status_code == 201, response.get_json()
    return Agent(gateway_id, key, [])


def _apply_policy(client, agent: Agent, monkeypatch, at: datetime | None = None) -> str:
    """What the agent does: fetch the current policy, apply it, send a heartbeat (at `at`)."""
    import server.api.gateways as gateways_api
    version = client.get("/api/v1/gateways/self/policy?format=2",
                         headers=agent.headers()).get_json()["version"]
    if at is not None:
        monkeypatch.setattr(gateways_api, "utcnow", lambda: at)
    response = client.post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                           json={"policy_version": version, "agent_version": "2.0.0"})
    assert response.status_code == 200, response.get_json()
    monkeypatch.undo()
    return version


def test_gateway_that_applied_the_current_policy_confirms_it_with_its_time(
        app: Flask, world, monkeypatch) -> None:
    client = app.test_client()
    agent = _enrol(app, client, world.gateway)
    applied = utcnow().replace(microsecond=250_000) - timedelta(seconds=17)
    _apply_policy(client, agent, monkeypatch, at=applied)
    sign_in(client, "docent")
    page = client.get("/nu").get_data(as_text=True)
    assert _local(applied, "%H:%M:%S") != applied.strftime("%H:%M:%S")  # shown in school time
    assert f"Geblokkeerd, bevestigd door gateway om {_local(applied, '%H:%M:%S')}" in page
    assert "Wacht op gateway" not in page and 'data-refresh="3"' not in page


def test_after_a_grant_the_page_waits_for_the_gateway_until_it_confirms(
        app: Flask, world, monkeypatch) -> None:
    client = app.test_client()
    agent = _enrol(app, client, world.gateway)
    _apply_policy(client, agent, monkeypatch)
    sign_in(client, "docent")
    assert _grant(client, world.own_lesson, "15", ["youtube"]).status_code == 302
    # The server has the change; the gateway has not reported it: say so, and look again soon.
    page = client.get("/nu").get_data(as_text=True)
    assert "Wacht op gateway gw-1: de wijziging is nog niet bevestigd" in page
    assert "bevestigd door gateway om" not in page
    assert re.search(r'class="state [a-z]+" role="status" data-refresh="3"', page)
    applied = utcnow().replace(microsecond=0)
    _apply_policy(client, agent, monkeypatch, at=applied)
    page = client.get("/nu").get_data(as_text=True)
    assert f"Toegestaan, bevestigd door gateway om {_local(applied, '%H:%M:%S')}" in page
    assert "Wacht op gateway" not in page and 'data-refresh="3"' not in page


def test_gateway_not_heard_from_recently_is_offline_with_its_last_contact(
        app: Flask, world, monkeypatch) -> None:
    client = app.test_client()
    agent = _enrol(app, client, world.gateway)
    last = utcnow() - timedelta(minutes=10)
    _apply_policy(client, agent, monkeypatch, at=last)  # the current version, but long ago
    sign_in(client, "docent")
    page = client.get("/nu").get_data(as_text=True)
    assert "Gateway gw-1 is offline (laatste contact" in page and _local(last) in page
    assert "bevestigd door gateway" not in page and "Wacht op gateway" not in page
    assert 'data-refresh="3"' not in page  # an offline gateway is not waited for


def test_adjacent_lessons_show_each_services_own_end(app: Flask, world) -> None:
    # Lesson A (running, the fixture's) is followed at once by lesson B in the same room, in
    # which Instagram is allowed: Instagram is blocked until A ends, the rest until B ends.
    with app.app_context():
        a = db.session.get(Lesson, world.own_lesson)
        b = Lesson(school_id=a.school_id, start=a.end, end=a.end + timedelta(minutes=50),
                   subject="vak-b", source="manual", source_id="l-b", rooms=list(a.rooms),
                   groups=list(a.groups), teachers=list(a.teachers))
        db.session.add(b)
        db.session.flush()
        db.session.add(ExceptionGrant(school_id=a.school_id, scope="lesson", lesson_id=b.id,
                                      services=["instagram"], start=b.start, end=b.end,
                                      reason="", granted_by_id=world.people["docent"]))
        db.session.commit()
        a_end, b_end = a.end, b.end
    client = app.test_client()
    sign_in(client, "docent")
    page = client.get("/nu").get_data(as_text=True)
    lines = re.findall(r'<li class="(blocked|open)"[^>]*>([^<]*)</li>', page)
    assert lines == [("blocked", f"Alle behalve Instagram geblokkeerd tot {_local(b_end)}"),
                     ("blocked", f"Instagram geblokkeerd tot {_local(a_end)}")]
    # The same, for scripts: the service ids of each line and its end.
    data = re.findall(r'data-services="([^"]*)"\s+data-until="([^"]*)"', page)
    assert [(set(ids.split()), until) for ids, until in data][1] == (
        {"instagram"}, a_end.astimezone(timezone.utc).isoformat())
    assert "instagram" not in data[0][0] and "tiktok" in data[0][0].split()


def _s(blocked: bool, minute: int | None) -> ServiceState:
    base = datetime(2026, 11, 23, 9, 0, tzinfo=ZONE)
    return ServiceState(blocked, None if minute is None else base + timedelta(minutes=minute))


@pytest.mark.parametrize("services, expected", [
    # the usual case: one line
    ({"a": _s(True, 40), "b": _s(True, 40), "c": _s(True, 40)},
     [ServiceLine(True, _s(True, 40).until, everything=True)]),
    # one allowed: "all except a" is the shorter way to name the blocked ones
    ({"a": _s(False, 15), "b": _s(True, 40), "c": _s(True, 40)},
     [ServiceLine(True, _s(True, 40).until, ("a",), inverse=True),
      ServiceLine(False, _s(True, 15).until, ("a",))]),
    # two of four allowed: name them both ways, no "except"
    ({"a": _s(False, 15), "b": _s(False, 15), "c": _s(True, 40), "d": _s(True, 40)},
     [ServiceLine(True, _s(True, 40).until, ("c", "d")),
      ServiceLine(False, _s(True, 15).until, ("a", "b"))]),
    # blocked with different ends: the larger group first
    ({"a": _s(True, 50), "b": _s(True, 100), "c": _s(True, 100)},
     [ServiceLine(True, _s(True, 100).until, ("a",), inverse=True),
      ServiceLine(True, _s(True, 50).until, ("a",))]),
    # all allowed, no block ahead
    ({"a": _s(False, None), "b": _s(False, None)},
     [ServiceLine(False, None, everything=True)]),
    ({}, []),
])
def test_service_lines_group_services_that_share_state_and_end(services, expected) -> None:
    assert service_lines(services) == expected


def test_only_youtube_for_15_minutes_is_granted_audited_and_announced(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    with app.app_context():
        school_id = db.session.scalar(select(School.id).where(School.slug == "test"))
        before = changes.generation(school_id)
    started = utcnow()
    response = _grant(client, world.own_lesson, "15", ["youtube"], "uitlegvideo")
    # The server reads its clock between these two instants: the upper bound is counted from
    # the later one (from `started`, a request slower than a fraction of a second failed it).
    answered = utcnow()
    assert response.status_code == 302
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.services == ["youtube"] and grant.reason == "uitlegvideo"
    assert timedelta(minutes=14) < grant.end - started
    assert grant.end - answered <= timedelta(minutes=15, seconds=1)
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
    with app.app_context():
        lesson_end = db.session.get(Lesson, world.own_lesson).end
    assert f"Alle behalve YouTube geblokkeerd tot {_local(lesson_end)}" in page
    assert f"YouTube toegestaan tot {_local(grant.end)}" in page


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


# --- messages from the state after the action, "+5 min", "Stoppen", planning (issue 14) ---------

def _flash(page: str) -> str:
    match = re.search(r'<p class="flash flash-(?:success|error)" role="status">([^<]*)</p>', page)
    assert match, "no message on the page"
    return match.group(1).replace("&#39;", "'")


def _post(client, path: str, next_path: str = "/nu", **data) -> str:
    """POST a dashboard form (the session's CSRF token, read once) and the message it left."""
    if not hasattr(client, "csrf"):
        client.csrf = csrf_token(client, next_path)
    response = client.post(path, data={**data, "csrf_token": client.csrf, "next": next_path},
                           follow_redirects=True)
    return _flash(response.get_data(as_text=True))


def _lesson_end(app: Flask, lesson_id: int) -> datetime:
    with app.app_context():
        return db.session.get(Lesson, lesson_id).end


def test_grant_and_stop_messages_say_per_service_what_holds_and_until_when(
        app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    message = _post(client, "/nu/grant", lesson_id=world.own_lesson, duration="15",
                    services=["youtube"])
    (grant,) = _exceptions_of(app, world.own_lesson)
    end = _lesson_end(app, world.own_lesson)
    # Not "blocked until <YouTube's end>": the other services stay blocked until the lesson ends.
    assert message == (f"Uitzondering toegekend. Nu: Alle behalve YouTube geblokkeerd tot "
                       f"{_local(end)}; YouTube toegestaan tot {_local(grant.end)}.")
    message = _post(client, f"/exceptions/{grant.id}/revoke")
    assert message == f"Uitzondering gestopt. Nu: Alle sociale media geblokkeerd tot {_local(end)}."


def _school_wide(app: Flask, world, minutes: int = 120) -> int:
    with app.app_context():
        lesson = db.session.get(Lesson, world.own_lesson)
        grant = ExceptionGrant(school_id=lesson.school_id, scope="school", services=None,
                               start=utcnow() - timedelta(minutes=1),
                               end=utcnow() + timedelta(minutes=minutes), reason="open dag",
                               granted_by_id=world.people["leiding"])
        db.session.add(grant)
        db.session.commit()
        return grant.id


def test_stopping_an_exception_while_a_school_wide_one_keeps_media_open_says_so(
        app: Flask, world) -> None:
    school_wide = _school_wide(app, world)
    client = app.test_client()
    sign_in(client, "docent")
    _post(client, "/nu/grant", lesson_id=world.own_lesson, duration="rest", services=["youtube"])
    (own,) = _exceptions_of(app, world.own_lesson)
    page = client.get("/nu").get_data(as_text=True)
    assert "Weer blokkeren" not in page and ">Stoppen<" in page
    message = _post(client, f"/exceptions/{own.id}/revoke")
    with app.app_context():
        assert db.session.get(ExceptionGrant, school_wide).revoked_at is None
    # Allowed for the rest of the lesson (the reader says "until" within the lesson).
    end = _lesson_end(app, world.own_lesson)
    assert message.startswith("Uitzondering gestopt. Nu: Alle sociale media toegestaan tot "
                              f"{_local(end)}.")
    assert "Nog van kracht: de uitzondering voor hele school." in message
    assert "geblokkeerd" not in message


def test_plus_five_minutes_extends_a_running_exception_up_to_the_lesson_end(
        app: Flask, world) -> None:
    with app.app_context():
        # The colleague's lesson shares the segment (and blocks YouTube after their exception).
        db.session.get(Lesson, world.other_lesson).cancelled = True
        db.session.commit()
    client = app.test_client()
    sign_in(client, "docent")
    end = _lesson_end(app, world.own_lesson)  # 40 minutes from now
    _post(client, "/nu/grant", lesson_id=world.own_lesson, duration="30", services=["youtube"])
    (grant,) = _exceptions_of(app, world.own_lesson)
    first_end = grant.end
    assert ">+5 min<" in client.get("/nu").get_data(as_text=True)
    message = _post(client, f"/exceptions/{grant.id}/extend")
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.end == first_end + timedelta(minutes=5)
    assert message.startswith(f"Uitzondering verlengd tot {_local(grant.end)}. Nu: ")
    assert f"YouTube toegestaan tot {_local(grant.end)}" in message
    # The next one would pass the lesson's end: capped there, and said so.
    message = _post(client, f"/exceptions/{grant.id}/extend")
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.end == end
    assert message.startswith(f"Uitzondering verlengd tot {_local(end)}, het einde van de les.")
    assert ">+5 min<" not in client.get("/nu").get_data(as_text=True)  # nothing left to add
    # A stale page's "+5 min" changes nothing and says why.
    assert (_post(client, f"/exceptions/{grant.id}/extend")
            == "Deze uitzondering loopt al tot het einde van de les.")
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "exception.extend")).all()
        assert [e.details["end"] for e in events] == [
            (first_end + timedelta(minutes=5)).isoformat(), end.isoformat()]
        gateway = db.session.get(Gateway, world.gateway)
        policy = compile_policy(load_policy_inputs(gateway, utcnow()))
        blocked = status_of(policy, world.segment, first_end + timedelta(minutes=2)).blocked
        assert "youtube" not in blocked  # the gateway lets it through past the first end
    # Stopped: a stale "+5 min" or "Stoppen" says so and changes nothing.
    _post(client, f"/exceptions/{grant.id}/revoke")
    for action in ("extend", "revoke"):
        assert (_post(client, f"/exceptions/{grant.id}/{action}")
                == "Deze uitzondering is al gestopt."), action
    (grant,) = _exceptions_of(app, world.own_lesson)
    assert grant.end == end
    # A colleague's exception: refused; an id of no exception (or another school's): not found.
    response = client.post(f"/exceptions/{world.exception}/extend",
                           data={"csrf_token": client.csrf})
    assert response.status_code == 403
    assert client.post("/exceptions/999999/extend",
                       data={"csrf_token": client.csrf}).status_code == 404
    with app.app_context():
        assert db.session.get(ExceptionGrant, world.exception).end - utcnow() < timedelta(
            minutes=21)


def _later_lesson(app: Flask, world, hours_from_now: float = 1, teacher: str = "docent",
                  cancelled: bool = False) -> int:
    with app.app_context():
        own = db.session.get(Lesson, world.own_lesson)
        start = utcnow().replace(microsecond=0) + timedelta(hours=hours_from_now)
        lesson = Lesson(school_id=own.school_id, start=start, end=start + timedelta(minutes=50),
                        subject="later", source="manual",
                        source_id=f"later-{hours_from_now}-{teacher}-{cancelled}",
                        rooms=list(own.rooms), groups=list(own.groups), cancelled=cancelled,
                        teachers=[db.session.get(Person, world.people[teacher])])
        db.session.add(lesson)
        db.session.commit()
        return lesson.id


def _same_week(moment: datetime) -> bool:
    now = utcnow().astimezone(ZONE)
    return moment.astimezone(ZONE).isocalendar()[:2] == now.isocalendar()[:2]


def test_a_later_lesson_of_this_week_gets_an_exception_planned_from_the_week_view(
        app: Flask, world) -> None:
    lesson_id = _later_lesson(app, world)
    with app.app_context():
        lesson = db.session.get(Lesson, lesson_id)
        start, end = lesson.start, lesson.end
    if not _same_week(start):
        pytest.skip("the hour after now is in next week (Sunday night)")
    client = app.test_client()
    sign_in(client, "docent")
    page = client.get("/week").get_data(as_text=True)
    assert "Uitzondering plannen" in page and f'value="{lesson_id}"' in page
    message = _post(client, "/week/plan", "/week", lesson_id=lesson_id, duration="15",
                    services=["youtube"])
    (planned,) = _exceptions_of(app, lesson_id)
    # From the lesson's start (not from now), 15 minutes.
    assert (planned.start, planned.end) == (start, start + timedelta(minutes=15))
    assert message.startswith("Uitzondering gepland voor later, ")
    assert (f"Vanaf {_local(start)}: Alle behalve YouTube geblokkeerd tot {_local(end)}; "
            f"YouTube toegestaan tot {_local(planned.end)}.") in message
    # "Rest of the lesson" ends with that lesson; the week view lists it with "Annuleren".
    _post(client, "/week/plan", "/week", lesson_id=lesson_id, duration="rest")
    ends = sorted(e.end for e in _exceptions_of(app, lesson_id))
    assert ends[-1] == end
    page = client.get("/week").get_data(as_text=True)
    assert ">Annuleren<" in page and "Weer blokkeren" not in page
    message = _post(client, f"/exceptions/{planned.id}/revoke", "/week")
    assert message.startswith("Geplande uitzondering geannuleerd. Vanaf ")
    # Beyond the policy's horizon the gateway's policy says nothing yet: no state is claimed.
    app.config["LESFOCUS_POLICY_HORIZON_DAYS"] = 0
    message = _post(client, "/week/plan", "/week", lesson_id=lesson_id, duration="10")
    assert message.startswith("Uitzondering gepland voor later, ") and "Vanaf" not in message


# The rules refuse before anything is written: the database does not matter.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_planning_refusals_say_why_and_write_nothing(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    token = csrf_token(client, "/week")
    for case, status, text in [
            ("next week", 400, "Alleen voor latere lessen van deze week"),
            ("cancelled", 400, "Deze les is voorbij of uitgevallen."),
            ("colleague", 403, "lessen die je zelf geeft"),
            ("bad duration", 400, "Kies de rest van de les, 10, 15 of 30 minuten.")]:
        lesson_id = _later_lesson(app, world, hours_from_now=24 * 8 if case == "next week" else 1,
                                  cancelled=case == "cancelled",
                                  teacher="collega" if case == "colleague" else "docent")
        response = client.post("/week/plan", data={
            "lesson_id": lesson_id, "duration": "45" if case == "bad duration" else "10",
            "csrf_token": token})
        assert response.status_code == status, case
        assert text in response.get_data(as_text=True), case
        assert _exceptions_of(app, lesson_id) == [], case


# Which words a message uses does not depend on the database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_messages_and_buttons_are_english_in_the_english_interface(app: Flask, world) -> None:
    client = app.test_client()
    sign_in(client, "docent")
    client.post("/language", data={"lang": "en", "csrf_token": csrf_token(client, "/nu")})
    message = _post(client, "/nu/grant", lesson_id=world.own_lesson, duration="10",
                    services=["youtube"])
    end = _lesson_end(app, world.own_lesson)
    assert message.startswith(
        f"Exception granted. Now: All except YouTube blocked until {_local(end)}; ")
    page = client.get("/nu").get_data(as_text=True)
    assert ">+5 min<" in page and ">Stop<" in page
    (grant,) = _exceptions_of(app, world.own_lesson)
    message = _post(client, f"/exceptions/{grant.id}/revoke")
    assert message == f"Exception stopped. Now: All social media blocked until {_local(end)}."
