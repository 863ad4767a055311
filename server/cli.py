"""The `lesfocus` command line (SPEC §4, "Server CLI")."""

from __future__ import annotations

import json
from datetime import date
import os
import signal
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from .extensions import db
from .models import ROLES, Gateway, Person, School


def _create_app() -> Flask:
    from .app import create_app
    return create_app()


def _school(slug: str) -> School:
    school = db.session.scalar(select(School).where(School.slug == slug))
    if school is None:
        raise click.ClickException(f"no school with slug {slug!r} (create it with `lesfocus school add`)")
    return school


def _close_cli_connections() -> None:
    # The command line's own app must not serve anything: gunicorn's worker process builds its
    # own app, with its own database connections.
    db.session.remove()
    db.engine.dispose()


def _say_instance_folder() -> None:
    # Keys and the SQLite file live there: a surprising folder means a surprising signing key.
    click.echo(f"lesfocus: instance folder {current_app.instance_path}", err=True)
    if os.environ.get("LESFOCUS_SCHEDULER_ENABLED"):
        # Release 1 ran the jobs in the server process with this switch; nothing reads it now.
        click.echo("lesfocus: LESFOCUS_SCHEDULER_ENABLED is no longer used: scheduled jobs "
                   "(retention) and dashboard imports run in `lesfocus worker`", err=True)


def _exit_if_cannot_listen(host: str, port: int, how_to_choose: str = "--port") -> None:
    # Before any URL is printed or process started: a taken port is one clear line and exit 1.
    from .serving import listen_problem
    problem = listen_problem(host, port, how_to_choose)
    if problem is not None:
        click.echo(problem, err=True)
        raise SystemExit(1)


def public_url_problem(value: object) -> str | None:
    """Why LESFOCUS_PUBLIC_URL cannot be the agents' audience, as one line; None when it can."""
    from urllib.parse import urlsplit
    text = str(value or "").strip()
    if not text:
        return ("lesfocus: LESFOCUS_PUBLIC_URL is not set; agents address their tokens to it, "
                "so set it to the URL the gateways reach this server on (such as "
                "https://lesfocus.school.example) and start again")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        return (f"lesfocus: LESFOCUS_PUBLIC_URL {text[:200]!r} is not a base URL such as "
                "https://lesfocus.school.example")
    return None


def _exit_if_no_public_url() -> None:
    # Outside the demo (which sets it) the agents' audience must be configured: before issue 13
    # it followed the request's Host header, which any client chooses.
    problem = public_url_problem(current_app.config.get("LESFOCUS_PUBLIC_URL"))
    if problem is not None:
        click.echo(problem, err=True)
        raise SystemExit(1)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--connections", default=10_000, show_default=True, type=int,
              help="Connections the server holds at once: each waiting agent holds one, and so "
                   "does each browser and each slow or half-open client. They cost memory and "
                   "file descriptors, not threads (see server/serving.py).")
@click.option("--threads", default=None, type=int,
              help="Accepted for unit files of earlier releases and ignored: waiting agents no "
                   "longer hold threads (use --connections).")
@with_appcontext
def serve_command(host: str, port: int, connections: int, threads: int | None) -> None:
    """Serve the dashboard and API (HTTP only; jobs and imports run in `lesfocus worker`)."""
    from .serving import exec_server
    if connections < 1:
        raise click.BadParameter("must be at least 1", param_hint="--connections")
    _exit_if_no_public_url()
    _exit_if_cannot_listen(host, port)
    if threads is not None:
        click.echo(f"lesfocus: --threads is ignored (serving up to {connections} connections "
                   "with greenlets; see --connections)", err=True)
    _say_instance_folder()
    _close_cli_connections()
    # A fresh interpreter (gunicorn, one process of greenlets; see server/serving.py), so gevent
    # patches the standard library before the app is imported.
    exec_server(host, port, connections)


@click.command("worker")
@with_appcontext
def worker_command() -> None:
    """Run the scheduled jobs and the queued imports; one worker is active, others stand by."""
    import logging
    import signal
    import threading

    from .worker import leader_lock_for, run_worker
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        lock = leader_lock_for(current_app)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        # A running import finishes first (it is one transaction; killing it would be safe too).
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run_worker(current_app._get_current_object(), stop, lock=lock)  # type: ignore[attr-defined]


@click.group("school")
def school_group() -> None:
    """Manage schools."""


