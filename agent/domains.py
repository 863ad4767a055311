"""Which service a DNS name belongs to: a suffix matcher over the policy's domains (and DoH names).

A domain in the policy covers itself and every subdomain (`x.com` matches `x.com` and `a.b.x.com`,
never `notx.com`). Matching walks the name's suffixes label by label and looks each one up in a
dict, so its cost grows with the number of labels, not with the number of domains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources

from .state import Service

# Pseudo-services: names answered NXDOMAIN for any segment that has a block (SPEC §4 item 4).
CANARY = "@canary"
DOH = "@doh"
CANARY_NAMES = ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com")


def normalize(name: str) -> str:
    """Lower-case a name and drop the root dot."""
    return name.lower().rstrip(".")


class DomainMatcher:
    """Maps a name to the service id of its most specific listed suffix, or None."""

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._by_suffix: dict[str, str] = {}
        for domain, service_id in entries:
            key = normalize(domain)
            if not key:
                raise ValueError(f"empty domain for service {service_id!r}")
            # The first owner wins for a domain listed twice, so the result never depends on
            # dict order of later duplicates.
            self._by_suffix.setdefault(key, service_id)

    @classmethod
    def from_services(cls, services: Mapping[str, Service] | Iterable[Service],
                      extra: Iterable[tuple[str, str]] = ()) -> "DomainMatcher":
        """A matcher over every domain of the services, plus extra (domain, id) pairs."""
        items = services.values() if isinstance(services, Mapping) else services
        pairs = [(d, s.id) for s in items for d in s.domains]
        return cls([*pairs, *extra])

    def __len__(self) -> int:
        return len(self._by_suffix)

    def __contains__(self, name: str) -> bool:
        return self.match(name) is not None

    def match(self, name: str) -> str | None:
        """The service id for name (a domain listed or a subdomain of one), else None."""
        table = self._by_suffix
        name = name.lower()
        if name.endswith("."):
            name = name[:-1]
        found = table.get(name)
        if found is not None:
            return found
        dot = name.find(".")
        while dot != -1:
            found = table.get(name[dot + 1:])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
        return None

    def items(self) -> list[tuple[str, str]]:
        """Every (listed domain, service id)."""
        return list(self._by_suffix.items())

    def domains(self, service_id: str) -> list[str]:
        """The listed domains of one service (sorted)."""
        return sorted(d for d, s in self._by_suffix.items() if s == service_id)


@lru_cache(maxsize=1)
def doh_hostnames() -> tuple[str, ...]:
    """Known DNS-over-HTTPS server hostnames from agent/data/doh-providers.json."""
    text = resources.files("agent").joinpath("data/doh-providers.json").read_text()
    data = json.loads(text)
    names = data.get("hostnames")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("agent/data/doh-providers.json: field 'hostnames' must be a list of names")
    return tuple(normalize(n) for n in names if n.strip())


def always_blocked_matcher(doh: Iterable[str] | None = None) -> DomainMatcher:
    """The names NXDOMAIN'd for every blocked segment: the canaries and the DoH servers."""
    pairs = [(name, CANARY) for name in CANARY_NAMES]
    pairs += [(name, DOH) for name in (doh_hostnames() if doh is None else doh)]
    return DomainMatcher(pairs)
