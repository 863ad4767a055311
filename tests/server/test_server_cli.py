"""The `lesfocus` commands IT uses: schools, users, gateways, segments."""

from sqlalchemy import func, select

from server.extensions import db
from server.gateways import hash_token
from server.models import EnrollmentToken, Gateway, Person, Reminder, School, Segment
from server.passwords import verify_password
from tests.support.dashboard import sign_in


def test_school_add_seeds_reminders(app, runner):
    result = runner.invoke(args=["school", "add", "lyceum", "--name", "Het Lyceum"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "lyceum"))
        assert school.timezone == "Europe/Amsterdam"
        assert db.session.scalar(select(func.count()).select_from(Reminder).where(
            Reminder.school_id == school.id)) >= 10


def test_school_add_refuses_unknown_timezone_and_duplicates(app, runner):
    result = runner.invoke(args=["school", "add", "x", "--name", "X", "--timezone", "Mars/Olympus"])
    assert result.exit_code != 0 and "unknown timezone" in result.output
    result = runner.invoke(args=["school", "add", "test", "--name", "Again"])
    assert result.exit_code != 0 and "exists already" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(School)) == 1


def test_user_add_with_password_stdin_and_repeated_roles(app, runner):
    result = runner.invoke(args=["user", "add", "jansen", "--school", "test", "--role", "teacher",
                                 "--role", "leader", "--teacher-code", "JANS", "--password-stdin"],
                           input="een-lang-wachtwoord\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == "jansen"))
        assert person.roles == ["leader", "teacher"]
        assert person.teacher_code == "JANS"
        assert verify_password(person.password_hash, "een-lang-wachtwoord")
        assert not verify_password(person.password_hash, "een-ander-wachtwoord")


def _add_user(runner, username: str):
    return runner.invoke(args=["user", "add", username, "--school", "test", "--role", "teacher",
                               "--password-stdin"], input="een-lang-wachtwoord\n")


def test_usernames_are_one_name_in_any_case_for_the_cli_the_api_and_the_dashboard(app, runner):
    assert _add_user(runner, "JJansen").exit_code == 0
    for again in ("jjansen", "JJANSEN", "jJansen"):
        result = _add_user(runner, again)
        assert result.exit_code != 0 and "is taken" in result.output, again
    for odd in ("j", "j jansen", "jansen!", "ja\u0301nsen", "x" * 151):
        result = _add_user(runner, odd)
        assert result.exit_code != 0 and "2 to 150" in result.output, odd
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Person)) == 1
    client = app.test_client()
    for typed in ("jjansen", "JJANSEN", " JJansen "):
        answer = client.post("/api/v1/auth/token", json={"username": typed,
                                                         "password": "een-lang-wachtwoord"})
        assert answer.status_code == 200, (typed, answer.get_json())
        sign_in(app.test_client(), typed, "een-lang-wachtwoord")  # asserts the redirect


def test_two_old_names_differing_in_case_sign_in_only_exactly(app, runner):
    # Made by an older release, whose CLI compared exactly.
    assert _add_user(runner, "devries").exit_code == 0
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == "devries"))
        db.session.add(Person(school_id=person.school_id, username="DeVries", roles=["teacher"],
                              password_hash=person.password_hash, display_name="D"))
        db.session.commit()
    client = app.test_client()
    for typed, status in (("devries", 200), ("DeVries", 200), ("DEVRIES", 401)):
        answer = client.post("/api/v1/auth/token", json={"username": typed,
                                                         "password": "een-lang-wachtwoord"})
        assert answer.status_code == status, typed


def test_user_add_refuses_short_password(app, runner):
    result = runner.invoke(args=["user", "add", "kort", "--school", "test", "--role", "teacher",
                                 "--password-stdin"], input="kort\n")
    assert result.exit_code != 0 and "at least" in result.output
    with app.app_context():
        assert db.session.scalar(select(Person).where(Person.username == "kort")) is None


