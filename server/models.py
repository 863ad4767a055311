"""The domain of SPEC §3 as SQLAlchemy 2 typed models.

Times are stored as naive UTC in the database and handed out as timezone-aware UTC datetimes
(`UTCDateTime`), so neither SQLite nor PostgreSQL can shift them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, LargeBinary,
                        String, Table, Text, UniqueConstraint, event)
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import db

ROLES = ("teacher", "leader", "it_admin")
EXCEPTION_SCOPES = ("lesson", "room", "group", "school")
AUDIENCES = ("student", "staff", "all")
TRIGGERS = ("always", "personal_data", "media", "school_mention", "insult", "school_matter")
ARTICLES = ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "B1", "B2", "B3", "B4", "B5")
LANGUAGES = ("nl", "en")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC and returned as aware UTC; naive input is refused."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware one is required")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class School(db.Model):
    """A school; every other object belongs to one."""

    __tablename__ = "schools"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Amsterdam")
    # Service ids blocked during lessons; None means every known service.
    blocked_services: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Other names of the school (for the extension's school-mention check).
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    # False: the school's people sign in only with their school account (an SsoProvider).
    password_login: Mapped[bool] = mapped_column(Boolean, default=True)

    # Minutes a dashboard session may stay unused before it ends; None: the install's default
    # (LESFOCUS_DASHBOARD_IDLE_MINUTES). Set by IT (server/dashboard/it.py).
    idle_minutes: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Room(db.Model):
    """A classroom or other space where lessons take place."""

    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("school_id", "code"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))

    school: Mapped[School] = relationship()
    segments: Mapped[list[Segment]] = relationship(secondary="segment_rooms",
                                                   back_populates="rooms")


class Group(db.Model):
    """A class (klas) or cluster of students, such as `3havo-b`."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("school_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))

    school: Mapped[School] = relationship()


