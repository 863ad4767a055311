"""A school as the tests and benchmarks start from: the service catalog, the school, its reminders."""

from __future__ import annotations

from server.models import School


def seed_school(slug: str, name: str, timezone: str = "Europe/Amsterdam") -> School:
    """Seed the service catalog and add school `slug` with the default reminders.

    Runs inside an app context; the school is flushed (it has its id) but not committed, so the
    caller may add more (people, gateways) to the same transaction and commits it.
    """
    from server.extensions import db
    from server.seed import seed_reminders, seed_services

    seed_services()
    school = School(slug=slug, name=name, timezone=timezone, aliases=[])
    db.session.add(school)
    db.session.flush()
    seed_reminders(school)
    return school