def test_gateway_add_prints_one_time_token_on_last_line(app, runner):
    result = runner.invoke(args=["gateway", "add", "gw-hoofdgebouw", "--school", "test"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("lfe_") and " " not in token
    with app.app_context():
        stored = db.session.scalar(select(EnrollmentToken))
        assert stored.token_hash == hash_token(token)  # only the hash is kept
        assert (stored.expires_at - stored.created_at).total_seconds() == 24 * 3600


def test_segment_add_reports_overlap_and_writes_nothing(app, runner):
    runner.invoke(args=["gateway", "add", "gw", "--school", "test"])
    ok = runner.invoke(args=["segment", "add", "Lokaal 1", "--school", "test", "--gateway", "gw",
                             "--cidr", "10.0.1.0/24", "--room", "1.01"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(args=["segment", "add", "Lokaal 2", "--school", "test", "--gateway", "gw",
                              "--cidr", "10.0.1.64/26", "--room", "1.02"])
    assert bad.exit_code != 0
    assert "10.0.1.64/26 overlaps 10.0.1.0/24" in bad.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Segment)) == 1
        assert db.session.scalar(select(func.count()).select_from(Gateway)) == 1


def test_unknown_school_is_named(runner):
    result = runner.invoke(args=["gateway", "add", "gw", "--school", "nope"])
    assert result.exit_code != 0 and "no school with slug 'nope'" in result.output


def test_serve_names_the_instance_folder_before_serving(app, runner, monkeypatch):
    import server.serving
    served = []
    # `lesfocus serve` replaces itself by a fresh interpreter (server/serving.py): not here.
    monkeypatch.setattr(server.serving, "exec_server",
                        lambda host, port, connections: served.append((port, connections)))
    result = runner.invoke(args=["serve", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert f"lesfocus: instance folder {app.instance_path}" in result.output
    assert "no longer used" not in result.output
    assert served == [(5999, 10_000)]
    monkeypatch.setenv("LESFOCUS_SCHEDULER_ENABLED", "1")
    result = runner.invoke(args=["serve", "--port", "5999"])
    assert "LESFOCUS_SCHEDULER_ENABLED is no longer used" in result.output
    assert "`lesfocus worker`" in result.output


def test_serve_takes_connections_and_ignores_the_old_threads_option(app, runner, monkeypatch):
    import server.serving
    served = []
    monkeypatch.setattr(server.serving, "exec_server",
                        lambda host, port, connections: served.append(connections))
    result = runner.invoke(args=["serve", "--port", "5999", "--connections", "300"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["serve", "--port", "5999", "--threads", "600"])
    assert result.exit_code == 0, result.output
    assert "--threads is ignored" in result.output
    assert served == [300, 10_000]
    result = runner.invoke(args=["serve", "--connections", "0"])
    assert result.exit_code != 0 and "--connections" in result.output


def test_user_delete_removes_the_person_and_keeps_the_audit_readable(app, runner):
    from server.models import AuditEvent, Person
    from server.people import DELETED_PERSON
    assert _add_user(runner, "weg").exit_code == 0
    assert runner.invoke(args=["user", "delete", "nobody", "--school", "test", "--yes"]
                         ).exit_code != 0
    result = runner.invoke(args=["user", "delete", "weg", "--school", "test", "--yes"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(Person).where(Person.username == "weg")) is None
        events = db.session.scalars(select(AuditEvent)).all()
        assert "weg" not in repr([(e.actor_label, e.details) for e in events])
        assert any(e.action == "person.delete" and e.actor_label == "cli" for e in events)
    assert DELETED_PERSON == "deleted person"

def test_gateway_disable_enable_reenrol_and_remove(app, runner):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.models import AuditEvent
    from server.tokens import public_jwk
    token = runner.invoke(args=["gateway", "add", "gw-a", "--school", "test"]).output \
        .strip().splitlines()[-1]
    key = Ed25519PrivateKey.generate()
    assert app.test_client().post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(key.public_key())}).status_code == 201
    unknown = runner.invoke(args=["gateway", "disable", "gw-b", "--school", "test"])
    assert unknown.exit_code != 0 and "no gateway named 'gw-b'" in unknown.output
    result = runner.invoke(args=["gateway", "disable", "gw-a", "--school", "test"])
    assert result.exit_code == 0 and "disabled gateway 'gw-a'" in result.output
    assert "was disabled already" in runner.invoke(
        args=["gateway", "disable", "gw-a", "--school", "test"]).output
    refused = runner.invoke(args=["gateway", "reenrol", "gw-a", "--school", "test"])
    assert refused.exit_code != 0 and "disabled" in refused.output
    assert runner.invoke(args=["gateway", "enable", "gw-a", "--school", "test"]).exit_code == 0
    again = runner.invoke(args=["gateway", "reenrol", "gw-a", "--school", "test"])
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1].startswith("lfe_")
    kept = runner.invoke(args=["gateway", "remove", "gw-a", "--school", "test"], input="n\n")
    assert kept.exit_code != 0
    with app.app_context():
        assert db.session.scalar(select(Gateway.name)) == "gw-a"
    gone = runner.invoke(args=["gateway", "remove", "gw-a", "--school", "test", "--yes"])
    assert gone.exit_code == 0 and "removed gateway 'gw-a'" in gone.output
    with app.app_context():
        assert db.session.scalar(select(Gateway.name)) is None
        actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"gateway.disable", "gateway.enable", "gateway.reenrol_token",
            "gateway.remove"} <= actions