@school_group.command("add")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--timezone", "tz", default="Europe/Amsterdam", show_default=True)
@with_appcontext
def school_add(slug: str, name: str, tz: str) -> None:
    """Create a school with the default reminders."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from . import audit
    from .seed import seed_reminders, seed_services
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown timezone {tz!r}", param_hint="--timezone") from None
    if db.session.scalar(select(School).where(School.slug == slug)) is not None:
        raise click.ClickException(f"a school with slug {slug!r} exists already")
    seed_services()
    school = School(slug=slug, name=name, timezone=tz, aliases=[])
    db.session.add(school)
    db.session.flush()
    seed_reminders(school)
    audit.record("school.create", school_id=school.id, actor="cli", object_type="school",
                 object_id=school.id, slug=slug, name=name)
    db.session.commit()
    click.echo(f"created school {slug!r}")


@click.group("user")
def user_group() -> None:
    """Manage people who sign in."""


@user_group.command("add")
@click.argument("username")
@click.option("--school", "slug", required=True)
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES))
@click.option("--teacher-code", default=None)
@click.option("--name", "display_name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--email", default=None, metavar="ADDRESS",
              help="The school account's e-mail address (what `lesfocus sso` providers match "
                   "on); unique regardless of case.")
@click.option("--no-password", is_flag=True,
              help="No password: the person signs in with the school account only.")
@with_appcontext
def user_add(username: str, slug: str, roles: tuple[str, ...], teacher_code: str | None,
             display_name: str, password_stdin: bool, email: str | None,
             no_password: bool) -> None:
    """Create a login (or give one to a teacher known from the timetable)."""
    from . import audit
    from .passwords import hash_password
    from .people import username_taken, valid_username
    from .sso import normal_email
    school = _school(slug)
    if email is not None:
        address = normal_email(email)
        if address is None:
            raise click.BadParameter(f"{email!r} is not an e-mail address", param_hint="--email")
        if db.session.scalar(select(Person).where(Person.email == address)) is not None:
            raise click.BadParameter(f"{address!r} belongs to another person already",
                                     param_hint="--email")
        email = address
    if no_password:
        if email is None:
            raise click.UsageError("--no-password needs --email: the school account is then "
                                   "the only way to sign in")
        password_hash = None
    else:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            password_hash = hash_password(password)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    if not valid_username(username):
        raise click.ClickException(f"username {username!r}: use 2 to 150 letters, digits or "
                                   ". _ @ -")
    if username_taken(username):
        raise click.ClickException(f"username {username!r} is taken (usernames are the same "
                                   "in any case)")
    person = None
    if teacher_code:
        person = db.session.scalar(select(Person).where(
            Person.school_id == school.id, Person.teacher_code == teacher_code))
        if person is not None and person.username:
            raise click.ClickException(
                f"teacher code {teacher_code!r} belongs to {person.username!r} already")
    if person is None:
        person = Person(school_id=school.id, teacher_code=teacher_code, roles=[])
        db.session.add(person)
    person.username = username
    person.display_name = display_name or person.display_name or username
    person.roles = sorted(set(person.roles or []) | set(roles))
    person.password_hash = password_hash
    if email is not None:
        person.email = email
    db.session.flush()
    audit.record("person.create_login", school_id=school.id, actor="cli", object_type="person",
                 object_id=person.id, username=username, roles=person.roles,
                 email=person.email)
    db.session.commit()
    click.echo(f"created user {username!r} with roles {', '.join(person.roles)}")


@user_group.command("delete")
@click.argument("username")
@click.option("--school", "slug", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def user_delete(username: str, slug: str, yes: bool) -> None:
    """Delete a person and their personal data (the audit log keeps "deleted person")."""
    from .people import delete_person, find_by_username
    school = _school(slug)
    person = find_by_username(username)
    if person is None or person.school_id != school.id:
        raise click.ClickException(f"no user {username!r} in school {slug!r}")
    if not yes:
        click.confirm(f"Delete {person.label!r} and their personal data?", abort=True)
    delete_person(person, actor="cli")
    db.session.commit()
    click.echo(f"deleted user {username!r} and their personal data")

@school_group.command("password-login")
@click.argument("slug")
@click.argument("state", type=click.Choice(["on", "off"]))
@with_appcontext
def school_password_login(slug: str, state: str) -> None:
    """Allow (on) or refuse (off) password sign-in for the school's people: off, they sign in
    with the school account only (`lesfocus sso`)."""
    from . import audit
    from .models import SsoProvider
    school = _school(slug)
    if state == "off":
        providers = db.session.scalars(select(SsoProvider)).all()
        if not any(not p.schools or school in p.schools for p in providers):
            raise click.ClickException(f"no sign-in provider serves {slug!r}: add one with "
                                       "`lesfocus sso add` first, or nobody could sign in")
    school.password_login = state == "on"
    audit.record("school.password_login", school_id=school.id, actor="cli",
                 object_type="school", object_id=school.id, enabled=school.password_login)
    db.session.commit()
    click.echo(f"password sign-in for {slug!r}: {state}")


@click.group("sso")
def sso_group() -> None:
    """Sign-in with the school account (OpenID Connect providers)."""


@sso_group.command("add")
@click.argument("name")
@click.option("--issuer", required=True, help="The provider's issuer, e.g. "
              "https://login.microsoftonline.com/<tenant id>/v2.0")
@click.option("--client-id", required=True)
@click.option("--client-secret-file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file holding the client secret (first line); it is stored sealed.")
@click.option("--school", "slugs", multiple=True, metavar="SLUG",
              help="A school whose people may sign in with it (repeat; default: every school).")
@click.option("--username-claim", type=click.Choice(["email", "preferred_username", "upn"]),
              default="email", show_default=True,
              help="The ID token claim matched against people's e-mail addresses.")
@click.option("--create-accounts", is_flag=True,
              help="An unknown identity gets a teacher login (needs exactly one --school).")
@with_appcontext
def sso_add(name: str, issuer: str, client_id: str, client_secret_file: Path,
            slugs: tuple[str, ...], username_claim: str, create_accounts: bool) -> None:
    """Add a provider; the sign-in page then offers "Inloggen met NAME"."""
    from . import audit
    from .models import SsoProvider
    from .sso import SsoError, check_provider_fields, discover, find_provider, set_client_secret
    try:
        secret = client_secret_file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"cannot read it: {err}",
                                 param_hint="--client-secret-file") from None
    secret_text = secret[0].strip() if secret else ""
    problems = check_provider_fields(name, issuer, client_id, secret_text, username_claim)
    if problems:
        raise click.ClickException("; ".join(problems))
    if find_provider(name) is not None:
        raise click.ClickException(f"a provider called {name!r} exists already")
    schools = [_school(slug) for slug in dict.fromkeys(slugs)]
    if create_accounts and len(schools) != 1:
        raise click.UsageError("--create-accounts needs exactly one --school (new people "
                               "become teachers there)")
    provider = SsoProvider(name=name, issuer=issuer, client_id=client_id,
                           username_claim=username_claim, create_accounts=create_accounts,
                           schools=schools, client_secret="")
    db.session.add(provider)
    set_client_secret(provider, secret_text)
    for school in schools or [None]:
        audit.record("sso.add", school_id=school.id if school else None, actor="cli",
                     object_type="sso_provider", object_id=provider.id, name=name,
                     issuer=issuer, client_id=client_id)
    db.session.commit()
    click.echo(f"added provider {name!r}; register the redirect URI "
               "<public URL>/login/sso/callback at the provider")
    try:
        discover(issuer, float(current_app.config["LESFOCUS_SSO_TIMEOUT_SECONDS"]))
    except SsoError as err:
        click.echo(f"warning: the provider's discovery document cannot be read now: "
                   f"{err.detail}", err=True)


@sso_group.command("list")
@with_appcontext
def sso_list() -> None:
    """List the providers as JSON lines (never their client secrets)."""
    from .models import SsoProvider
    for provider in db.session.scalars(select(SsoProvider).order_by(SsoProvider.name)):
        click.echo(json.dumps({
            "name": provider.name, "issuer": provider.issuer, "client_id": provider.client_id,
            "username_claim": provider.username_claim,
            "create_accounts": provider.create_accounts,
            "schools": [school.slug for school in provider.schools] or "all"}))


@sso_group.command("remove")
@click.argument("name")
@with_appcontext
def sso_remove(name: str) -> None:
    """Remove a provider (its sign-in button goes; signed-in sessions stay until they end)."""
    from . import audit
    from .sso import find_provider
    provider = find_provider(name)
    if provider is None:
        raise click.ClickException(f"no provider called {name!r} (see `lesfocus sso list`)")
    for school in provider.schools or [None]:
        audit.record("sso.remove", school_id=school.id if school else None, actor="cli",
                     object_type="sso_provider", object_id=provider.id, name=provider.name)
    db.session.delete(provider)
    db.session.commit()
    click.echo(f"removed provider {provider.name!r}")


@user_group.command("email")
@click.argument("username")
@click.argument("address")
@with_appcontext
def user_email(username: str, address: str) -> None:
    """Set (or with "-" remove) the e-mail address a school account signs in as."""
    from . import audit
    from .people import find_by_username
    from .sso import normal_email
    person = find_by_username(username)
    if person is None:
        raise click.ClickException(f"no user {username!r}")
    email = None if address == "-" else normal_email(address)
    if address != "-" and email is None:
        raise click.BadParameter(f"{address!r} is not an e-mail address", param_hint="ADDRESS")
    other = db.session.scalar(select(Person).where(Person.email == email)) if email else None
    if other is not None and other is not person:
        raise click.ClickException(f"{email!r} belongs to {other.label!r} already")
    person.email = email
    audit.record("person.update", school_id=person.school_id, actor="cli",
                 object_type="person", object_id=person.id, email=email)
    db.session.commit()
    click.echo(f"{person.username}: e-mail {email or 'removed'}")


@click.group("segment")
def segment_group() -> None:
    """Manage network segments."""


@segment_group.command("add")
@click.argument("name")
@click.option("--school", "slug", required=True)
@click.option("--gateway", "gateway_name", required=True)
@click.option("--cidr", "cidrs", multiple=True, required=True)
@click.option("--room", "rooms", multiple=True, required=True)
@with_appcontext
def segment_add(name: str, slug: str, gateway_name: str, cidrs: tuple[str, ...],
                rooms: tuple[str, ...]) -> None:
    """Create a segment behind a gateway, serving rooms (created when new)."""
    from .network import add_segment
    school = _school(slug)
    gateway = db.session.scalar(select(Gateway).where(
        Gateway.school_id == school.id, Gateway.name == gateway_name))
    if gateway is None:
        raise click.ClickException(f"no gateway {gateway_name!r} in school {slug!r}")
    try:
        segment = add_segment(school, gateway, name, list(cidrs), list(rooms), actor="cli")
    except ValueError as err:
        db.session.rollback()
        raise click.ClickException(str(err)) from None
    db.session.commit()
    click.echo(f"created segment {segment.name!r} ({', '.join(segment.cidr_strings)})")


@click.group("gateway")
def gateway_group() -> None:
    """Manage gateways."""


@gateway_group.command("add")
@click.argument("name")
@click.option("--school", "slug", required=True)
@with_appcontext
def gateway_add(name: str, slug: str) -> None:
    """Create a gateway and print its one-time enrolment token (valid 24 h) on the last line."""
    from .gateways import create_gateway, issue_enrollment_token
    school = _school(slug)
    try:
        gateway = create_gateway(school, name, actor="cli")
    except ValueError as err:
        db.session.rollback()
        raise click.ClickException(str(err)) from None
    token = issue_enrollment_token(gateway, actor="cli")
    db.session.commit()
    click.echo(f"created gateway {name!r} (id {gateway.id}); enrol its agent within 24 hours:")
    click.echo(f"  lesfocus-agent enroll --server URL --token {token}")
    click.echo(token)


def _gateway(name: str, slug: str) -> Gateway:
    school = _school(slug)
    gateway = db.session.scalar(select(Gateway).where(Gateway.school_id == school.id,
                                                      Gateway.name == name.strip()))
    if gateway is None:
        raise click.ClickException(f"school {slug!r} has no gateway named {name!r}")
    return gateway


@gateway_group.command("disable")
@click.argument("name")
@click.option("--school", "slug", required=True)
@with_appcontext
def gateway_disable(name: str, slug: str) -> None:
    """Disable a gateway: its agent's tokens are refused and its segments are unenforced."""
    from .gateways import set_gateway_disabled
    gateway = _gateway(name, slug)
    if set_gateway_disabled(gateway, True, actor="cli"):
        db.session.commit()
        click.echo(f"disabled gateway {gateway.name!r}: it blocks nothing until enabled")
    else:
        click.echo(f"gateway {gateway.name!r} was disabled already")


