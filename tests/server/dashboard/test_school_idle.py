"""The dashboard's idle timeout per school (issue 13): 20 minutes unless the school's IT sets
its own on /it/school; retention keeps sessions as long as the longest school allows."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from server.config import DEFAULTS
from server.extensions import db
from server.models import AuditEvent, DashboardSession, School, utcnow
from server.scheduler import apply_retention
from server.school_settings import longest_idle_minutes

from tests.support.dashboard import csrf_token, sign_in


def _idle_for(app: Flask, minutes: float) -> None:
    with app.app_context():
        for row in db.session.scalars(select(DashboardSession)):
            row.last_seen_at = utcnow() - timedelta(minutes=minutes)
        db.session.commit()


def _school(app: Flask) -> School:
    with app.app_context():
        return db.session.scalar(select(School).where(School.slug == "test"))


def test_the_install_default_is_twenty_minutes(app: Flask, world) -> None:
    assert DEFAULTS["DASHBOARD_IDLE_MINUTES"] == 20
    teacher = app.test_client()
    sign_in(teacher, "docent")
    _idle_for(app, app.config["LESFOCUS_DASHBOARD_IDLE_MINUTES"] - 1)
    assert teacher.get("/nu").status_code == 200
    _idle_for(app, app.config["LESFOCUS_DASHBOARD_IDLE_MINUTES"] + 0.1)
    assert teacher.get("/nu").status_code == 302


def test_it_sets_the_schools_idle_timeout_and_it_holds_for_its_staff(app: Flask, world) -> None:
    it = app.test_client()
    sign_in(it, "ict")
    assert "Schoolinstellingen" in it.get("/it/school").get_data(as_text=True)
    answer = it.post("/it/school", data={"csrf_token": csrf_token(it, "/it/school"),
                                         "idle_minutes": "45"})
    assert answer.status_code == 302
    assert _school(app).idle_minutes == 45
    teacher = app.test_client()
    sign_in(teacher, "docent")
    _idle_for(app, 44)
    assert teacher.get("/nu").status_code == 200
    _idle_for(app, 45.1)
    assert teacher.get("/nu").status_code == 302
    page = teacher.get("/login").get_data(as_text=True)
    assert "Je bent afgemeld na 45 minuten zonder activiteit" in page
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "school.idle_minutes"))
        assert event.details == {"before": None, "after": 45}
        assert longest_idle_minutes() == 45
    # Empty: back to the install's default.
    sign_in(it, "ict")
    it.post("/it/school", data={"csrf_token": csrf_token(it, "/it/school"), "idle_minutes": ""})
    assert _school(app).idle_minutes is None


REFUSED = ["4", "481", "0", "-5", "10.5", "abc", "²³", "1e2", "9" * 30, "٣٠"]


def test_an_out_of_range_idle_timeout_is_refused_naming_the_field(app: Flask, world) -> None:
    it = app.test_client()
    sign_in(it, "ict")
    token = csrf_token(it, "/it/school")
    for value in REFUSED:
        answer = it.post("/it/school", data={"csrf_token": token, "idle_minutes": value})
        assert answer.status_code == 400, value
        page = answer.get_data(as_text=True)
        assert 'id="e-idle_minutes"' in page and "van 5 tot 480" in page
    assert _school(app).idle_minutes is None


def test_retention_keeps_sessions_as_long_as_the_longest_school_allows(app: Flask,
                                                                       world) -> None:
    teacher = app.test_client()
    sign_in(teacher, "docent")
    with app.app_context():
        db.session.scalar(select(School).where(School.slug == "test")).idle_minutes = 90
        db.session.commit()
    _idle_for(app, 60)
    with app.app_context():
        deleted = apply_retention(365, 90, 30, longest_idle_minutes())
        assert deleted["dashboard_sessions"] == 0
    assert teacher.get("/nu").status_code == 200
