"""School leader and IT pages: exceptions with start and end, audit filters, segments with field
errors, gateways with their enrolment command, timetable upload, services, reminders, people."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from tests.support.dashboard import csrf_token, sign_in
from server.dashboard.common import local_input_value
from server.extensions import db
from server.gateways import hash_token
from server.models import (AuditEvent, EnrollmentToken, ExceptionGrant, Gateway, Lesson, Person,
                           Reminder, Room, School, Segment, utcnow)

ZONE = ZoneInfo("Europe/Amsterdam")  # the test school's timezone


def _local(moment) -> str:
    return moment.astimezone(ZONE).strftime("%H:%M")


def _signed_in(app: Flask, username: str):
    client = app.test_client()
    sign_in(client, username)
    return client


def _school(app: Flask) -> School:
    return db.session.scalar(select(School).where(School.slug == "test"))


def _leader_form(app: Flask, **fields: str) -> dict[str, str]:
    with app.app_context():
        school = _school(app)
        now = utcnow()
        form = {"scope": "school", "which": "all", "start": local_input_value(now, school),
                "end": local_input_value(now + timedelta(hours=3), school), "reason": "open dag"}
    form.update(fields)
    return form


TOKEN_RE = re.compile(r'name="token" value="([^"]+)"')


def _preview(client, form: dict) -> tuple[str, str]:
    """Step one: the page with the exception in words, and the token that confirms it."""
    response = client.post("/leiding/uitzonderingen",
                           data={**form, "csrf_token": csrf_token(client, "/leiding")})
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    page = response.get_data(as_text=True)
    return page, TOKEN_RE.search(page).group(1)


def _confirm(client, form: dict, token: str, **extra: str):
    return client.post("/leiding/uitzonderingen",
                       data={**form, "step": "confirm", "token": token, **extra,
                             "csrf_token": csrf_token(client, "/leiding")})


def test_leader_grants_a_school_wide_exception_shown_as_active(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    form = _leader_form(app)
    _page, token = _preview(client, form)
    response = _confirm(client, form, token)
    assert response.status_code == 302
    with app.app_context():
        grant = db.session.scalar(select(ExceptionGrant).where(ExceptionGrant.scope == "school"))
        assert grant is not None and grant.services is None and grant.reason == "open dag"
    page = client.get("/leiding").get_data(as_text=True)
    assert "hele school" in page and "open dag" in page and "data-end" in page


def _tomorrow(app: Flask, start: str, end: str, **fields: str) -> dict[str, str]:
    with app.app_context():
        day = (utcnow().astimezone(ZONE) + timedelta(days=1)).date().isoformat()
    return _leader_form(app, start=f"{day}T{start}", end=f"{day}T{end}", **fields)


def _school_exceptions(app: Flask) -> list[ExceptionGrant]:
    with app.app_context():
        return list(db.session.scalars(select(ExceptionGrant).where(
            ExceptionGrant.scope != "lesson").order_by(ExceptionGrant.id)))


# Form handling only: the database does not matter.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_new_exception_form_starts_with_nothing_chosen(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    page = client.get("/leiding").get_data(as_text=True)
    form = page[page.index('id="new-exception"'):]
    assert re.search(r'<option value="" selected>— kies —</option>', form)
    assert not re.search(r'<option value="(school|room|group)" selected', form)
    assert 'name="which" value="all" checked' not in form and " checked>" not in form
    # A date and a 24-hour time apart: no AM/PM in an English-speaking Chromium.
    assert re.search(r'name="start_day" type="date" value=""', form)
    assert re.search(r'name="end_time" type="text" value=""', form)
    assert "datetime-local" not in form
    # Nothing chosen is refused at the fields, and nothing is written.
    response = client.post("/leiding/uitzonderingen", data={
        "scope": "", "start": "", "end": "", "csrf_token": csrf_token(client, "/leiding")})
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Kies de school, een lokaal of een groep." in text
    assert "Kies alle sociale media of alleen sommige diensten." in text
    assert _school_exceptions(app) == []
    response = client.post("/leiding/uitzonderingen", data={
        **_leader_form(app), "services": ["youtube"], "csrf_token": csrf_token(client, "/leiding")})
    assert response.status_code == 400
    assert "kies een van de twee" in response.get_data(as_text=True)


def test_school_wide_grant_is_said_in_words_and_needs_the_second_step(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    form = _tomorrow(app, "09:00", "11:00")
    page, token = _preview(client, form)
    assert "Alle sociale media toegestaan in de hele school, morgen 09:00–11:00" in page
    assert "Ja, toekennen voor de hele school" in page
    assert _school_exceptions(app) == []  # the preview writes nothing
    # Without the preview's token (a one-tap form, a script, a stale page): shown again.
    for bad in ("", "0" * 32):
        response = _confirm(client, form, bad)
        assert response.status_code == 400
        assert "Bekijk wat de uitzondering doet en bevestig opnieuw." in response.get_data(
            as_text=True)
    # The token is for what was shown: a later end is not granted with it.
    response = _confirm(client, {**form, "end": form["end"].replace("11:00", "12:00")}, token)
    assert response.status_code == 400 and _school_exceptions(app) == []
    response = _confirm(client, form, token)
    assert response.status_code == 302
    (grant,) = _school_exceptions(app)
    assert grant.services is None
    page = client.get("/leiding").get_data(as_text=True)
    assert ("Uitzondering toegekend: Alle sociale media toegestaan in de hele school, morgen "
            "09:00–11:00.") in page


def _existing(app: Flask, world, start: str, end: str, services=None) -> int:
    from server.dashboard.common import parse_local_datetime
    form = _tomorrow(app, start, end)
    with app.app_context():
        school = _school(app)
        grant = ExceptionGrant(school_id=school.id, scope="school", services=services,
                               start=parse_local_datetime(form["start"], school),
                               end=parse_local_datetime(form["end"], school), reason="",
                               granted_by_id=world.people["leiding"])
        db.session.add(grant)
        db.session.commit()
        return grant.id


def test_an_overlap_is_shown_and_only_one_that_covers_the_services_can_be_extended(
        app: Flask, world) -> None:
    youtube_only = _existing(app, world, "09:00", "10:00", services=["youtube"])
    elsewhen = _existing(app, world, "14:00", "15:00")
    with app.app_context():
        other = School(slug="andere", name="Andere school")
        db.session.add(other)
        db.session.flush()
        foreign = ExceptionGrant(school_id=other.id, scope="school", services=None,
                                 start=utcnow(), end=utcnow() + timedelta(days=2), reason="")
        db.session.add(foreign)
        db.session.commit()
        foreign_id = foreign.id
    client = _signed_in(app, "leiding")
    form = _tomorrow(app, "09:30", "11:00")
    page, token = _preview(client, form)
    # Shown, but YouTube alone does not cover "all social media": no "extend" for it.
    assert "Dit overlapt met:" in page and "Liever deze verlengen" not in page
    before = [(e.id, e.start, e.end) for e in _school_exceptions(app)]
    for target in (youtube_only, elsewhen, foreign_id, "x"):
        response = _confirm(client, form, token, step="extend", extend_id=str(target))
        assert response.status_code == 400, target
        assert "kan niet (meer) verlengd worden" in response.get_data(as_text=True)
    assert [(e.id, e.start, e.end) for e in _school_exceptions(app)] == before
    # One added since the preview: the old token no longer confirms; the new preview shows it.
    existing = _existing(app, world, "09:00", "10:00")
    response = _confirm(client, form, token)
    assert response.status_code == 400 and len(_school_exceptions(app)) == len(before) + 1
    page, token = _preview(client, form)
    assert "Liever deze verlengen" in page and "Toch een nieuwe uitzondering toekennen" in page
    response = _confirm(client, form, token, step="extend", extend_id=str(existing))
    assert response.status_code == 302
    grant = next(e for e in _school_exceptions(app) if e.id == existing)
    assert _local(grant.start) == "09:00" and _local(grant.end) == "11:00"
    assert len(_school_exceptions(app)) == len(before) + 1  # extended, not duplicated
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "exception.extend"))
        assert event.object_id == str(existing)
    assert "Uitzondering verlengd: Alle sociale media toegestaan in de hele school, morgen " \
           "09:00–11:00." in client.get("/leiding").get_data(as_text=True)


# Form handling only: the database does not matter.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_room_exception_names_the_room_and_only_some_services(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.code == "2.14"))
        room_id = str(room.id)
    form = _tomorrow(app, "13:00", "14:30", scope="room", room=room_id, which="some",
                     services=["youtube", "tiktok"])
    page, token = _preview(client, form)
    assert "TikTok, YouTube toegestaan in lokaal 2.14, morgen 13:00–14:30" in page
    assert "Ja, toekennen voor de hele school" not in page
    assert _confirm(client, form, token).status_code == 302
    (grant,) = _school_exceptions(app)
    assert grant.scope == "room" and grant.services == ["tiktok", "youtube"]


@pytest.mark.parametrize("fields, field, message", [
    ({"end": ""}, "end", "Vul een datum en tijd in."),
    ({"start": "gisteren"}, "start", "zoals 2026-11-23 09:00"),
    ({"scope": "room", "room": ""}, "room", "Kies een lokaal."),
    ({"scope": "group", "group": "999"}, "group", "Kies een groep."),
    ({"scope": "planet"}, "scope", "Kies de school, een lokaal of een groep."),
])
def test_leader_form_shows_errors_at_the_field_and_writes_nothing(app: Flask, world, fields,
                                                                  field, message) -> None:
    client = _signed_in(app, "leiding")
    response = client.post("/leiding/uitzonderingen",
                           data={**_leader_form(app, **fields),
                                 "csrf_token": csrf_token(client, "/leiding")})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(ExceptionGrant).where(
            ExceptionGrant.reason == "open dag")) is None


def test_leader_exception_ending_before_it_starts_is_refused(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    with app.app_context():
        school = _school(app)
        end = local_input_value(utcnow() - timedelta(hours=1), school)
    response = client.post("/leiding/uitzonderingen",
                           data={**_leader_form(app, end=end),
                                 "csrf_token": csrf_token(client, "/leiding")})
    assert response.status_code == 400
    assert "Het einde moet na het begin liggen" in response.get_data(as_text=True)


def test_leader_revokes_any_exception(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    response = client.post(f"/exceptions/{world.exception}/revoke",
                           data={"csrf_token": csrf_token(client, "/leiding"), "next": "/leiding"})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(ExceptionGrant, world.exception).revoked_at is not None


def test_audit_log_filters_by_who_what_and_when(app: Flask, world) -> None:
    teacher = _signed_in(app, "docent")
    teacher.post("/nu/grant", data={"lesson_id": world.own_lesson, "duration": "10",
                                    "csrf_token": csrf_token(teacher, "/nu")})
    client = _signed_in(app, "leiding")

    def rows(query: str) -> str:
        page = client.get("/audit" + query).get_data(as_text=True)
        return page[page.index('<ol class="audit-list">'):page.index("</ol>")]

    granted, added = "uitzondering toegekend", "segment toegevoegd"
    assert granted in rows("?actor=docent") and added not in rows("?actor=docent")
    assert added in rows("?action=segment.create")
    assert granted not in rows("?action=segment.create")
    assert granted in rows(f"?since={utcnow().date()}&until={utcnow().date()}") or \
        granted in rows(f"?since={(utcnow() - timedelta(days=1)).date()}")
    assert "Geen gebeurtenissen gevonden." in rows("?since=2001-01-01&until=2001-01-02")
    page = client.get("/audit").get_data(as_text=True)
    assert '<option value="docent" >Docent</option>' in page  # the name, not the username
    assert '<option value="exception.grant" >uitzondering toegekend</option>' in page


def test_segment_with_overlapping_cidr_shows_the_error_at_the_cidr_field(app: Flask,
                                                                        world) -> None:
    client = _signed_in(app, "ict")
    response = client.post("/it/segmenten", data={
        "name": "lokaal 3.01", "gateway": world.gateway, "cidrs": "10.2.14.128/25",
        "new_rooms": "3.01", "csrf_token": csrf_token(client, "/it/segmenten")})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    error = re.search(r'<p class="error" id="e-cidrs">([^<]+)</p>', page)
    assert error and "overlapt" in error.group(1)
    assert 'id="f-cidrs" name="cidrs" rows="3"' in page and 'aria-invalid="true"' in page
    with app.app_context():
        assert db.session.scalar(select(Segment).where(Segment.name == "lokaal 3.01")) is None


@pytest.mark.parametrize("fields, field", [
    ({"cidrs": "10.9.0.1/24"}, "cidrs"), ({"cidrs": "not-a-network"}, "cidrs"),
    ({"cidrs": ""}, "cidrs"), ({"name": ""}, "name"), ({"new_rooms": ""}, "rooms"),
    ({"new_rooms": "", "rooms": "4.O1"}, "rooms"),
    ({"gateway": "nope"}, "gateway"), ({"name": "vleugel B"}, "name"),
])
def test_segment_form_errors_name_their_field(app: Flask, world, fields, field) -> None:
    client = _signed_in(app, "ict")
    form = {"name": "nieuw", "gateway": world.gateway, "cidrs": "10.9.0.0/24",
            "new_rooms": "3.01", **fields}
    token = csrf_token(client, "/it/segmenten")
    response = client.post("/it/segmenten", data={**form, "csrf_token": token})
    assert response.status_code == 400
    assert f'id="e-{field}"' in response.get_data(as_text=True)


def test_segment_is_added_with_ipv6_and_new_room(app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    response = client.post("/it/segmenten", data={
        "name": "wifi", "gateway": world.gateway, "cidrs": "10.9.0.0/24\n2001:db8:9::/64",
        "new_rooms": "3.01, 3.02", "csrf_token": csrf_token(client, "/it/segmenten")})
    assert response.status_code == 302
    with app.app_context():
        segment = db.session.scalar(select(Segment).where(Segment.name == "wifi"))
        assert segment.cidr_strings == ["10.9.0.0/24", "2001:db8:9::/64"]
        assert [r.code for r in segment.rooms] == ["3.01", "3.02"]


def test_new_gateway_shows_a_one_time_enrolment_command_that_is_stored_hashed(app: Flask,
                                                                             world) -> None:
    client = _signed_in(app, "ict")
    response = client.post("/it/gateways", data={"name": "gw-2",
                                                 "csrf_token": csrf_token(client, "/it/gateways")})
    page = response.get_data(as_text=True)
    # The agent as docs/agent.md installs it, enrolling at LESFOCUS_PUBLIC_URL.
    match = re.search(r"sudo -u lesfocus-agent /opt/lesfocus/.venv/bin/lesfocus-agent enroll "
                      r"--server http://lesfocus.test --token (lfe_[\w-]+)", page)
    assert response.status_code == 200 and match
    assert "LESFOCUS_PUBLIC_URL is niet ingesteld" not in page
    with app.app_context():
        gateway = db.session.scalar(select(Gateway).where(Gateway.name == "gw-2"))
        token = db.session.scalar(select(EnrollmentToken).where(
            EnrollmentToken.gateway_id == gateway.id))
        assert token.token_hash == hash_token(match.group(1))
    assert match.group(1) not in client.get("/it/gateways").get_data(as_text=True)


# Form handling only: the database does not matter.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_new_enrolment_token_command_uses_the_public_url_or_says_it_is_missing(
        app: Flask, world, monkeypatch) -> None:
    client = _signed_in(app, "ict")
    token = csrf_token(client, "/it/gateways")
    for public_url, expected in [
            ("https://lesfocus.school.example/", "--server https://lesfocus.school.example --token"),
            (None, "--server http://localhost --token")]:
        monkeypatch.setitem(app.config, "LESFOCUS_PUBLIC_URL", public_url)
        response = client.post(f"/it/gateways/{world.gateway}/token", data={"csrf_token": token})
        page = response.get_data(as_text=True)
        assert response.status_code == 200
        assert "/opt/lesfocus/.venv/bin/lesfocus-agent enroll " + expected in page
        assert ("LESFOCUS_PUBLIC_URL is niet ingesteld" in page) == (public_url is None)


def test_gateway_page_shows_counters_per_service(app: Flask, world) -> None:
    from server.models import GatewayCounter
    with app.app_context():
        hour = utcnow().replace(minute=0, second=0, microsecond=0)
        db.session.add(GatewayCounter(gateway_id=world.gateway, segment_id=world.segment,
                                      service_id="tiktok", hour=hour, count=42))
        db.session.commit()
    page = _signed_in(app, "ict").get(f"/it/gateways/{world.gateway}").get_data(as_text=True)
    assert re.search(r"TikTok</td><td class=\"num\">42<", page)


def test_a_policy_too_large_to_send_is_shown_to_it_with_what_to_do(app: Flask, world,
                                                                   monkeypatch) -> None:
    import server.policy
    monkeypatch.setattr(server.policy, "MAX_POLICY_BYTES", 1024)
    client = _signed_in(app, "ict")
    listing = client.get("/it/gateways").get_data(as_text=True)
    assert "Beleid te groot" in listing
    page = client.get(f"/it/gateways/{world.gateway}").get_data(as_text=True)
    assert re.search(r"het beleid is \d+ KiB, agents lezen hoogstens 1 KiB", page)
    assert "Verdeel de segmenten over meer gateways" in page
    monkeypatch.undo()
    assert "Beleid te groot" not in client.get("/it/gateways").get_data(as_text=True)


def _upload(client, data: bytes, fmt: str = "", name: str = "rooster.csv"):
    return client.post("/it/rooster", data={
        "file": (io.BytesIO(data), name), "format": fmt,
        "csrf_token": csrf_token(client, "/it/rooster")}, content_type="multipart/form-data")


def _run_the_worker_once(app: Flask) -> None:
    from server.imports import run_next_import
    with app.app_context():
        assert run_next_import() is True


def test_broken_timetable_upload_shows_the_error_with_its_line_and_imports_nothing(
        app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    broken = b"date,start,end,room\n2026-11-23,09:00,09:50,2.14\n2026-11-23,10:00\n"
    response = _upload(client, broken)
    assert response.status_code == 303
    job_page = response.headers["Location"]
    _run_the_worker_once(app)
    page = client.get(job_page).get_data(as_text=True)
    assert "mislukt" in page
    assert "Er is niets geïmporteerd." in page and "regel 3: end &#39;&#39; is geen tijd UU:MM" in page
    with app.app_context():
        assert db.session.scalar(select(Lesson).where(Lesson.source == "csv")) is None


def test_timetable_upload_is_queued_and_its_page_shows_the_importers_counts(
        app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    good = (b"date,start,end,room,group,teacher,subject\n"
            b"2026-11-23,09:00,09:50,2.14,3havo-b,DOCE,en\n")
    response = _upload(client, good, fmt="csv")
    assert response.status_code == 303  # at once: the worker imports
    job_page = response.headers["Location"]
    queued = client.get(job_page)
    assert queued.status_code == 200 and queued.headers["Refresh"] == "2"
    assert "in de wachtrij" in queued.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Lesson).where(Lesson.source == "csv")) is None

    _run_the_worker_once(app)

    done = client.get(job_page)
    assert "Refresh" not in done.headers
    page = done.get_data(as_text=True)
    assert "klaar" in page and re.search(r"<dt>nieuw</dt><dd>1</dd>", page)
    listing = client.get("/it/rooster").get_data(as_text=True)
    assert "rooster.csv" in listing and "klaar" in listing


def test_a_queued_import_left_alone_says_the_worker_is_missing(app: Flask, world) -> None:
    from server.models import ImportJob
    client = _signed_in(app, "ict")
    job_page = _upload(client, b"date,start,end,room\n").headers["Location"]
    assert "Nog geen worker" not in client.get(job_page).get_data(as_text=True)
    with app.app_context():
        job = db.session.scalar(select(ImportJob))
        job.created_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    assert "Nog geen worker heeft dit bestand opgepakt" in client.get(job_page).get_data(
        as_text=True)


@pytest.mark.parametrize(("data", "fmt", "message"), [
    (None, "", "Kies een bestand om te importeren."),
    (b"date\n", "xlsx", "Onbekend formaat."),
    (b"", "", "the file is empty"),
])
def test_an_upload_without_a_usable_file_is_refused_at_once(app: Flask, world, data, fmt,
                                                             message) -> None:
    from server.models import ImportJob
    client = _signed_in(app, "ict")
    form = {"format": fmt, "csrf_token": csrf_token(client, "/it/rooster")}
    if data is not None:
        form["file"] = (io.BytesIO(data), "rooster.csv")
    response = client.post("/it/rooster", data=form, content_type="multipart/form-data")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(ImportJob)) is None


def test_another_schools_import_is_not_found(app: Flask, world) -> None:
    from server.imports import queue_import
    from server.models import ImportJob
    with app.app_context():
        other = School(slug="ander", name="Ander college", timezone="Europe/Amsterdam",
                       aliases=[])
        db.session.add(other)
        db.session.flush()
        person = Person(school_id=other.id, username="ander-ict", roles=["it_admin"])
        db.session.add(person)
        db.session.flush()
        job_id = queue_import(other, b"date\n", "geheim.csv", None, actor=person).id
        db.session.commit()
    client = _signed_in(app, "ict")
    response = client.get(f"/it/rooster/{job_id}")
    assert response.status_code == 404
    assert "geheim.csv" not in client.get("/it/rooster").get_data(as_text=True)
    with app.app_context():
        assert db.session.get(ImportJob, job_id).state == "queued"


def test_blocked_services_are_saved_and_audited(app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    response = client.post("/it/diensten", data={
        "services": ["tiktok", "instagram"], "csrf_token": csrf_token(client, "/it/diensten")})
    assert response.status_code == 302
    with app.app_context():
        assert _school(app).blocked_services == ["instagram", "tiktok"]
        assert db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "school.blocked_services")) is not None


def test_reminder_preview_shows_unsaved_text_and_save_stores_it(app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    url = f"/it/herinneringen/{world.reminder}"
    token = csrf_token(client, url)
    response = client.post(url, data={"text_nl": "Denk aan privacy.", "text_en": "Mind privacy.",
                                      "enabled": "on", "action": "preview", "csrf_token": token})
    page = response.get_data(as_text=True)
    assert '<p class="rp-text">Denk aan privacy.</p>' in page
    with app.app_context():
        assert db.session.get(Reminder, world.reminder).texts.get("nl") != "Denk aan privacy."
    response = client.post(url, data={"text_nl": "Denk aan privacy.", "text_en": "Mind privacy.",
                                      "enabled": "on", "action": "save", "csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Reminder, world.reminder).texts == {
            "nl": "Denk aan privacy.", "en": "Mind privacy."}
    response = client.post(url, data={"text_nl": "", "text_en": "x", "action": "save",
                                      "csrf_token": token})
    assert response.status_code == 400 and 'id="e-text_nl"' in response.get_data(as_text=True)


def test_it_adds_a_person_who_can_then_sign_in(app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    response = client.post("/it/mensen", data={
        "display_name": "P. Nieuw", "username": "nieuw", "teacher_code": "NIEU",
        "roles": ["teacher"], "password": "een lang wachtwoord",
        "csrf_token": csrf_token(client, "/it/mensen")})
    assert response.status_code == 302
    sign_in(app.test_client(), "nieuw", "een lang wachtwoord")


@pytest.mark.parametrize("fields, field", [
    ({"username": "docent"}, "username"), ({"password": "kort"}, "password"),
    ({"teacher_code": "DOCE"}, "teacher_code"), ({"roles": ["king"]}, "roles"),
    ({"password": ""}, "password"),
])
def test_person_form_errors_name_their_field(app: Flask, world, fields, field) -> None:
    client = _signed_in(app, "ict")
    form = {"display_name": "X", "username": "iemand", "teacher_code": "",
            "roles": ["teacher"], "password": "een lang wachtwoord", **fields}
    response = client.post("/it/mensen", data={**form,
                                               "csrf_token": csrf_token(client, "/it/mensen")})
    assert response.status_code == 400
    assert f'id="e-{field}"' in response.get_data(as_text=True) or \
        (field == "roles" and "Onbekende rol." in response.get_data(as_text=True))


def test_it_admin_cannot_remove_their_own_it_role(app: Flask, world) -> None:
    client = _signed_in(app, "ict")
    url = f"/it/mensen/{world.people['ict']}"
    response = client.post(url, data={"display_name": "Ict", "username": "ict",
                                      "roles": ["teacher"], "active": "on",
                                      "csrf_token": csrf_token(client, url)})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Person, world.people["ict"]).roles == ["it_admin"]


def test_reminder_preview_uses_the_extensions_own_dialog_words() -> None:
    import json
    from pathlib import Path

    from server.dashboard.it import EXTENSION_DIALOG
    locales = Path(__file__).resolve().parents[3] / "extension" / "_locales"
    for lang, words in EXTENSION_DIALOG.items():
        messages = json.loads((locales / lang / "messages.json").read_text(encoding="utf-8"))
        assert {key: messages[key]["message"] for key in words} == words


def test_audit_log_says_in_words_who_allowed_what_for_which_lesson(app: Flask, world) -> None:
    from zoneinfo import ZoneInfo
    teacher = _signed_in(app, "docent")
    teacher.post("/nu/grant", data={"lesson_id": world.own_lesson, "duration": "rest",
                                    "csrf_token": csrf_token(teacher, "/nu")})
    with app.app_context():
        lesson = db.session.get(Lesson, world.own_lesson)
        grant = db.session.scalar(select(ExceptionGrant).where(
            ExceptionGrant.lesson_id == world.own_lesson))
        zone = ZoneInfo("Europe/Amsterdam")
        start = f"{grant.start.astimezone(zone):%H:%M}"  # the end has its day too after midnight
    page = _signed_in(app, "leiding").get("/audit?action=exception.grant").get_data(as_text=True)
    assert f"Docent stond alle sociale media toe voor 3havo-b, vak0, {start}–" in page
    assert lesson.end.isoformat() not in page


def test_leader_form_takes_the_start_as_a_date_and_a_24_hour_time(app: Flask, world) -> None:
    client = _signed_in(app, "leiding")
    token = csrf_token(client, "/leiding")
    with app.app_context():
        soon = (utcnow() + timedelta(minutes=90)).astimezone(ZONE)
        later = soon + timedelta(minutes=30)
    day, clock = soon.strftime("%Y-%m-%d"), soon.strftime("%H:%M")
    cases = [((day, clock), True), ((day, f"{soon.hour}.{soon.minute:02d}"), True),
             ((day, ""), False), (("", clock), False), ((day, "9 uur"), False)]
    for (start_day, start_time), accepted in cases:
        response = client.post("/leiding/uitzonderingen", data={
            "scope": "school", "which": "all", "start_day": start_day, "start_time": start_time,
            "end_day": later.strftime("%Y-%m-%d"), "end_time": later.strftime("%H:%M"),
            "reason": "", "step": "preview", "csrf_token": token})
        page = response.get_data(as_text=True)
        if accepted:
            assert response.status_code == 200 and 'id="e-start"' not in page, (start_time, page)
        else:
            assert 'id="e-start"' in page and "Vul een datum en tijd in" in page, start_time
