"""The suffix matcher: a name belongs to the service of its most specific listed suffix."""

from __future__ import annotations

import pytest

from agent.domains import CANARY, DOH, DomainMatcher, always_blocked_matcher, doh_hostnames
from agent.state import Service

SERVICES = {
    "twitter": Service("twitter", "X", ("x.com", "t.co")),
    "cdn-owner": Service("cdn-owner", "Owner", ("cdn.x.com",)),
    "tiktok": Service("tiktok", "TikTok", ("tiktok.com", "TikTokCDN.com.")),
}


@pytest.mark.parametrize("name,expected", [
    ("x.com", "twitter"),
    ("X.COM.", "twitter"),
    ("api.x.com", "twitter"),
    ("a.b.c.x.com", "twitter"),
    ("cdn.x.com", "cdn-owner"),          # the more specific listed suffix wins
    ("img.cdn.x.com", "cdn-owner"),
    ("notx.com", None),                  # a suffix match is on whole labels only
    ("x.com.evil.example", None),
    ("com", None),
    ("", None),
    ("t.co", "twitter"),
    ("v16.tiktokcdn.com", "tiktok"),
    ("tiktok.com.", "tiktok"),
])
def test_match(name: str, expected: str | None) -> None:
    assert DomainMatcher.from_services(SERVICES).match(name) == expected


def test_a_domain_listed_twice_keeps_its_first_owner() -> None:
    matcher = DomainMatcher([("x.com", "a"), ("X.com", "b")])
    assert matcher.match("www.x.com") == "a" and len(matcher) == 1


def test_empty_domain_is_refused_with_the_service_named() -> None:
    with pytest.raises(ValueError, match="'broken'"):
        DomainMatcher([(".", "broken")])


@pytest.mark.parametrize("name,expected", [
    ("use-application-dns.net", CANARY),
    ("mask.icloud.com", CANARY),
    ("mask-h2.icloud.com", CANARY),
    ("www.icloud.com", None),
    ("dns.google", DOH),
    ("cloudflare-dns.com", DOH),
    ("example.org", None),
])
def test_always_blocked_names(name: str, expected: str | None) -> None:
    assert always_blocked_matcher().match(name) == expected


def test_doh_list_is_loaded_from_the_package_data() -> None:
    names = doh_hostnames()
    assert len(names) > 1000 and all(n == n.lower() and not n.endswith(".") for n in names)
