"""A request the database cannot serve now is answered 503 with Retry-After and changes nothing.

The pool here has one connection and waits one second for it (LESFOCUS_DB_POOL_*); the test
holds that connection, as a burst of requests holds all of them in production (issue 10: under
5,000 re-polling agents requests waited 30 s for a connection and then got a 500).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from server.app import create_app
from server.extensions import db
from server.models import ExceptionGrant
from tests.support.api import add_person, bearer, count_rows
from tests.support.dashboard import sign_in

TIGHT_POOL = {"DB_POOL_SIZE": 1, "DB_POOL_OVERFLOW": 0, "DB_POOL_TIMEOUT": 1}


def _retry_after(answer) -> int:
    value = int(answer.headers["Retry-After"])
    assert 5 <= value <= 20
    return value


def test_no_free_connection_is_a_503_with_retry_after_and_nothing_is_written(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(**TIGHT_POOL)
    add_person(app, "leider", "leader")
    client = app.test_client()
    headers = bearer(client, "leider")
    with app.app_context():
        held = db.engine.connect()  # the pool's only connection
        try:
            answer = client.post("/api/v1/exceptions", headers=headers,
                                 json={"scope": "school", "minutes": 30})
            assert answer.status_code == 503
            _retry_after(answer)
            body = answer.get_json()
            assert body["error"] == "Service Unavailable"
            assert "nothing was changed" in body["message"]
            assert "Traceback" not in answer.get_data(as_text=True)

            page = client.get("/login", headers={"Accept": "text/html"})
            if page.status_code == 503:  # the login page itself may need no database
                assert "erg druk" in page.get_data(as_text=True)
            form = client.post("/login", headers={"Accept": "text/html"},
                               data={"username": "leider", "password": "x"})
            assert form.status_code in (400, 503)  # 400: the CSRF check came first
        finally:
            held.close()
    assert count_rows(app, ExceptionGrant) == 0
    # With the connection back the same request goes through.
    answer = client.post("/api/v1/exceptions", headers=headers,
                         json={"scope": "school", "minutes": 30})
    assert answer.status_code == 201, answer.get_json()
    assert count_rows(app, ExceptionGrant) == 1


def test_a_dashboard_page_without_a_free_connection_says_so_in_dutch(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(**TIGHT_POOL)
    add_person(app, "leider", "leader")
    client = app.test_client()
    sign_in(client, "leider")
    with app.app_context():
        held = db.engine.connect()
        try:
            page = client.get("/nu", headers={"Accept": "text/html"})
        finally:
            held.close()
    assert page.status_code == 503
    _retry_after(page)
    text = page.get_data(as_text=True)
    assert "De server is nu erg druk en er is niets veranderd" in text
    assert "Traceback" not in text and "QueuePool" not in text


def test_an_unreachable_database_is_a_503_and_its_address_is_not_told(tmp_path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"),
                      "DATABASE_URL": "postgresql+psycopg://lesfocus:geheim@127.0.0.1:1/lesfocus",
                      "SECRET_KEY": "test-secret-key", "PUBLIC_URL": "http://lesfocus.test",
                      "TESTING": True})
    answer = app.test_client().post("/api/v1/auth/token",
                                    json={"username": "iemand", "password": "x"})
    assert answer.status_code == 503
    _retry_after(answer)
    assert "geheim" not in answer.get_data(as_text=True)
    assert "127.0.0.1" not in answer.get_data(as_text=True)


@pytest.mark.parametrize("setting", ["DB_POOL_SIZE", "DB_POOL_OVERFLOW", "DB_POOL_TIMEOUT"])
def test_the_pool_bounds_reach_the_engine(tmp_path, setting: str) -> None:
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                      "SECRET_KEY": "k", "TESTING": True, setting: 3})
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    name = {"DB_POOL_SIZE": "pool_size", "DB_POOL_OVERFLOW": "max_overflow",
            "DB_POOL_TIMEOUT": "pool_timeout"}[setting]
    assert options[name] == 3
    with app.app_context():
        pool = db.engine.pool
        assert {"pool_size": pool.size(), "max_overflow": pool._max_overflow,
                "pool_timeout": pool.timeout()}[name] == 3