@gateway_group.command("enable")
@click.argument("name")
@click.option("--school", "slug", required=True)
@with_appcontext
def gateway_enable(name: str, slug: str) -> None:
    """Put a disabled gateway back in service."""
    from .gateways import set_gateway_disabled
    gateway = _gateway(name, slug)
    if set_gateway_disabled(gateway, False, actor="cli"):
        db.session.commit()
        click.echo(f"enabled gateway {gateway.name!r}")
    else:
        click.echo(f"gateway {gateway.name!r} was not disabled")


@gateway_group.command("remove")
@click.argument("name")
@click.option("--school", "slug", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def gateway_remove(name: str, slug: str, yes: bool) -> None:
    """Remove a gateway with its segments, counters and enrolment tokens (the rooms stay)."""
    from .gateways import remove_gateway
    gateway = _gateway(name, slug)
    segments = [segment.name for segment in gateway.segments]
    if not yes:
        click.confirm(f"remove gateway {gateway.name!r} and its {len(segments)} segment(s)?",
                      abort=True)
    remove_gateway(gateway, actor="cli")
    db.session.commit()
    click.echo(f"removed gateway {name!r}" + (f" and segments {', '.join(segments)}"
                                              if segments else ""))


@gateway_group.command("reenrol")
@click.argument("name")
@click.option("--school", "slug", required=True)
@with_appcontext
def gateway_reenrol(name: str, slug: str) -> None:
    """Issue an enrolment token that replaces an enrolled gateway's agent (audited)."""
    from .gateways import GatewayError, issue_enrollment_token
    gateway = _gateway(name, slug)
    try:
        token = issue_enrollment_token(gateway, actor="cli", reenrol=True)
    except GatewayError as err:
        db.session.rollback()
        raise click.ClickException(str(err)) from None
    db.session.commit()
    click.echo(f"re-enrolment token for gateway {gateway.name!r}; whoever uses it replaces "
               "its agent:")
    click.echo(token)


@click.group("timetable")
def timetable_group() -> None:
    """Import timetable files and sync timetable sources."""


def _day(value: str | None, option: str) -> date | None:
    """A day given as YYYY-MM-DD or as Dutch DD-MM-YYYY."""
    from .timetable.common import parse_day
    if value is None:
        return None
    try:
        return parse_day(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


@timetable_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--school", "slug", required=True)
@click.option("--format", "fmt", type=click.Choice(["ical", "zermelo", "untis", "csv"]),
              default=None, help="Default: guessed from the file name and contents.")
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="The file source the lessons belong to (default: the format's name). "
                   "A file replaces only its source's lessons.")
@click.option("--from", "first", default=None, metavar="DATE",
              help="First day the file speaks for (YYYY-MM-DD or DD-MM-YYYY, school time).")
@click.option("--to", "last", default=None, metavar="DATE",
              help="Last day the file speaks for (included).")
@with_appcontext
def timetable_import(path: Path, slug: str, fmt: str | None, source_name: str | None,
                     first: str | None, last: str | None) -> None:
    """Import a timetable file; print the changes as one JSON object. Atomic.

    Lessons of the source in the window (--from/--to, else the file's own range, else the whole
    weeks of its lessons) that the file no longer has are removed. A file whose events all lie
    outside the window is refused (exit 1) and changes nothing.
    """
    from .timetable import TimetableError, import_timetable
    from .timetable.common import school_zone
    from .timetable.sources import day_window
    school = _school(slug)
    first_day, last_day = _day(first, "--from"), _day(last, "--to")
    try:
        window = None
        if first_day or last_day:
            if not (first_day and last_day):
                raise click.UsageError("give --from and --to together")
            window = day_window(first_day, last_day, school_zone(school.timezone))
        report = import_timetable(school, path, fmt, actor="cli", window=window,
                                  source_name=source_name)
    except TimetableError as err:
        db.session.rollback()
        raise click.ClickException(str(err)) from None
    db.session.commit()
    for note in report.notes:
        click.echo(note, err=True)
    click.echo(json.dumps(report.counts()))


@timetable_group.group("source")
def timetable_source_group() -> None:
    """Timetable sources: each owns the lessons it brought."""


def _read_secret_option(value: str, option: str) -> str:
    """The secret in the file `value`, or on stdin for `-`; never echoed."""
    from .timetable import TimetableError
    from .timetable.sources import read_secret_text
    try:
        if value == "-":
            text = sys.stdin.read(4096)
        else:
            path = Path(value)
            if path.stat().st_size > 4096:
                raise TimetableError(f"{option}: {path.name} is larger than a secret can be")
            text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise click.BadParameter(f"cannot read {value}: {err.strerror or err}",
                                 param_hint=option) from None
    except UnicodeDecodeError:
        raise click.BadParameter("the file is not UTF-8 text", param_hint=option) from None
    except TimetableError as err:
        raise click.BadParameter(str(err), param_hint=option) from None
    try:
        return read_secret_text(text, option)
    except TimetableError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


@timetable_source_group.command("add")
@click.argument("name")
@click.option("--school", "slug", required=True)
@click.option("--kind", type=click.Choice(["ical-url", "zermelo", "webuntis"]), required=True,
              help="ical-url: an iCalendar (webcal) link; zermelo: a Zermelo Portal (API v3); "
                   "webuntis: a WebUntis server (JSON-RPC).")
@click.option("--url", required=True,
              help="The feed's address (webcal:// is read as https://); for zermelo the portal "
                   "(https://SCHOOL.zportal.nl), for webuntis the server "
                   "(https://SERVER.webuntis.com).")
@click.option("--token-file", default=None, metavar="FILE",
              help="zermelo: a file holding the API token of a portal user ('-': stdin).")
@click.option("--user", default=None, help="webuntis: the user that reads the timetable.")
@click.option("--secret-file", default=None, metavar="FILE",
              help="webuntis: a file holding that user's password ('-': stdin).")
@click.option("--untis-school", default=None, metavar="NAME",
              help="webuntis: the school's name on the server (as in its login page's URL).")
@click.option("--every", "every", type=click.IntRange(5, 24 * 60), default=15, show_default=True,
              metavar="MINUTES", help="How often the worker will sync it.")
@with_appcontext
def timetable_source_add(name: str, slug: str, kind: str, url: str, token_file: str | None,
                         user: str | None, secret_file: str | None, untis_school: str | None,
                         every: int) -> None:
    """Add a timetable source that is synced from its address.

    Secrets are read from a file or stdin, kept sealed, and never shown again.
    """
    from . import audit
    from .models import TimetableSource
    from .timetable import TimetableError
    from .timetable.sources import check_source_name, find_source, shown_address, store_secret
    school = _school(slug)
    if url.lower().startswith("webcal://"):
        url = "https://" + url[len("webcal://"):]
    wanted = {"zermelo": {"--token-file"},
              "webuntis": {"--user", "--secret-file", "--untis-school"}}.get(kind, set())
    given = {option for option, value in (("--token-file", token_file), ("--user", user),
                                          ("--secret-file", secret_file),
                                          ("--untis-school", untis_school)) if value}
    if wanted - given:
        raise click.UsageError(f"--kind {kind} needs {', '.join(sorted(wanted - given))}")
    if given - wanted:
        raise click.UsageError(f"--kind {kind} takes no {', '.join(sorted(given - wanted))}")
    secret = None
    if token_file:
        secret = _read_secret_option(token_file, "--token-file")
    elif secret_file:
        secret = _read_secret_option(secret_file, "--secret-file")
    options: dict[str, str] = {}
    try:
        name = check_source_name(name)
        if not url.lower().startswith(("http://", "https://")) or len(url) > 2000:
            raise TimetableError("--url must be an http(s) or webcal address of at most 2000 "
                                 "characters")
        if kind == "webuntis":
            for option, value in (("--user", user), ("--untis-school", untis_school)):
                if not value.strip() or len(value) > 100:  # type: ignore[union-attr]
                    raise TimetableError(f"{option} must be 1-100 characters")
            options = {"user": user.strip(), "untis_school": untis_school.strip()}  # type: ignore[union-attr]
        if find_source(db.session, school, name) is not None:
            raise TimetableError(f"the school already has a source {name!r}")
    except TimetableError as err:
        raise click.ClickException(str(err)) from None
    fmt = {"ical-url": "ical", "zermelo": "zermelo", "webuntis": "untis"}[kind]
    source = TimetableSource(school_id=school.id, name=name, kind=kind, format=fmt,
                             address=url, options=options, every_minutes=every, days_back=7,
                             days_ahead=56)
    db.session.add(source)
    db.session.flush()
    if secret is not None:
        store_secret(source, secret)
    # The link often carries a token: the audit log gets the host only, and never a secret.
    audit.record("timetable.source_add", school_id=school.id, actor="cli",
                 object_type="timetable_source", object_id=name, kind=kind,
                 address=shown_address(source), **({"user": options["user"]} if options else {}))
    db.session.commit()
    click.echo(f"added source {name!r} ({kind}, every {every} minutes); "
               f"`lesfocus timetable sync --school {slug} --source {name}` syncs it now")


@timetable_source_group.command("secret")
@click.argument("name")
@click.option("--school", "slug", required=True)
@click.option("--token-file", default=None, metavar="FILE",
              help="zermelo: the new API token ('-': stdin).")
@click.option("--secret-file", default=None, metavar="FILE",
              help="webuntis: the user's new password ('-': stdin).")
@with_appcontext
def timetable_source_secret(name: str, slug: str, token_file: str | None,
                            secret_file: str | None) -> None:
    """Replace the sealed token or password of a Zermelo or WebUntis source."""
    from . import audit
    from .timetable.sources import find_source, store_secret
    school = _school(slug)
    source = find_source(db.session, school, name)
    if source is None:
        raise click.ClickException(f"the school has no source {name.strip().lower()!r}")
    option = {"zermelo": "--token-file", "webuntis": "--secret-file"}.get(source.kind)
    given = token_file if option == "--token-file" else secret_file
    if option is None:
        raise click.ClickException(f"source {source.name!r} is a {source.kind} source: it has "
                                   f"no secret")
    if given is None or (token_file and secret_file):
        raise click.UsageError(f"a {source.kind} source takes {option}")
    store_secret(source, _read_secret_option(given, option))
    audit.record("timetable.source_secret", school_id=school.id, actor="cli",
                 object_type="timetable_source", object_id=source.name, kind=source.kind)
    db.session.commit()
    click.echo(f"the secret of source {source.name!r} was replaced")


@timetable_group.command("sync")
@click.option("--school", "slug", required=True)
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="Only this source (default: every source with an address).")
@with_appcontext
def timetable_sync(slug: str, source_name: str | None) -> None:
    """Sync sources from their addresses now; print one JSON summary per source.

    A source that fails keeps its last good lessons; the command then exits 1.
    """
    from .models import TimetableSource, utcnow
    from .timetable.sync import sync_named
    school = _school(slug)
    query = select(TimetableSource).where(TimetableSource.school_id == school.id,
                                          TimetableSource.kind != "file")
    if source_name is not None:
        query = query.where(TimetableSource.name == source_name.strip().lower())
    names = [source.name for source in db.session.scalars(query.order_by(TimetableSource.name))]
    if not names:
        called = f" called {source_name!r}" if source_name else ""
        raise click.ClickException(f"no source to sync{called} (file sources are imported, "
                                   f"not synced)")
    failed = False
    for name in names:
        report, error = sync_named(db.session, school, name, now=utcnow())
        if error is not None:
            click.echo(f"{name}: {error}", err=True)
            failed = True
            continue
        counts = report.counts() if report else {"created": 0, "updated": 0, "cancelled": 0,
                                                  "removed": 0, "lessons": None}
        if report:
            for note in report.notes:
                click.echo(f"{name}: {note}", err=True)
        else:
            click.echo(f"{name}: not modified since the last sync", err=True)
        click.echo(json.dumps({"source": name, **counts}))
    if failed:
        sys.exit(1)


