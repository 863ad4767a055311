"""Reference data the server ships: the social-media service catalog and default reminders."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .extensions import db
from .models import Reminder, School

DATA_DIR = Path(__file__).parent / "data"


@cache
def service_catalog() -> list[dict[str, Any]]:
    """The services of `data/social-services.json` (from AdGuard Home's list; see its header)."""
    return json.loads((DATA_DIR / "social-services.json").read_text())["services"]


@cache
def default_reminders() -> list[dict[str, Any]]:
    """The default reminder texts of `data/reminders.json`."""
    return json.loads((DATA_DIR / "reminders.json").read_text())["reminders"]


def seed_services(actor: str = "system") -> int:
    """Bring the shipped service catalog in (server/catalog.py); return how many services
    were added. Existing schools' views of what changed are audited."""
    from .catalog import read_catalog, sync_catalog
    return len(sync_catalog(read_catalog(), actor=actor).changes.new_services)


def seed_reminders(school: School) -> int:
    """Give `school` every default reminder it does not have yet; return how many were added."""
    have = {(r.article, r.audience, r.trigger)
            for r in db.session.scalars(select(Reminder).where(Reminder.school_id == school.id))}
    added = 0
    for entry in default_reminders():
        key = (entry["article"], entry["audience"], entry["trigger"])
        if key not in have:
            db.session.add(Reminder(school_id=school.id, article=entry["article"],
                                    audience=entry["audience"], trigger=entry["trigger"],
                                    texts=dict(entry["texts"])))
            added += 1
    return added
