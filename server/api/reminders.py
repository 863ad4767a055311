"""Reminder texts: public for the extension (ETag, CORS), editable by IT."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, g, jsonify, request
from sqlalchemy import select

from .. import audit
from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import LANGUAGES, Reminder
from . import bp
from .common import get_object, iso, json_body, query_str, school_by_slug

MAX_TEXT = 1000


def reminder_json(reminder: Reminder) -> dict[str, Any]:
    """A reminder with all its texts (for IT)."""
    return {"id": reminder.id, "article": reminder.article, "audience": reminder.audience,
            "trigger": reminder.trigger, "texts": dict(reminder.texts or {}),
            "enabled": reminder.enabled, "updated_at": iso(reminder.updated_at)}


@bp.get("/reminders")
def public_reminders() -> Response:
    """The reminders one audience sees, in one language; ETag and If-None-Match -> 304."""
    audience = request.args.get("audience", "student")
    if audience not in ("student", "staff"):
        abort_json(400, "audience must be student or staff", field="audience")
    lang = request.args.get("lang", "nl")
    if lang not in LANGUAGES:
        abort_json(400, f"lang must be one of {', '.join(LANGUAGES)}", field="lang")
    school = school_by_slug(query_str("school"))
    rows = db.session.scalars(
        select(Reminder).where(Reminder.school_id == school.id, Reminder.enabled.is_(True),
                               Reminder.audience.in_((audience, "all")))
        .order_by(Reminder.article, Reminder.trigger, Reminder.id))
    reminders = []
    for row in rows:
        texts = row.texts or {}
        text = texts.get(lang) or texts.get("nl") or next(iter(texts.values()), "")
        reminders.append({"id": row.id, "article": row.article, "audience": row.audience,
                          "trigger": row.trigger, "text": text})
    payload = {"school": {"slug": school.slug, "name": school.name,
                          "aliases": list(school.aliases or [])},
               "audience": audience, "lang": lang, "reminders": reminders}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    etag = hashlib.sha256(body).hexdigest()[:32]
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=60"
    response.headers["Vary"] = "Origin"
    return response.make_conditional(request)


@bp.get("/reminders/<int:reminder_id>")
@require_user("it_admin")
def get_reminder(reminder_id: int) -> Response:
    """One reminder with its texts in every language."""
    return jsonify(reminder_json(get_object(Reminder, reminder_id, g.person.school_id,
                                            "reminder")))


@bp.put("/reminders/<int:reminder_id>")
@require_user("it_admin")
def edit_reminder(reminder_id: int) -> Response:
    """Change a reminder's texts (per language) and whether it is shown; audited."""
    body = json_body()
    reminder = get_object(Reminder, reminder_id, g.person.school_id, "reminder")
    changes: dict[str, Any] = {}
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, dict) or not texts:
            abort_json(400, "texts must be an object of language -> text", field="texts")
        merged = dict(reminder.texts or {})
        for lang, text in texts.items():
            where = f"texts.{lang}"
            if lang not in LANGUAGES:
                abort_json(400, f"unknown language {lang!r} (use {', '.join(LANGUAGES)})",
                           field=where)
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                abort_json(400, f"{where} must be a non-empty text of at most {MAX_TEXT} "
                           "characters", field=where)
            merged[lang] = text.strip()
        changes["texts"] = merged
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            abort_json(400, "enabled must be true or false", field="enabled")
        changes["enabled"] = body["enabled"]
    unknown = set(body) - {"texts", "enabled"}
    if unknown:
        name = sorted(unknown)[0]
        abort_json(400, f"{name} cannot be changed (only texts and enabled)", field=name)
    if not changes:
        abort_json(400, "nothing to change: send texts and/or enabled")
    before = {"texts": dict(reminder.texts or {}), "enabled": reminder.enabled}
    for name, value in changes.items():
        setattr(reminder, name, value)
    audit.record("reminder.edit", school_id=reminder.school_id, actor=g.person,
                 object_type="reminder", object_id=reminder.id, article=reminder.article,
                 before=before, after={k: changes.get(k, before[k]) for k in before})
    db.session.commit()
    return jsonify(reminder_json(reminder))