@timetable_source_group.command("list")
@click.option("--school", "slug", required=True)
@with_appcontext
def timetable_source_list(slug: str) -> None:
    """List the school's sources as JSON lines (never their credentials or link tokens)."""
    from .models import TimetableSource
    from .timetable.sources import shown_address
    school = _school(slug)
    for source in db.session.scalars(select(TimetableSource).where(
            TimetableSource.school_id == school.id).order_by(TimetableSource.name)):
        report = source.last_report or {}
        click.echo(json.dumps({
            "name": source.name, "kind": source.kind, "format": source.format,
            "address": shown_address(source), "every_minutes": source.every_minutes,
            "last_attempt": source.last_attempt_at.isoformat() if source.last_attempt_at
            else None,
            "last_success": source.last_success_at.isoformat() if source.last_success_at
            else None,
            "last_error": source.last_error, "last_counts": report.get("counts"),
            "window": report.get("window"),
            **{key: (source.options or {}).get(key) for key in ("user", "untis_school")
               if (source.options or {}).get(key)},
            # Whether a token or password is kept (sealed), never the secret itself.
            **({"secret": "sealed"} if source.kind in ("zermelo", "webuntis") and
               source.credentials is not None else {})}))


@click.group("services")
def services_group() -> None:
    """The social-media service catalog that every school shares."""


