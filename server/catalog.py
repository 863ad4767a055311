"""The shipped service catalog brought into an existing install: `lesfocus services sync`.

`data/social-services.json` grows with releases (a new CDN domain, a new service). The sync
merges it into the `services` table, which every school shares, and keeps what is local:

- a service the catalog does not list (made by hand, or dropped by a later catalog) is left alone;
- a domain that was added locally (never shipped for that service) stays;
- a shipped domain that was removed locally stays removed: `Service.shipped_domains` remembers
  what the catalog listed at the last sync, so "missing" and "new" can be told apart;
- a domain the catalog drops is removed, unless it was added locally;
- which services a school blocks stays the school's choice: a school that blocks every service
  (the default) blocks a new service too; a school with its own list keeps its list, and the
  summary says that the new service is not blocked there.

Services of earlier releases have no `shipped_domains` yet; for them the first sync counts as
shipped only the domains that are in both the database and the catalog, so it removes nothing.

The caller owns the transaction (the CLI commits once, or rolls back on any error). Each school
whose view changed gets one audit event in words; the service writes themselves tell the change
feed that every school's policies changed (server/changes.py), so gateways get new policies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lesfocus_policy import MAX_SERVICES, is_domain_name

from . import audit
from .extensions import db
from .models import Person, School, Service

SHIPPED_CATALOG = Path(__file__).parent / "data" / "social-services.json"
_SERVICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class CatalogError(ValueError):
    """The catalog file is unreadable or malformed; the message names the place."""


@dataclass(frozen=True)
class CatalogService:
    """One service of the catalog, checked."""

    id: str
    name: str
    group: str
    domains: tuple[str, ...]


def _text(entry: dict[str, Any], key: str, where: str, limit: int) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}.{key}: required, a non-empty string")
    if len(value.strip()) > limit:
        raise CatalogError(f"{where}.{key}: at most {limit} characters")
    return value.strip()


def parse_catalog(data: Any, source: str) -> list[CatalogService]:
    """The services of a catalog document; CatalogError naming the entry and field otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise CatalogError(f"{source}: expected an object with a list \"services\"")
    services: list[CatalogService] = []
    seen: set[str] = set()
    for index, entry in enumerate(data["services"]):
        where = f"{source}: services[{index}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: expected an object")
        service_id = entry.get("id")
        if not isinstance(service_id, str) or not _SERVICE_ID.match(service_id):
            raise CatalogError(f"{where}.id: {service_id!r} is not a service id (lower-case "
                               "letters, digits, _ and -, at most 40)")
        where = f"{where} ({service_id})"
        if service_id in seen:
            raise CatalogError(f"{where}.id: listed twice")
        seen.add(service_id)
        name = _text(entry, "name", where, 100)
        group = _text(entry, "group", where, 40)
        domains = entry.get("domains")
        if not isinstance(domains, list) or not domains:
            raise CatalogError(f"{where}.domains: required, a non-empty list of domain names")
        checked: list[str] = []
        for n, domain in enumerate(domains):
            if not isinstance(domain, str) or not is_domain_name(domain):
                raise CatalogError(f"{where}.domains[{n}]: not a domain name in lower case "
                                   f"without a trailing dot: {domain!r}")
            if domain in checked:
                raise CatalogError(f"{where}.domains[{n}]: {domain!r} listed twice")
            checked.append(domain)
        services.append(CatalogService(service_id, name, group, tuple(sorted(checked))))
    return services


def read_catalog(path: Path | None = None) -> list[CatalogService]:
    """The catalog at `path` (default: the one this release ships), checked."""
    if path is None:
        return list(_shipped_catalog())
    return _read(path)


@cache
def _shipped_catalog() -> tuple[CatalogService, ...]:
    return tuple(_read(SHIPPED_CATALOG))


def _read(path: Path) -> list[CatalogService]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: cannot be read: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise CatalogError(f"{path}: not JSON: {err}") from None
    return parse_catalog(data, path.name)


@dataclass
class CatalogChanges:
    """What a sync changed in the shared services (the same for every school)."""

    new_services: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    added_domains: dict[str, list[str]] = field(default_factory=dict)  # service id -> domains
    removed_domains: dict[str, list[str]] = field(default_factory=dict)
    renamed: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (before, after)

    def __bool__(self) -> bool:
        return bool(self.new_services or self.added_domains or self.removed_domains
                    or self.renamed)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass(frozen=True)