class Person(db.Model):
    """A member of staff: teacher, school leader and/or IT administrator."""

    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("school_id", "teacher_code"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    # None for people known only from a timetable (they cannot sign in until IT gives them a login).
    username: Mapped[str | None] = mapped_column(String(150), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    teacher_code: Mapped[str | None] = mapped_column(String(32))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # What a school account's sign-in is matched on (server/sso.py); stored lower-cased, so
    # unique regardless of case.
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    school: Mapped[School] = relationship()

    def has_role(self, *roles: str) -> bool:
        """True when the person holds at least one of `roles`."""
        return any(role in (self.roles or []) for role in roles)

    @property
    def label(self) -> str:
        """A short name for lists and the audit log."""
        return self.display_name or self.username or self.teacher_code or f"person {self.id}"


sso_provider_schools = Table(
    "sso_provider_schools", db.metadata,
    Column("provider_id", ForeignKey("sso_providers.id", ondelete="CASCADE"), primary_key=True),
    Column("school_id", ForeignKey("schools.id", ondelete="CASCADE"), primary_key=True,
           index=True),
)

SSO_USERNAME_CLAIMS = ("email", "preferred_username", "upn")


class SsoProvider(db.Model):
    """An OpenID Provider people sign in with (issue 15): Entra ID, Google, SURFconext.

    `client_secret` is sealed (server/sealed.py, context `sso-provider:<id>:client-secret`) and
    never shown. `schools`: whose people may sign in with it (none: every school's). With
    `create_accounts`, an unknown identity gets a teacher login in the provider's one school.
    """

    __tablename__ = "sso_providers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret: Mapped[str] = mapped_column(Text, deferred=True)
    username_claim: Mapped[str] = mapped_column(String(32), default="email")
    create_accounts: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    schools: Mapped[list[School]] = relationship(secondary=sso_provider_schools,
                                                 order_by="School.slug")


class Gateway(db.Model):
    """A school network gateway running the agent; enrolled with a one-time token."""

    __tablename__ = "gateways"
    __table_args__ = (UniqueConstraint("school_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True,
                                    default=lambda: str(uuid.uuid4()))
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    public_key_pem: Mapped[str | None] = mapped_column(Text)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    policy_version_applied: Mapped[str | None] = mapped_column(String(80))
    # When the server first heard `policy_version_applied` (the agent reports right after applying).
    policy_applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    agent_version: Mapped[str | None] = mapped_column(String(40))
    # When IT disabled it (None: in service): its agent's tokens are refused and its segments
    # are reported unenforced until IT enables it again (server/gateways.py).
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    school: Mapped[School] = relationship()
    segments: Mapped[list[Segment]] = relationship(back_populates="gateway",
                                                   order_by="Segment.name")

    @property
    def enforcing(self) -> bool:
        """True when its agent may fetch the policy: enrolled and not disabled."""
        return self.public_key_pem is not None and self.disabled_at is None


class EnrollmentToken(db.Model):
    """A one-time token for enrolling a gateway's agent; only its SHA-256 is stored."""

    __tablename__ = "enrollment_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"),
                                            index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Issued by IT's explicit "re-enrol" (opnieuw koppelen): only such a token may replace the
    # key of an enrolled gateway (issue 13, item 6).
    reenrol: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    gateway: Mapped[Gateway] = relationship()


segment_rooms = Table(
    "segment_rooms", db.metadata,
    Column("segment_id", ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("room_id", ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Segment(db.Model):
    """A named set of CIDRs behind one gateway, serving one or more rooms."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("gateway_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(100))

    gateway: Mapped[Gateway] = relationship(back_populates="segments")
    cidrs: Mapped[list[SegmentCidr]] = relationship(back_populates="segment",
                                                    cascade="all, delete-orphan",
                                                    order_by="SegmentCidr.cidr")
    rooms: Mapped[list[Room]] = relationship(secondary=segment_rooms, back_populates="segments",
                                             order_by="Room.code")

    @property
    def cidr_strings(self) -> list[str]:
        """The segment's networks as normalised strings."""
        return [c.cidr for c in self.cidrs]


class SegmentCidr(db.Model):
    """One network (IPv4 or IPv6, normalised) of a segment."""

    __tablename__ = "segment_cidrs"
    __table_args__ = (UniqueConstraint("segment_id", "cidr"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"),
                                            index=True)
    cidr: Mapped[str] = mapped_column(String(64))

    segment: Mapped[Segment] = relationship(back_populates="cidrs")


lesson_rooms = Table(
    "lesson_rooms", db.metadata,
    Column("lesson_id", ForeignKey("lessons.id", ondelete="CASCADE"), primary_key=True),
    Column("room_id", ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, index=True),
)
lesson_groups = Table(
    "lesson_groups", db.metadata,
    Column("lesson_id", ForeignKey("lessons.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True),
)
lesson_teachers = Table(
    "lesson_teachers", db.metadata,
    Column("lesson_id", ForeignKey("lessons.id", ondelete="CASCADE"), primary_key=True),
    Column("person_id", ForeignKey("people.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Lesson(db.Model):
    """One lesson occurrence: when, where, with whom; from a timetable source."""

    __tablename__ = "lessons"
    __table_args__ = (
        UniqueConstraint("school_id", "source", "source_id"),
        Index("ix_lessons_school_start", "school_id", "start"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    subject: Mapped[str] = mapped_column(String(100), default="")
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The name of the TimetableSource that brought it, or one of UNSOURCED_LESSONS.
    source: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    school: Mapped[School] = relationship()
    rooms: Mapped[list[Room]] = relationship(secondary=lesson_rooms, order_by="Room.code")
    groups: Mapped[list[Group]] = relationship(secondary=lesson_groups, order_by="Group.name")
    teachers: Mapped[list[Person]] = relationship(secondary=lesson_teachers)


TIMETABLE_SOURCE_KINDS = ("file", "ical-url", "zermelo", "webuntis")
# `lessons.source` values that belong to no timetable source (server/demo.py, tests, scripts).
UNSOURCED_LESSONS = ("demo", "manual")


class TimetableSource(db.Model):
    """Where a school's lessons come from: a file import or a feed synced on a schedule.

    A source owns the lessons whose `lessons.source` is its name (same school); an import or sync
    replaces only those, and only inside the window the source declares
    (server/timetable/sources.py). `credentials` holds the secret of a Zermelo or WebUntis source
    (its API token, its user's password), sealed (server/sealed.py, `store_secret`): deferred, so
    listing sources does not load it, and never shown by the dashboard, the API, the CLI or the
    audit log. File and iCal sources have none.
    """

    __tablename__ = "timetable_sources"
    __table_args__ = (UniqueConstraint("school_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    # The value of `lessons.source` for the source's lessons, hence its width.
    name: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # one of TIMETABLE_SOURCE_KINDS
    # The file format last imported (file), or the feed's format; None: recognised each time.
    format: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(2000))  # URL; a file's last name
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. untis_school, user
    credentials: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    every_minutes: Mapped[int | None] = mapped_column(Integer)  # None: only when asked
    # The window a sync asks for and replaces, in days around the sync's "now".
    days_back: Mapped[int] = mapped_column(Integer, default=7)
    days_ahead: Mapped[int] = mapped_column(Integer, default=56)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # counts, notes, window
    # What the next sync sends back to the feed (ETag, Last-Modified).
    sync_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    school: Mapped[School] = relationship()


class Service(db.Model):
    """A social-media service and the domains (suffix match) that belong to it.

    Services are shared by every school (which of them a school blocks is its own setting).
    `shipped_domains` is what the shipped catalog listed for the service when it was last
    brought in (server/catalog.py): a shipped domain missing from `domains` was removed on
    purpose and is not brought back; a domain in `domains` that was never shipped was added
    locally and is kept. None: not known (a service of a release before the catalog sync, or one
    that is not in the catalog at all).
    """

    __tablename__ = "services"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    group: Mapped[str] = mapped_column(String(40), default="social_network")
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    shipped_domains: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Moves with every write (the SQLite change marker of earlier releases read it).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ExceptionGrant(db.Model):
    """An exception to article A4: social media (all or some services) allowed for a while."""

    __tablename__ = "exceptions"
    __table_args__ = (Index("ix_exceptions_school_end", "school_id", "end"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16))  # lesson, room, group, school
    lesson_id: Mapped[int | None] = mapped_column(ForeignKey("lessons.id", ondelete="CASCADE"),
                                                  index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    services: Mapped[list[str] | None] = mapped_column(JSON)  # None means every service
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(200), default="")
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))

    school: Mapped[School] = relationship()
    lesson: Mapped[Lesson | None] = relationship()
    room: Mapped[Room | None] = relationship()
    group: Mapped[Group | None] = relationship()
    granted_by: Mapped[Person | None] = relationship(foreign_keys=[granted_by_id])
    revoked_by: Mapped[Person | None] = relationship(foreign_keys=[revoked_by_id])

    def is_active(self, at: datetime) -> bool:
        """True when the exception is in force at `at` (started, not ended, not revoked)."""
        return self.start <= at < self.end and (self.revoked_at is None or self.revoked_at > at)


class Reminder(db.Model):
    """A reminder of one protocol article, shown by the extension before posting."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("school_id", "article", "audience", "trigger"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    article: Mapped[str] = mapped_column(String(4))
    audience: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(32))
    texts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # language -> text
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditEvent(db.Model):
    """Who did what, when, to which object. Append-only (rows are never updated)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_school_at", "school_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    actor_label: Mapped[str] = mapped_column(String(200))  # kept when the person is removed
    action: Mapped[str] = mapped_column(String(64))  # e.g. exception.grant
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class GatewayCounter(db.Model):
    """How often a service was blocked on a segment in one hour: aggregates only, no clients."""

    __tablename__ = "gateway_counters"
    __table_args__ = (UniqueConstraint("gateway_id", "segment_id", "service_id", "hour"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    service_id: Mapped[str] = mapped_column(String(40))
    hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


@event.listens_for(AuditEvent, "before_update")
def _audit_events_are_append_only(mapper: Any, connection: Any, target: AuditEvent) -> None:
    raise ValueError("audit events are append-only")


class LoginFailure(db.Model):
    """A sign-in attempt that failed (or is being checked), kept a few minutes to throttle
    guessing through the dashboard and the API alike (server/throttle.py)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_at", "username", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150))  # as typed, lower-cased
    remote_addr: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


IMPORT_STATES = ("queued", "running", "done", "failed")


class ImportJob(db.Model):
    """A timetable upload waiting for, or run by, `lesfocus worker` (server/imports.py).

    The file's bytes are kept only until the import has run; the report (or the error) stays.
    """

    __tablename__ = "import_jobs"
    __table_args__ = (Index("ix_import_jobs_state_created", "state", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    requested_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("people.id", ondelete="SET NULL"))
    requested_by_label: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(200))
    format: Mapped[str | None] = mapped_column(String(16))  # None: recognised from the file
    # The file source it goes into; None: the source named after the file's format.
    source_name: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    # Deferred: listing jobs must not load the files.
    data: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # one of IMPORT_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # counts and notes when done
    error: Mapped[str | None] = mapped_column(Text)  # the importer's message when failed


class WorkerHeartbeat(db.Model):
    """When the active `lesfocus worker` last showed it runs (server/worker.py; read by /readyz).

    One row per role (`worker`); it holds no data about people or devices.
    """

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DashboardSession(db.Model):
    """A signed-in dashboard session (issue 13, item 8): signing out deletes it, so a copied
    cookie is worthless afterwards, and one idle for longer than LESFOCUS_DASHBOARD_IDLE_MINUTES
    ends (a classroom PC a teacher walked away from).

    `id` is the SHA-256 of the random token the session cookie carries: the table alone lets no
    one sign in. Nothing about the device (no address, no browser) is kept.
    """

    __tablename__ = "dashboard_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"),
                                           index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeLogEntry(db.Model):
    """One committed write that can change policies, for the other processes on SQLite, which
    has no LISTEN/NOTIFY (server/changes.py).

    `payload` is what PostgreSQL's `pg_notify` carries: the writing process, the schools, and the
    rooms whose lessons changed; nothing about people or devices. Ids are never reused
    (AUTOINCREMENT), so a reader that finds its next id missing knows it missed changes. The log
    keeps its last CHANGE_LOG_KEEP rows.
    """

    __tablename__ = "change_log"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload: Mapped[str] = mapped_column(Text)

class AgentTokenUse(db.Model):
    """An agent token the server accepted, kept until its lifetime is over (issue 13, item 7):
    the same `jti` of the same gateway is then refused by every process (server/agent_tokens.py).
    """

    __tablename__ = "agent_token_uses"
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"),
                                            primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

ALERT_KINDS = ("gateway_offline", "gateway_policy_stale", "gateway_policy_expired",
               "timetable_sync_failing")


class AlertIncident(db.Model):
    """One incident IT is told about by e-mail (server/alerts.py): a gateway offline during a
    lesson, a gateway on a stale or expired policy, a timetable source that keeps failing.

    One row per incident, from when it is noticed until it is over: one e-mail when it opens,
    one when it recovers, however many minutes it lasts. `confirmed_at` is None while the
    condition has not held long enough yet (a stale policy is given its minutes first); such a
    row is neither mailed nor shown, and goes away if the condition ends. `subject_id` is the
    gateway's id or the timetable source's id; `subject_name` is kept for the recovery mail of
    a gateway that was removed meanwhile.
    """

    __tablename__ = "alert_incidents"
    __table_args__ = (Index("ix_alert_incidents_open", "kind", "subject_id", "resolved_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # one of ALERT_KINDS
    subject_id: Mapped[str] = mapped_column(String(36))
    subject_name: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    noticed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mail_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_mail_error: Mapped[str | None] = mapped_column(Text)
