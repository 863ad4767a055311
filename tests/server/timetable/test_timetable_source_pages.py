"""The IT page per timetable source (state, "Nu synchroniseren", deleting), and the warning to IT
and leaders when a source has failed for more than an hour."""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from tests.support.dashboard import PASSWORD, csrf_token, sign_in
from tests.support.timetable import Importer
from tests.support.timetable_servers import ZermeloServer

from server.extensions import db
from server.models import AuditEvent, Person, School, TimetableSource, utcnow
from server.passwords import hash_password

TOKEN = "zt-page-test-5e0c93b1aa"
ICAL = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:ical-1@t\r\n"
        "DTSTAMP:20261001T000000Z\r\nDTSTART;TZID=Europe/Amsterdam:20261103T083000\r\n"
        "DTEND;TZID=Europe/Amsterdam:20261103T092000\r\nLOCATION:C101\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n")


def _people(app: Flask) -> None:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        hashed = hash_password(PASSWORD)
        for username, roles in (("ict", ["it_admin"]), ("leiding", ["leader"])):
            db.session.add(Person(school_id=school.id, username=username,
                                  display_name=username.title(), roles=roles,
                                  password_hash=hashed))
        db.session.commit()


def _page(client, path: str = "/it/rooster") -> str:  # type: ignore[no-untyped-def]
    response = client.get(path)
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


def _source_id(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(TimetableSource.id).where(
            TimetableSource.name == "zportal"))


# Who sees what on the page does not depend on the database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_it_syncs_a_source_from_its_page_sees_its_state_and_deletes_it_after_confirming(
        app: Flask, importer: Importer, tmp_path: Path) -> None:
    _people(app)
    importer.run(ICAL, "gebouw-c.ics", source="gebouw-c")
    now = utcnow()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with ZermeloServer(TOKEN) as portal:
        portal.appointments = [
            {"id": i, "appointmentInstance": i, "start": int((now + timedelta(days=i)).timestamp()),
             "end": int((now + timedelta(days=i, minutes=50)).timestamp()), "type": "lesson",
             "cancelled": False, "valid": True, "locations": ["B204"], "groups": [],
             "teachers": [], "subjects": ["ne"]} for i in (1, 2)]
        result = app.test_cli_runner().invoke(args=[
            "timetable", "source", "add", "zportal", "--school", "test", "--kind", "zermelo",
            "--url", portal.base, "--token-file", str(token_file)])
        assert result.exit_code == 0, result.output
        source_id = _source_id(app)
        client = app.test_client()
        sign_in(client, "ict")
        page = _page(client)
        assert "Roosterbronnen" in page and "zportal" in page and "Laatste poging" in page
        assert "nooit" in page and "Nu synchroniseren" in page and TOKEN not in page

        # "Nu synchroniseren": the request syncs, and the page says what changed.
        response = client.post(f"/it/rooster/bronnen/{source_id}/synchroniseren",
                               data={"csrf_token": csrf_token(client, "/it/rooster")})
        assert response.status_code == 303
        page = _page(client)
        assert "zportal gesynchroniseerd: 2 nieuw, 0 gewijzigd, 0 uitgevallen, 0 verwijderd." \
            in page
        assert "2 nieuw, 0 gewijzigd" in page  # the source's last change, kept on the page
        assert len(importer.lessons("zportal")) == 2

        # The portal refuses the token: the error in words, the lessons stay.
        portal.token = "revoked"
        client.post(f"/it/rooster/bronnen/{source_id}/synchroniseren",
                    data={"csrf_token": csrf_token(client, "/it/rooster")})
        page = _page(client)
        assert "Synchroniseren van zportal is mislukt" in page
        assert "De laatste poging is mislukt:" in page and "did not accept the token" in page
        assert "meer dan een uur" not in page
        assert len(importer.lessons("zportal")) == 2 and TOKEN not in page

    # Failing for more than an hour: IT and the leaders are warned; the lessons stay in force.
    with app.app_context():
        source = db.session.get(TimetableSource, source_id)
        source.last_success_at = utcnow() - timedelta(hours=1, minutes=5)
        db.session.commit()
    assert "synchroniseert al meer dan een uur niet" in _page(client)
    leader = app.test_client()
    sign_in(leader, "leiding")
    assert "zportal is al meer dan een uur niet gesynchroniseerd" in _page(leader, "/leiding")
    assert len(importer.lessons("zportal")) == 2
    # A leader may not sync or delete sources.
    assert leader.post(f"/it/rooster/bronnen/{source_id}/synchroniseren", data={
        "csrf_token": csrf_token(leader, "/leiding")}).status_code == 403

    # Deleting asks first, naming how many lessons go; a stale number asks again.
    page = _page(client, f"/it/rooster/bronnen/{source_id}/verwijderen")
    assert "Roosterbron zportal verwijderen?" in page
    assert "De 2 lessen ervan worden ook verwijderd" in page
    token = csrf_token(client, f"/it/rooster/bronnen/{source_id}/verwijderen")
    again = client.post(f"/it/rooster/bronnen/{source_id}/verwijderen",
                        data={"csrf_token": token, "confirm": "5"})
    assert again.status_code == 200 and len(importer.lessons("zportal")) == 2
    done = client.post(f"/it/rooster/bronnen/{source_id}/verwijderen",
                       data={"csrf_token": token, "confirm": "2"})
    assert done.status_code == 303
    assert "Bron zportal en de 2 lessen ervan zijn verwijderd." in _page(client)
    assert importer.lessons("zportal") == []
    assert [l.source_id for l in importer.lessons("gebouw-c")] == ["ical-1@t"]
    with app.app_context():
        assert db.session.get(TimetableSource, source_id) is None
        deleted = db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "timetable.source_delete"))
        assert deleted.details["lessons"] == 2 and deleted.actor_label == "ict"
    assert "synchroniseert al meer dan een uur niet" not in _page(client)
