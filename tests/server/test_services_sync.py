"""`lesfocus services sync` (and `lesfocus db upgrade`): a newer catalog reaches existing schools,
keeps their own choices, is audited per school, recompiles policies, is a no-op the second
time, and a malformed catalog changes nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import changes
from server.catalog import SHIPPED_CATALOG, CatalogError, parse_catalog
from server.extensions import db
from server.models import AuditEvent, School, Service

from tests.support.schools import seed_school

SHIPPED: dict[str, Any] = json.loads(SHIPPED_CATALOG.read_text())
TIKTOK = next(s for s in SHIPPED["services"] if s["id"] == "tiktok")
# Chosen from the shipped TikTok domains: one IT removed by hand, one the next catalog drops.
REMOVED_BY_HAND, DROPPED_BY_CATALOG = "douyin.com", "bytegoofy.com"
ADDED_BY_HAND = "tiktok-proxy.example.nl"


def _next_release(tmp_path: Path, mutate: Any = None) -> Path:
    """The shipped catalog as a next release might ship it: one more service (Mastodon), one
    new TikTok domain, one TikTok domain dropped. `mutate(data)` may break it further."""
    data = json.loads(json.dumps(SHIPPED))
    tiktok = next(s for s in data["services"] if s["id"] == "tiktok")
    tiktok["domains"] = sorted(set(tiktok["domains"]) - {DROPPED_BY_CATALOG} | {"tiktokv.eu"})
    data["services"].append({"id": "mastodon", "name": "Mastodon", "group": "social_network",
                             "domains": ["mastodon.social", "joinmastodon.org"]})
    if mutate is not None:
        mutate(data)
    path = tmp_path / "social-services.json"
    path.write_text(json.dumps(data))
    return path


def _sync(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["services", "sync", *args])
    return result.exit_code, result.output


def _state(app: Flask) -> dict[str, Any]:
    """Everything a sync may write, to compare before and after."""
    with app.app_context():
        services = {s.id: (s.name, s.group, list(s.domains), s.shipped_domains, s.updated_at)
                    for s in db.session.scalars(select(Service))}
        schools = {s.slug: s.blocked_services for s in db.session.scalars(select(School))}
        audit = db.session.scalar(select(func.count()).select_from(AuditEvent))
        generations = {s.slug: changes.generation(s.id)
                       for s in db.session.scalars(select(School))}
    return {"services": services, "schools": schools, "audit": audit,
            "generations": generations}


@pytest.fixture
def own_choices(app: Flask) -> Flask:
    """School `test` blocks everything (the default); Lucas College chose TikTok and a service
    of its own; IT added a TikTok domain and removed a shipped one."""
    with app.app_context():
        lucas = seed_school("lucas", "Lucas College")
        db.session.add(Service(id="schoolforum", name="Schoolforum", group="other",
                               domains=["forum.lucas.example.nl"]))
        lucas.blocked_services = ["schoolforum", "tiktok"]
        tiktok = db.session.get(Service, "tiktok")
        tiktok.domains = sorted(set(tiktok.domains) - {REMOVED_BY_HAND} | {ADDED_BY_HAND})
        db.session.commit()
    return app


def test_a_fresh_school_gets_the_whole_catalog_and_a_second_sync_changes_nothing(
        app: Flask) -> None:
    with app.app_context():
        catalog = {s.id: s.domains for s in db.session.scalars(select(Service))}
    assert catalog == {s["id"]: sorted(s["domains"]) for s in SHIPPED["services"]}
    before = _state(app)
    assert _sync(app) == (0, "Testcollege: geen wijzigingen\n")
    assert _state(app) == before


def test_a_newer_catalog_reaches_every_school_and_keeps_their_own_choices(
        own_choices: Flask, tmp_path: Path) -> None:
    app = own_choices
    before = _state(app)
    code, output = _sync(app, "--catalog", str(_next_release(tmp_path)))
    assert code == 0, output
    change = ("1 nieuwe dienst (Mastodon), 1 nieuw domein, "
              "1 domein uit de catalogus verwijderd")
    assert output.splitlines() == [
        f"Lucas College: {change}; niet geblokkeerd, want de school kiest zelf welke diensten: "
        "Mastodon (aan te zetten op de IT-pagina)",
        f"Testcollege: {change}"]
    after = _state(app)
    with app.app_context():
        tiktok = db.session.get(Service, "tiktok")
        assert "tiktokv.eu" in tiktok.domains  # new in the catalog
        assert ADDED_BY_HAND in tiktok.domains  # IT's own stays
        assert REMOVED_BY_HAND not in tiktok.domains  # removed by IT: not brought back
        assert DROPPED_BY_CATALOG not in tiktok.domains  # dropped by the catalog
        assert sorted(db.session.get(Service, "mastodon").domains) == [
            "joinmastodon.org", "mastodon.social"]
        assert db.session.get(Service, "schoolforum").domains == ["forum.lucas.example.nl"]
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "services.sync").order_by(AuditEvent.school_id)).all()
        assert len(events) == 2 and {e.school_id for e in events} == {
            s.id for s in db.session.scalars(select(School))}
        for event in events:
            assert event.actor_label == "cli" and event.object_type == "service_catalog"
            assert event.details["new_services"] == ["mastodon"]
            assert event.details["added_domains"] == {"tiktok": ["tiktokv.eu"]}
            assert event.details["removed_domains"] == {"tiktok": [DROPPED_BY_CATALOG]}
            assert event.details["summary"].startswith(change)
    # Blocked or not stays each school's choice: everything (None) and its own list.
    assert after["schools"] == before["schools"] == {"test": None,
                                                     "lucas": ["schoolforum", "tiktok"]}
    # The change feed heard of it: every school's policies are compiled again.
    assert all(after["generations"][s] > before["generations"][s] for s in ("test", "lucas"))

    # The same catalog again: nothing written, nothing audited, no policy recompiled.
    assert _sync(app, "--catalog", str(_next_release(tmp_path))) == (
        0, "Lucas College: geen wijzigingen\nTestcollege: geen wijzigingen\n")
    assert _state(app) == after


def test_db_upgrade_brings_the_shipped_catalog_in_after_the_migrations(app: Flask) -> None:
    with app.app_context():
        db.session.delete(db.session.get(Service, "bluesky"))
        tiktok = db.session.get(Service, "tiktok")
        # As a release before the sync left it: no record of what was shipped.
        tiktok.domains = sorted(set(tiktok.domains) - {"tiktok.com"} | {ADDED_BY_HAND})
        tiktok.shipped_domains = None
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "Testcollege: 1 nieuwe dienst (Bluesky), 1 nieuw domein")
    with app.app_context():
        tiktok = db.session.get(Service, "tiktok")
        # Not known whether tiktok.com was removed by hand: it is the catalog's, so it comes back;
        # the domain the catalog never had stays, and from now on the sync knows what it shipped.
        assert "tiktok.com" in tiktok.domains and ADDED_BY_HAND in tiktok.domains
        assert tiktok.shipped_domains == sorted(TIKTOK["domains"])
        assert db.session.get(Service, "bluesky") is not None


def _set(path: str, value: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return mutate


def _services_like(n: int) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["services"] += [{"id": f"extra{i}", "name": f"Extra {i}", "group": "other",
                              "domains": [f"extra{i}.example"]} for i in range(n)]
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda data: data.clear(), 'social-services.json: expected an object with a list "services"'),
    (_set("services.3.domains.1", "Bad Domain.com"),
     "social-services.json: services[3] (youtube).domains[1]: not a domain name in lower case "
     "without a trailing dot: 'Bad Domain.com'"),
    (_set("services.3.domains.2", "youtube.com."), "services[3] (youtube).domains[2]: not a "
     "domain name"),
    (_set("services.0.domains", []), "services[0] (twitter).domains: required, a non-empty list"),
    (_set("services.2.name", ""), "services[2] (instagram).name: required, a non-empty string"),
    (_set("services.2.group", 7), "services[2] (instagram).group: required, a non-empty string"),
    (_set("services.5.id", "TikTok!"), "services[5].id: 'TikTok!' is not a service id"),
    (_set("services.16.id", "twitter"), "services[16] (twitter).id: listed twice"),
    (_set("services.16.domains", ["a.example", "a.example"]),
     "services[16] (mastodon).domains[1]: 'a.example' listed twice"),
])
def test_a_malformed_catalog_is_refused_naming_the_entry_and_field(
        tmp_path: Path, mutate: Any, message: str) -> None:
    data = json.loads(_next_release(tmp_path, mutate).read_text())
    with pytest.raises(CatalogError) as refused:
        parse_catalog(data, "social-services.json")
    assert message in str(refused.value)


@pytest.mark.parametrize("mutate, message", [
    (_set("services.3.domains.1", "Bad Domain.com"),
     "social-services.json: services[3] (youtube).domains[1]: not a domain name"),
    # Found only against the database (its own services count too), after reading the file.
    (_services_like(60), "the catalog would make 78 services; a policy carries at most 62"),
])
def test_a_malformed_catalog_changes_nothing_and_says_why(
        own_choices: Flask, tmp_path: Path, mutate: Any, message: str) -> None:
    before = _state(own_choices)
    code, output = _sync(own_choices, "--catalog", str(_next_release(tmp_path, mutate)))
    assert code == 1
    assert output.startswith("Error: service catalog not brought in, nothing changed: ")
    assert message in output and "Traceback" not in output
    assert _state(own_choices) == before


def test_a_catalog_that_is_not_json_or_missing_is_refused_without_a_traceback(
        app: Flask, tmp_path: Path) -> None:
    before = _state(app)
    broken = tmp_path / "broken.json"
    broken.write_text('{"services": [')
    for path, message in ((broken, "broken.json: not JSON: "),
                          (tmp_path / "absent.json", "absent.json: cannot be read: ")):
        code, output = _sync(app, "--catalog", str(path))
        assert code == 1 and message in output and "Traceback" not in output, output
    assert _state(app) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sync_made_by_another_process_reaches_this_one_as_a_timetable_change(
        app: Flask, tmp_path: Path) -> None:
    # On SQLite the serve processes learn of another process's writes from the change log only.
    with app.app_context():
        school_id = db.session.scalar(select(School.id).where(School.slug == "test"))
        before = changes.generation(school_id), changes.timetable_generation(school_id)
    assert _sync(app, "--catalog", str(_next_release(tmp_path)))[0] == 0
    changes.feed_of(app).source.read_at = -1e9  # type: ignore[union-attr] # read it now
    with app.app_context():
        after = changes.generation(school_id), changes.timetable_generation(school_id)
    assert after[0] > before[0] and after[1] > before[1]  # a timetable-kind change
