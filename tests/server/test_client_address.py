"""The caller's address behind N trusted proxies: read once (ProxyFix), used everywhere."""

from __future__ import annotations

import pytest
from flask import request
from sqlalchemy import select

from server.app import create_app
from server.config import load_settings
from server.extensions import db
from server.models import LoginFailure

from tests.support.api import add_lesson, add_person, add_segment_for, minutes, new_gateway, now_utc


def _seen_address(tmp_path, proxies: int, remote: str, headers: dict[str, str]) -> tuple[str, str]:
    application = create_app({"INSTANCE_PATH": str(tmp_path / "instance"),
                              "SECRET_KEY": "test-secret-key", "TESTING": True,
                              "TRUSTED_PROXIES": proxies})
    # A probe route: what every part of the server reads as the caller and the scheme.
    application.add_url_rule("/probe", "probe",
                             lambda: {"addr": request.remote_addr, "scheme": request.scheme})
    body = application.test_client().get("/probe", environ_base={"REMOTE_ADDR": remote},
                                         headers=headers).get_json()
    return body["addr"], body["scheme"]


@pytest.mark.parametrize("proxies, forwarded_for, proto, expected_addr, expected_scheme", [
    # No trusted proxy: a client's own X-Forwarded-For and -Proto are ignored.
    (0, "10.1.0.5", "https", "127.0.0.1", "http"),
    # One proxy: the entry it appended (the last one) is the caller.
    (1, "10.1.0.5", "https", "10.1.0.5", "https"),
    # A longer chain than the proxies: earlier entries were sent by the client, so untrusted.
    (1, "198.51.100.1, 10.1.0.5", "http, https", "10.1.0.5", "https"),
    (2, "198.51.100.1, 10.1.0.5, 10.9.9.9", "https", "10.1.0.5", "http"),
    # Fewer entries than trusted proxies: the header is not the proxies' own, nothing changes.
    (2, "10.1.0.5", "https", "127.0.0.1", "http"),
])
def test_forwarded_headers_count_only_for_the_trusted_hops(tmp_path, proxies, forwarded_for,
                                                          proto, expected_addr, expected_scheme):
    assert _seen_address(tmp_path, proxies, "127.0.0.1",
                         {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": proto}
                         ) == (expected_addr, expected_scheme)


@pytest.mark.parametrize("settings, environ, expected", [
    ({}, {}, 0),
    ({}, {"LESFOCUS_TRUSTED_PROXIES": "2"}, 2),
    ({}, {"LESFOCUS_TRUST_PROXY": "1"}, 1),  # the older on/off setting counts as one proxy
    ({"TRUST_PROXY": True, "TRUSTED_PROXIES": 2}, {}, 2),
])
def test_trusted_proxies_setting_and_its_older_form(settings, environ, expected):
    assert load_settings(settings, environ=environ)["TRUSTED_PROXIES"] == expected


@pytest.mark.parametrize("settings, environ", [
    ({}, {"LESFOCUS_TRUSTED_PROXIES": "one"}),
    ({"TRUSTED_PROXIES": -1}, {}),
    ({"TRUSTED_PROXIES": "1"}, {}),
])
def test_bad_trusted_proxies_setting_is_refused_by_name(settings, environ):
    with pytest.raises(ValueError, match="LESFOCUS_TRUSTED_PROXIES"):
        load_settings(settings, environ=environ)


def _in_lesson(client, remote: str, forwarded_for: str) -> bool:
    answer = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": remote},
                        headers={"X-Forwarded-For": forwarded_for})
    assert answer.status_code == 200
    return answer.get_json()["in_lesson"]


@pytest.mark.parametrize("proxies, expected_in_lesson", [(0, False), (1, True)])
def test_lesson_status_answers_for_the_forwarded_address_only_behind_a_trusted_proxy(
        make_app, proxies, expected_in_lesson):
    application = make_app(TRUSTED_PROXIES=proxies)
    gateway_id, _ = new_gateway(application, "gw")
    add_segment_for(application, gateway_id, "klas", ["10.1.0.0/24"], ["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(application, "2.14", start, start + minutes(50))
    client = application.test_client()
    # A spoofed first entry names the classroom; only the proxy's own entry may count.
    assert _in_lesson(client, "127.0.0.1", "10.1.0.9, 10.1.0.5") is expected_in_lesson
    assert _in_lesson(client, "127.0.0.1", "10.1.0.9, 192.0.2.50") is False


@pytest.mark.parametrize("proxies, recorded", [(0, "127.0.0.1"), (1, "203.0.113.7")])
def test_login_failure_is_recorded_for_the_address_the_proxy_forwarded(make_app, proxies,
                                                                       recorded):
    application = make_app(TRUSTED_PROXIES=proxies)
    add_person(application, "jans", "teacher")
    answer = application.test_client().post(
        "/api/v1/auth/token", json={"username": "jans", "password": "wrong password!"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
        headers={"X-Forwarded-For": "10.1.0.9, 203.0.113.7"})
    assert answer.status_code == 401
    with application.app_context():
        assert [(f.username, f.remote_addr) for f in db.session.scalars(select(LoginFailure))] \
            == [("jans", recorded)]