class SchoolSync:
    """What a sync changed for one school, and that as one Dutch sentence."""

    slug: str
    name: str
    changes: CatalogChanges
    not_blocked: tuple[str, ...]  # names of new services the school's own choice leaves open

    @property
    def summary(self) -> str:
        """For example "Lucas College: 1 nieuwe dienst (Bluesky), 3 nieuwe domeinen"."""
        return f"{self.name}: {self.describe()}"

    def describe(self) -> str:
        """The changes in words, without the school's name."""
        c = self.changes
        if not c:
            return "geen wijzigingen"
        parts = []
        if c.new_services:
            parts.append(_count(len(c.new_services), "nieuwe dienst", "nieuwe diensten")
                         + f" ({', '.join(name for _, name in c.new_services)})")
        if c.added_domains:
            parts.append(_count(sum(map(len, c.added_domains.values())), "nieuw domein",
                                "nieuwe domeinen"))
        if c.removed_domains:
            parts.append(_count(sum(map(len, c.removed_domains.values())),
                                "domein uit de catalogus verwijderd",
                                "domeinen uit de catalogus verwijderd"))
        if c.renamed:
            parts.append(", ".join(f"{before} heet nu {after}"
                                   for before, after in c.renamed.values()))
        text = ", ".join(parts)
        if self.not_blocked:
            text += (f"; niet geblokkeerd, want de school kiest zelf welke diensten: "
                     f"{', '.join(self.not_blocked)} (aan te zetten op de IT-pagina)")
        return text


def _merge(service: Service, entry: CatalogService, changes: CatalogChanges) -> None:
    current = set(service.domains or [])
    catalog = set(entry.domains)
    if service.shipped_domains is None:
        shipped_before = current & catalog  # unknown: nothing counts as removed or dropped
    else:
        shipped_before = set(service.shipped_domains)
    removed_locally = shipped_before - current
    added = catalog - current - removed_locally
    # Dropped by the catalog, and not added locally (it was shipped before).
    dropped = (shipped_before - catalog) & current
    if added or dropped:
        service.domains = sorted((current | added) - dropped)
    if added:
        changes.added_domains[entry.id] = sorted(added)
    if dropped:
        changes.removed_domains[entry.id] = sorted(dropped)
    if service.shipped_domains != list(entry.domains):
        service.shipped_domains = list(entry.domains)
    if service.name != entry.name:
        changes.renamed[entry.id] = (service.name, entry.name)
        service.name = entry.name
    # The group only orders the IT page; a school may have regrouped a service, so it stays.


@dataclass(frozen=True)
class CatalogSync:
    """A sync's result: the changes to the shared services and each school's view of them."""

    changes: CatalogChanges
    schools: list[SchoolSync]


def sync_catalog(catalog: Sequence[CatalogService], *, actor: Person | str | None
                 ) -> CatalogSync:
    """Bring `catalog` into the services (see the module docstring); one report per school.

    Writes to the session and flushes; CatalogError (nothing written) when the result would
    name more services than a policy can carry.
    """
    existing = {s.id: s for s in db.session.scalars(select(Service))}
    total = len(set(existing) | {entry.id for entry in catalog})
    if total > MAX_SERVICES:
        raise CatalogError(f"the catalog would make {total} services; a policy carries at most "
                           f"{MAX_SERVICES}")
    changes = CatalogChanges()
    for entry in catalog:
        service = existing.get(entry.id)
        if service is None:
            db.session.add(Service(id=entry.id, name=entry.name, group=entry.group,
                                   domains=list(entry.domains),
                                   shipped_domains=list(entry.domains)))
            changes.new_services.append((entry.id, entry.name))
        else:
            _merge(service, entry, changes)
    db.session.flush()
    reports = []
    for school in db.session.scalars(select(School).order_by(School.name, School.id)):
        chosen = school.blocked_services
        not_blocked = tuple(name for service_id, name in changes.new_services
                            if chosen is not None and service_id not in chosen)
        report = SchoolSync(school.slug, school.name, changes, not_blocked)
        if changes:
            audit.record("services.sync", school_id=school.id, actor=actor,
                         object_type="service_catalog", summary=report.describe(),
                         new_services=[service_id for service_id, _ in changes.new_services],
                         not_blocked=list(not_blocked),
                         added_domains=changes.added_domains,
                         removed_domains=changes.removed_domains,
                         renamed={k: list(v) for k, v in changes.renamed.items()})
        reports.append(report)
    return CatalogSync(changes, reports)