def _sync_services(catalog_path: Path | None, actor: str) -> None:
    """Bring the catalog in, in one transaction, and print one line per school."""
    from sqlalchemy.exc import SQLAlchemyError

    from .catalog import CatalogError, SchoolSync, read_catalog, sync_catalog
    try:
        result = sync_catalog(read_catalog(catalog_path), actor=actor)
        db.session.commit()
    except CatalogError as err:
        db.session.rollback()
        raise click.ClickException(f"service catalog not brought in, nothing changed: {err}"
                                   ) from None
    except SQLAlchemyError as err:
        from .imports import describe_database_error
        db.session.rollback()
        raise click.ClickException(
            "service catalog not brought in, nothing changed: the database refused it "
            f"({describe_database_error(err)}); is its schema current (`lesfocus db upgrade`)?"
        ) from None
    for school in result.schools:
        click.echo(school.summary)
    if not result.schools:
        click.echo("nog geen scholen; diensten: "
                   + SchoolSync("", "", result.changes, ()).describe())


@services_group.command("sync")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A catalog file in the format of the shipped one (default: the "
                                 "catalog this release ships, server/data/social-services.json).")
@with_appcontext
def services_sync(catalog_path: Path | None) -> None:
    """Bring the catalog's new services and domains into every school; print what changed.

    Keeps each school's choice of blocked services and domains added or removed by hand; audited
    per school; gateways get new policies. Running it again changes nothing. `lesfocus db
    upgrade` runs it after the migrations. On a malformed catalog it exits 1 and changes nothing.
    """
    _sync_services(catalog_path, "cli")


