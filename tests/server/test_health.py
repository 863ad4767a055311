"""/healthz and /readyz for a load balancer: public, cheap, in words, and nothing sensitive in
them; the worker's heartbeat that /readyz reads (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import make_url

from server.app import create_app
from server.extensions import db
from server.health import WORKER, check_readiness, record_worker_heartbeat
from server.models import WorkerHeartbeat
from server.worker import FileLeaderLock, run_worker

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def _beat(app: Flask, at: datetime) -> None:
    with app.app_context():
        record_worker_heartbeat(at)
        db.session.commit()


def test_healthz_says_ok_without_asking_the_database(app: Flask, client) -> None:
    app.extensions["lesfocus.signing_key"] = None  # nor the key: only that the process answers
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}
    assert answer.headers["Cache-Control"] == "no-store"


def test_readyz_is_200_with_every_check_passed_and_needs_no_sign_in(app: Flask, client) -> None:
    _beat(app, datetime.now(timezone.utc))
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ready", "checks": {
        "database": "ok", "signing_key": "ok", "worker": "ok"}}


def test_readyz_counts_the_worker_stale_after_the_limit_on_an_injected_clock(app: Flask) -> None:
    _beat(app, NOW)
    limit = app.config["LESFOCUS_WORKER_STALE_SECONDS"]
    with app.app_context():
        assert check_readiness(app, NOW + timedelta(seconds=limit)).ready
        late = check_readiness(app, NOW + timedelta(seconds=limit + 1))
    assert not late.ready
    assert late.checks == {"database": "ok", "signing_key": "ok",
                           "worker": f"stale: last heartbeat {limit + 1} s ago (limit {limit} s)"}


@pytest.mark.parametrize("case, failed", [
    ("stale heartbeat", {"worker": "stale: last heartbeat 600 s ago (limit 120 s)"}),
    ("no heartbeat", {"worker": "no heartbeat yet (is `lesfocus worker` running?)"}),
    ("no signing key", {"signing_key": "not loaded"}),
])
def test_readyz_is_503_naming_the_check_that_failed(app: Flask, client, monkeypatch,
                                                     case: str, failed: dict[str, str]) -> None:
    import server.health
    now = datetime.now(timezone.utc).replace(microsecond=0)
    monkeypatch.setattr(server.health, "utcnow", lambda: now)
    if case != "no heartbeat":
        _beat(app, now - timedelta(seconds=600) if case == "stale heartbeat" else now)
    if case == "no signing key":
        app.extensions["lesfocus.signing_key"] = None
    answer = client.get("/readyz")
    assert answer.status_code == 503
    body = answer.get_json()
    assert body["checks"] == {"database": "ok", "signing_key": "ok", "worker": "ok", **failed}
    assert body["status"] == "not ready" and body["error"] == "Service Unavailable"
    (name, outcome), = failed.items()
    assert body["message"] == f"not ready: {name}: {outcome}"


def _unreachable(database_url: str, tmp_path: Path) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'lesfocus.sqlite3'}"
    return url.set(database=f"gone_{uuid.uuid4().hex[:8]}").render_as_string(
        hide_password=False)


def test_readyz_with_the_database_down_says_so_and_reveals_nothing_of_it(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = _unreachable(database_url, tmp_path)
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": broken,
                      "SECRET_KEY": "test-secret-key", "TESTING": True})
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        answer = client.get("/readyz")
        assert answer.status_code == 503
        body = answer.get_json()
        assert body["checks"] == {"database": "unreachable", "signing_key": "ok",
                                  "worker": "unknown (database unreachable)"}
        text = answer.get_data(as_text=True)
        database = make_url(broken).database or ""
        for secret in (Path(database).name, "sqlite", "psycopg", "Error", "SELECT"):
            assert secret not in text
        assert "readyz: the database cannot be reached: OperationalError" in caplog.text
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_the_active_worker_writes_its_heartbeat_with_its_clock(app: Flask,
                                                               tmp_path: Path) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(app, stop), daemon=True, kwargs={
        "lock": FileLeaderLock(tmp_path / "in-process.lock"), "clock": lambda: NOW,
        "heartbeat_seconds": 0.05, "poll_seconds": 0.05})
    thread.start()
    try:
        beat = None
        for _ in range(200):  # up to 20 s, checked every 0.1 s
            with app.app_context():
                beat = db.session.get(WorkerHeartbeat, WORKER)
                beat = beat and beat.beat_at
            if beat is not None:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert beat == NOW


# PostgreSQL only: a server that ends its sessions, as a restart does.
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readyz_is_ready_again_at_once_after_the_database_closed_its_connections(
        app: Flask, client, database_url: str) -> None:
    _beat(app, datetime.now(timezone.utc))
    assert client.get("/readyz").status_code == 200  # a pooled connection now exists
    with app.app_context():
        name = make_url(database_url).database
        admin = sa.create_engine(database_url.rsplit("/", 1)[0] + "/postgres",
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            ended = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar()
        admin.dispose()
    assert ended >= 1
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.get_json()
