"""The audit log in words (issue 14, item 4): who did what, with people's names, in the reader's
language: "J. Jansen stond YouTube toe voor 2a, biologie, 09:41–09:56".

`describe_events` reads what the sentences need (people, lessons, rooms, groups, service names)
in a few queries for a page of events; an event whose lesson or room is gone since is still
described, with what the event itself holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import format_datetime, gettext
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..fields import N_
from ..models import AuditEvent, Group, Lesson, Person, Room
from ..people import DELETED_PERSON
from .common import service_names

# What each action is called in the "What" filter; unknown actions show their code.
ACTION_NAMES = {
    "exception.grant": N_("exception granted"), "exception.extend": N_("exception extended"),
    "exception.revoke": N_("exception stopped"), "room.create": N_("room added"),
    "room.update": N_("room changed"), "room.delete": N_("room deleted"),
    "segment.create": N_("segment added"), "segment.update": N_("segment changed"),
    "segment.delete": N_("segment removed"), "gateway.create": N_("gateway added"),
    "gateway.rename": N_("gateway renamed"), "gateway.enroll": N_("gateway enrolled"),
    "gateway.enrollment_token": N_("enrolment token issued"), "person.create": N_("person added"),
    "person.create_login": N_("login added"), "user.create": N_("person added"),
    "person.update": N_("person changed"), "person.delete": N_("person deleted"),
    "reminder.update": N_("reminder changed"), "reminder.edit": N_("reminder changed"),
    "school.blocked_services": N_("blocked services changed"), "school.create": N_("school added"),
    "services.sync": N_("service catalog updated"), "timetable.import": N_("timetable imported"),
    "timetable.source_add": N_("timetable source added"), "demo.build": N_("demo data made"),
}


def action_name(action: str) -> str:
    """The action in words, in the reader's language."""
    name = ACTION_NAMES.get(action)
    return gettext(name) if name else action


def short_name(display_name: str) -> str:
    """"Jan de Vries" -> "J. de Vries"; a single word stays as it is."""
    parts = display_name.split()
    if len(parts) < 2:
        return display_name
    return f"{parts[0][0]}. {' '.join(parts[1:])}"


def actor_name(event: AuditEvent, people: dict[int, Person]) -> str:
    """Who did it: the person's short name, or what the label stands for."""
    person = people.get(event.actor_id) if event.actor_id is not None else None
    if person is not None and person.display_name:
        return short_name(person.display_name)
    label = event.actor_label or ""
    if label == DELETED_PERSON:
        return gettext("deleted person")
    if label == "cli":
        return gettext("command line")
    if label == "system":
        return gettext("the system")
    if label.startswith("agent:"):
        return gettext("gateway %(name)s", name=label[len("agent:"):])
    return label


@dataclass
class Described:
    """An event as the log shows it."""

    event: AuditEvent
    who: str
    what: str
    sentence: str


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _span(start: Any, end: Any, at: datetime) -> str:
    """"09:41–09:56" on the event's own day, else with the day."""
    first, last = _when(start), _when(end)
    if first is None or last is None:
        return ""

    def one(moment: datetime) -> str:
        same_day = format_datetime(moment, "yyyyMMdd") == format_datetime(at, "yyyyMMdd")
        return format_datetime(moment, "HH:mm" if same_day else "EEE d MMM HH:mm")
    return f"{one(first)}–{one(last)}"


class _Context:
    """What the sentences of a page of events refer to, read once."""

    def __init__(self, events: list[AuditEvent]) -> None:
        ids = {e.actor_id for e in events if e.actor_id is not None}
        ids |= {int(e.object_id) for e in events
                if e.object_type == "person" and (e.object_id or "").isdigit()}
        lesson_ids: set[int] = set()
        room_ids: set[int] = set()
        group_ids: set[int] = set()
        exception_ids: set[int] = set()
        for e in events:
            d = e.details or {}
            lesson_ids.update(v for v in [d.get("lesson_id")] if isinstance(v, int))
            room_ids.update(v for v in [d.get("room_id")] if isinstance(v, int))
            group_ids.update(v for v in [d.get("group_id")] if isinstance(v, int))
            if e.object_type == "exception" and e.object_id and e.object_id.isdigit():
                exception_ids.add(int(e.object_id))
        # extend/revoke events name only the exception: its grant event says what it covered.
        self.grants: dict[str, dict[str, Any]] = {}
        if exception_ids:
            for grant in db.session.scalars(select(AuditEvent).where(
                    AuditEvent.action == "exception.grant",
                    AuditEvent.object_id.in_([str(i) for i in exception_ids]))):
                d = grant.details or {}
                self.grants[grant.object_id or ""] = d
                lesson_ids.update(v for v in [d.get("lesson_id")] if isinstance(v, int))
                room_ids.update(v for v in [d.get("room_id")] if isinstance(v, int))
                group_ids.update(v for v in [d.get("group_id")] if isinstance(v, int))
        self.people = {p.id: p for p in db.session.scalars(
            select(Person).where(Person.id.in_(ids)))} if ids else {}
        self.lessons = {lesson.id: lesson for lesson in db.session.scalars(
            select(Lesson).where(Lesson.id.in_(lesson_ids))
            .options(selectinload(Lesson.groups), selectinload(Lesson.rooms)))} \
            if lesson_ids else {}
        self.rooms = {r.id: r.code for r in db.session.scalars(
            select(Room).where(Room.id.in_(room_ids)))} if room_ids else {}
        self.groups = {g.id: g.name for g in db.session.scalars(
            select(Group).where(Group.id.in_(group_ids)))} if group_ids else {}
        self.services = service_names()

    def services_text(self, services: Any) -> str:
        if services is None or services == "all":
            return gettext("all social media")
        if isinstance(services, list):
            return ", ".join(self.services.get(s, str(s)) for s in services)
        return str(services)

    def target(self, details: dict[str, Any]) -> str:
        scope = details.get("scope")
        if scope == "school":
            return gettext("the whole school")
        if scope == "room":
            code = self.rooms.get(details.get("room_id"))  # type: ignore[arg-type]
            return gettext("room %(code)s", code=code) if code else gettext("a room")
        if scope == "group":
            name = self.groups.get(details.get("group_id"))  # type: ignore[arg-type]
            return gettext("class %(name)s", name=name) if name else gettext("a class")
        lesson = self.lessons.get(details.get("lesson_id"))  # type: ignore[arg-type]
        if lesson is None:
            return gettext("a lesson no longer in the timetable")
        parts = [", ".join(g.name for g in lesson.groups)] if lesson.groups else []
        if lesson.subject:
            parts.append(lesson.subject)
        if not parts:
            parts.append(", ".join(r.code for r in lesson.rooms) or gettext("a lesson"))
        return ", ".join(parts)