def _db_group() -> click.Group:
    """Flask-Migrate's `db` commands, with `db upgrade` bringing the service catalog in after
    the migrations (a copy: Flask-Migrate's own group object is left as it is)."""
    from flask_migrate.cli import db as migrate_db
    # Its callback and options too: they set what the subcommands read (the folder, -x).
    group = click.Group("db", help=migrate_db.help, commands=dict(migrate_db.commands),
                        callback=migrate_db.callback, params=list(migrate_db.params))
    migrate_upgrade = migrate_db.commands["upgrade"]

    @click.pass_context
    def upgrade(ctx: click.Context, **options: object) -> None:
        ctx.invoke(migrate_upgrade, **options)
        if options.get("sql"):
            return  # offline mode printed SQL; there is no database to write to
        _sync_services(None, "db upgrade")

    group.add_command(click.Command(
        "upgrade", callback=with_appcontext(upgrade), params=list(migrate_upgrade.params),
        help=(migrate_upgrade.help or "").rstrip()
        + "\n\nThen brings the shipped service catalog into every school "
          "(`lesfocus services sync`)."))
    return group


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Build the demo school and exit.")
@with_appcontext
def demo_command(host: str, port: int, no_serve: bool) -> None:
    """Create (or refresh) the demo school and serve it, with a `lesfocus worker` beside it."""
    import subprocess

    from flask_migrate import upgrade

    from .demo import build_demo
    if not no_serve:
        _exit_if_cannot_listen(host, port, "--port (make demo PORT=5001)")
        # The demo's gateway and agents reach the server where it serves (the children read it).
        os.environ.setdefault("LESFOCUS_PUBLIC_URL", f"http://{host}:{port}")
    upgrade()
    info = build_demo()
    db.session.commit()
    click.echo(info.describe(f"http://{host}:{port}/"))
    if not no_serve:
        from .serving import DEFAULT_CONNECTIONS, serving_command
        _say_instance_folder()
        _close_cli_connections()
        # The demo is one command, so it starts the worker (dashboard uploads, retention) too;
        # it has this process's LESFOCUS_* settings, so the same database and instance folder.
        worker = subprocess.Popen([sys.executable, "-c", "from server.cli import main; main()",
                                   "worker"])
        # Served as by `lesfocus serve` (a fresh interpreter, patched first), in a child.
        server = subprocess.Popen(serving_command(host, port, DEFAULT_CONNECTIONS))
        # SIGTERM (as Ctrl-C) ends both children; without this handler it would end this
        # process alone.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            server.wait()
        finally:
            for child in (server, worker):
                if child.poll() is None:
                    child.terminate()
                    child.wait(timeout=30)


def register_commands(app: Flask) -> None:
    """Attach the lesfocus commands to the app's CLI group."""
    for command in (serve_command, worker_command, school_group, user_group, segment_group,
                    gateway_group, timetable_group, demo_command, sso_group):
        app.cli.add_command(command)
    app.cli.add_command(services_group)
    app.cli.add_command(_db_group())  # replaces Flask-Migrate's `db` (same commands)


cli = FlaskGroup(create_app=_create_app, add_default_commands=False, add_version_option=False,
                 load_dotenv=False, help="lesfocus server: timetables, segments, exceptions, policy.")


def main() -> None:
    """Entry point of the `lesfocus` console script."""
    cli.main(prog_name="lesfocus")
