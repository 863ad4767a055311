"""GET /metrics: never open, counts requests by route template, reads the queues from the
database, holds no address or name in a label, and sums the serve processes of one host."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from server.extensions import db
from server.models import ImportJob, School
from tests.support.served import ServedApp

TOKEN = "scrape-token-for-tests"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# A domain name as a label value would show: letters, a dot, letters (a TLD).
DOMAIN = re.compile(r"(?i)^(?:[a-z0-9-]+\.)+[a-z]{2,}$")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(client, **kwargs) -> str:  # type: ignore[no-untyped-def]
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert answer.status_code == 200, answer.data[:300]
    assert answer.mimetype == "text/plain"
    return answer.get_data(as_text=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_is_not_there_until_a_token_or_an_allow_list_is_set(app: Flask, client) -> None:
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("header, status", [
    (None, 403), ("Bearer wrong", 403), (f"Basic {TOKEN}", 403), (f"Bearer {TOKEN}x", 403),
    (f"Bearer {TOKEN}", 200), (f"bearer {TOKEN}", 200)])
def test_metrics_needs_the_bearer_token(make_app, header: str | None, status: int) -> None:
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    headers = {"Authorization": header} if header else {}
    assert client.get("/metrics", headers=headers).status_code == status


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("caller, token, status", [
    ("10.20.0.7", None, 200), ("10.21.0.7", None, 403), ("::1", None, 200),
    ("10.20.0.7", "", 403), ("10.20.0.7", TOKEN, 200), ("192.0.2.1", TOKEN, 403)])
def test_an_allow_list_limits_who_scrapes_and_with_a_token_both_must_hold(
        make_app, caller: str, token: str | None, status: int) -> None:
    settings = {"METRICS_ALLOW": "10.20.0.0/16, ::1"}
    if token is not None:
        settings["METRICS_TOKEN"] = TOKEN
    client = make_app(**settings).test_client()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": caller})
    assert answer.status_code == status


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_allow_list_is_refused_at_start_naming_the_entry(make_app) -> None:
    with pytest.raises(ValueError, match="LESFOCUS_METRICS_ALLOW: '10.0.0.300' is not"):
        make_app(METRICS_ALLOW="10.0.0.0/8,10.0.0.300")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_are_counted_by_route_template_and_status(make_app) -> None:
    app = make_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    before = _scrape(client)
    client.get("/api/v1/reminders/12")  # 401: no token
    client.get("/api/v1/reminders/13")
    client.get("/no/such/page/10.0.0.1")
    client.get("/healthz")
    after = _scrape(client)
    rule = "/api/v1/reminders/<int:reminder_id>"
    assert _value(after, "lesfocus_http_requests_total", method="GET", route=rule,
                  status="401") - _value(before, "lesfocus_http_requests_total", method="GET",
                                         route=rule, status="401") == 2
    assert _value(after, "lesfocus_http_requests_total", method="GET", route="(unmatched)",
                  status="404") >= 1
    assert _value(after, "lesfocus_http_request_duration_seconds_count", method="GET",
                  route="/healthz") >= 1
    assert "10.0.0.1" not in after and "/no/such" not in after


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_import_queue_is_read_from_the_database(make_app) -> None:
    app = make_app(METRICS_TOKEN=TOKEN)
    with app.app_context():
        school = db.session.query(School).one()
        for _ in range(3):
            db.session.add(ImportJob(school_id=school.id, requested_by_label="it", filename="x.ics",
                                     size=1, state="queued"))
        db.session.commit()
    text = _scrape(app.test_client())
    assert _value(text, "lesfocus_import_jobs", state="queued") == 3
    assert _value(text, "lesfocus_import_jobs", state="running") == 0


def _assert_no_address_or_name_in_labels(text: str) -> int:
    checked = 0
    for (name, labels), _value_ in _samples(text).items():
        for key, value in labels:
            if key == "le":
                continue
            checked += 1
            try:
                ipaddress.ip_address(value)
            except ValueError:
                pass
            else:
                raise AssertionError(f"{name}: label {key}={value!r} is an address")
            assert not DOMAIN.match(value), f"{name}: label {key}={value!r} is a domain name"
            assert "/" not in value or value.startswith("/") or value == "(unmatched)", value
    return checked


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_label_value_is_an_address_or_a_domain_name(make_app) -> None:
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    for path in ("/api/v1/keys", "/tiktok.com", "/192.168.1.10", "/login", "/healthz"):
        client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    text = _scrape(client)
    assert "10.1.2.3" not in text and "tiktok.com" not in text
    assert _assert_no_address_or_name_in_labels(text) > 5


def test_the_grafana_dashboard_refers_only_to_metrics_that_exist() -> None:
    """Every metric name in docs/grafana-dashboard.json's queries is one the server or the agent
    exports (names checked against the registries, with the suffixes Prometheus adds)."""
    import agent.metrics
    import server.metrics
    exported = set()
    for module in (server.metrics, agent.metrics):
        for family in module.metric_families():
            exported.update({family, f"{family}_total", f"{family}_bucket", f"{family}_count",
                             f"{family}_sum", f"{family}_created"})
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        used.update(n for n in re.findall(r"\blesfocus_[a-z_]+", expr))
    assert used, "no lesfocus metric in the dashboard"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    prefixes = {n.split("_")[1] for n in used}
    assert {"agent"} <= prefixes and len(prefixes) > 1  # both the agent and the server


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_serve_processes_of_a_host_answer_with_their_sum(app: Flask, database_url: str,
                                                           tmp_path: Path) -> None:
    from tests.support.waiting_agents import (add_enrolled_gateways, add_lesson_in_shared_room,
                                              current_versions, open_long_polls, read_status)
    audience = "http://lesfocus.test"  # the `app` fixture's PUBLIC_URL
    keys = add_enrolled_gateways(app, 3)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    settings = {"LESFOCUS_DATABASE_URL": database_url,
                "LESFOCUS_INSTANCE_PATH": app.instance_path, "LESFOCUS_PUBLIC_URL": audience,
                "LESFOCUS_SECRET_KEY": "test-secret-key", "LESFOCUS_METRICS_TOKEN": TOKEN,
                "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first = ServedApp(settings, tmp_path / "first.log").start()
    second = ServedApp(settings, tmp_path / "second.log").start()
    polls = {}
    try:
        for server, times in ((first, 3), (second, 4)):
            for _ in range(times):
                urllib.request.urlopen(server.url + "/healthz", timeout=10).read()

        def scrape(server: ServedApp) -> str:
            request = urllib.request.Request(server.url + "/metrics",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.read().decode()

        for server in (first, second):
            text = scrape(server)
            assert _value(text, "lesfocus_http_requests_total", method="GET", route="/healthz",
                          status="200") == 7
        # Two agents wait on the first process, one on the second: one gauge, summed.
        versions = current_versions(first.url, keys, audience)
        gateways = sorted(keys)
        for server, mine in ((first, gateways[:2]), (second, gateways[2:])):
            polls.update(open_long_polls(server.port, {g: keys[g] for g in mine}, versions,
                                         audience, wait=50))
        deadline = time.monotonic() + 30
        while _value(scrape(second), "lesfocus_long_polls_waiting") != 3:
            assert time.monotonic() < deadline, scrape(second)
            time.sleep(0.1)
        text = scrape(first)
        assert _value(text, "lesfocus_long_polls_waiting") == 3
        assert _value(text, "lesfocus_policy_size_bytes_count") == 3  # the first fetches
        assert _value(text, "lesfocus_policy_compile_seconds_count") >= 3
        add_lesson_in_shared_room(app)  # every policy changes: the polls are answered
        assert {read_status(sock, 30) for sock in polls.values()} == {200}
        deadline = time.monotonic() + 30
        while _value(scrape(first), "lesfocus_long_polls_waiting") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # A process that ended keeps its counts in the sum (totals never go down).
        first.stop()
        assert _value(scrape(second), "lesfocus_http_requests_total", method="GET",
                      route="/healthz", status="200") == 7
    finally:
        for sock in polls.values():
            sock.close()
        first.stop()
        second.stop()

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_syncs_are_counted_per_source_and_result_and_a_failing_source_shows(make_app) -> None:
    from server.timetable.common import TimetableError
    from server.timetable.sync import Fetched, sync_named
    from server.models import TimetableSource

    app = make_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    with app.app_context():
        school = db.session.query(School).one()
        source = TimetableSource(school_id=school.id, name="feed", kind="ical-url",
                                 address="https://rooster.example/feed.ics", every_minutes=15)
        db.session.add(source)
        db.session.commit()
        source_id = str(source.id)
    before = _scrape(client)

    def failing(url: str, state: object) -> Fetched:
        raise TimetableError("the feed answered HTTP 503")

    def unchanged(url: str, state: object) -> Fetched:
        return Fetched(None, None, None)

    with app.app_context():
        school = db.session.query(School).one()
        sync_named(db.session, school, "feed", fetch=failing)
        sync_named(db.session, school, "feed", fetch=failing)
    failed = _scrape(client)

    def grew(text: str, result: str) -> float:
        return _value(text, "lesfocus_timetable_syncs_total", source=source_id, result=result) \
            - _value(before, "lesfocus_timetable_syncs_total", source=source_id, result=result)
    assert grew(failed, "failed") == 2
    assert _value(failed, "lesfocus_timetable_source_failing", source=source_id) == 1
    with app.app_context():
        school = db.session.query(School).one()
        sync_named(db.session, school, "feed", fetch=unchanged)
    recovered = _scrape(client)
    assert grew(recovered, "unchanged") == 1
    assert _value(recovered, "lesfocus_timetable_source_failing", source=source_id) == 0
    assert _value(recovered, "lesfocus_timetable_source_last_success_timestamp_seconds",
                  source=source_id) > 0
    assert "rooster.example" not in recovered


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_policy_compile_is_timed(make_app) -> None:
    from server.gateways import create_gateway
    from server.policy_cache import cached_policy

    app = make_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    before = _value(_scrape(client), "lesfocus_policy_compile_seconds_count")
    with app.app_context():
        school = db.session.query(School).one()
        gateway = create_gateway(school, "gw-metrics", actor="pytest")
        db.session.commit()
        cached_policy(gateway.id, school.id)
        cached_policy(gateway.id, school.id)  # the cache answers: no second compile
    assert _value(_scrape(client), "lesfocus_policy_compile_seconds_count") - before == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_change_feed_delay_is_measured_between_two_processes(make_app) -> None:
    import time
    from datetime import datetime, timedelta, timezone

    from server import changes
    from server.metrics import FEED_DELAY
    from server.models import Lesson

    def delays() -> float:
        return next(s.value for m in FEED_DELAY.collect() for s in m.samples
                    if s.name.endswith("_count"))

    here, there = make_app(), make_app()
    with here.app_context():
        school_id = db.session.query(School).one().id
    with there.app_context():
        changes.timetable_generation(school_id)  # `there` listens from now on
    before = delays()
    with here.app_context():
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        db.session.add(Lesson(school_id=school_id, start=start, end=start + timedelta(hours=1),
                              source="manual", source_id="feed-delay"))
        db.session.commit()
    deadline = time.monotonic() + 30
    while delays() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delays() == before + 1  # `there` measured it; `here` skips its own notification