def _sentence(event: AuditEvent, who: str, ctx: _Context) -> str:
    d = dict(event.details or {})
    action = event.action
    if action == "exception.grant":
        return gettext("%(who)s allowed %(services)s for %(target)s, %(span)s", who=who,
                       services=ctx.services_text(d.get("services")), target=ctx.target(d),
                       span=_span(d.get("start"), d.get("end"), event.at))
    if action in ("exception.extend", "exception.revoke"):
        grant = ctx.grants.get(event.object_id or "", {})
        target = ctx.target({**grant, "scope": d.get("scope", grant.get("scope"))})
        if action == "exception.revoke":
            text = gettext("%(who)s stopped the exception for %(target)s", who=who,
                           target=target)
            return text + (f" ({d['reason']})" if d.get("reason") else "")
        return gettext("%(who)s changed the exception for %(target)s to %(span)s", who=who,
                       target=target, span=_span(d.get("start", grant.get("start")),
                                                 d.get("end"), event.at))
    if action == "room.create":
        return gettext("%(who)s added room %(code)s", who=who, code=d.get("code", "?"))
    if action == "room.update":
        return gettext("%(who)s renamed room %(old)s to %(new)s", who=who,
                       old=d.get("old_code", "?"), new=d.get("code", "?"))
    if action == "room.delete":
        return gettext("%(who)s deleted room %(code)s", who=who, code=d.get("code", "?"))
    if action == "segment.create":
        return gettext("%(who)s added segment %(name)s (rooms %(rooms)s)", who=who,
                       name=d.get("name", "?"), rooms=", ".join(d.get("rooms") or []))
    if action == "segment.update":
        return gettext("%(who)s changed segment %(name)s (rooms %(rooms)s)", who=who,
                       name=d.get("name", "?"), rooms=", ".join(d.get("rooms") or []))
    if action == "segment.delete":
        return gettext("%(who)s removed segment %(name)s", who=who, name=d.get("name", "?"))
    if action == "gateway.create":
        return gettext("%(who)s added gateway %(name)s", who=who, name=d.get("name", "?"))
    if action == "gateway.rename":
        return gettext("%(who)s renamed gateway %(old)s to %(new)s", who=who,
                       old=d.get("old_name", "?"), new=d.get("name", "?"))
    if action == "gateway.enroll":
        return gettext("%(who)s enrolled", who=who)
    if action == "gateway.enrollment_token":
        return gettext("%(who)s issued an enrolment token for a gateway", who=who)
    if action in ("person.create", "user.create", "person.create_login"):
        person = ctx.people.get(int(event.object_id)) if (event.object_id or "").isdigit() \
            else None
        return gettext("%(who)s added %(name)s", who=who,
                       name=short_name(person.display_name) if person else
                       d.get("username") or gettext("a person"))
    if action == "person.update":
        return gettext("%(who)s changed the details of %(name)s", who=who,
                       name=d.get("display_name") or d.get("username") or gettext("a person"))
    if action == "person.delete":
        return gettext("%(who)s deleted a person and their personal data", who=who)
    if action == "school.blocked_services":
        return gettext("%(who)s set the blocked services to %(services)s", who=who,
                       services=ctx.services_text(d.get("services")))
    if action in ("reminder.update", "reminder.edit"):
        return gettext("%(who)s changed the reminder of article %(article)s", who=who,
                       article=d.get("article", "?"))
    if action == "timetable.import":
        return gettext("%(who)s imported the timetable (%(source)s)", who=who,
                       source=d.get("file") or d.get("source") or "?")
    return f"{who}: {action_name(action)}"


def describe_events(events: Iterable[AuditEvent]) -> list[Described]:
    """Each event with who did it and a sentence, in the reader's language."""
    events = list(events)
    ctx = _Context(events)
    described = []
    for event in events:
        who = actor_name(event, ctx.people)
        described.append(Described(event, who, action_name(event.action),
                                   _sentence(event, who, ctx)))
    return described
