"""The agent's Prometheus counters on loopback: read from the real parts (DNS responder on
127.0.0.1, dry-run enforcer), applies timed, totals only (no address or name in a label)."""

from __future__ import annotations

import ipaddress
import re
import types
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.dns_responder import DnsResponder
from agent.enforcers.dry_run import DryRunEnforcer
from agent.errors import ConfigError
from agent.metrics import AgentMetrics, parse_listen
from agent.state import BlockState, SegmentState
from tests.support.netns import FakeDnsServer
from tests.support.policies import SERVICES, make_policy

DOMAIN = re.compile(r"(?i)^(?:[a-z0-9-]+\.)+[a-z]{2,}$")


@pytest.fixture
def running() -> Iterator[tuple[AgentMetrics, DnsResponder, tuple[str, int], datetime]]:
    """A dry-run enforcer, a DNS responder on 127.0.0.1 blocking twitter for 127.0.0.0/8 and the
    agent's metrics served on a free loopback port."""
    now = datetime.now(timezone.utc)
    upstream = FakeDnsServer(None, "127.0.0.1", {"example.org": ["192.0.2.80"]}, port=0)
    enforcer = DryRunEnforcer(lambda batch: None)
    policy = make_policy(SERVICES, now - timedelta(hours=2))
    enforcer.start(policy)
    state = BlockState(now, (SegmentState(1, "lo", ("127.0.0.0/8",),
                                          {"twitter": now + timedelta(hours=1)}),
                             SegmentState(2, "lokaal-2", ("10.9.0.0/24",), {})), None)
    responder = DnsResponder(listen=("127.0.0.1", 0), upstream=("127.0.0.1", upstream.port),
                             state_provider=lambda: state, enforcer=enforcer, services=SERVICES)
    responder.start()
    agent = types.SimpleNamespace(policy=policy, state=state,
                                  source=types.SimpleNamespace(last_contact=now.timestamp()))
    metrics = AgentMetrics(lambda: agent, enforcer, [responder], clock=lambda: now)
    metrics.enforcer = enforcer  # type: ignore[attr-defined]  (for the test to teach it)
    address = metrics.serve(("127.0.0.1", 0))
    assert address is not None
    yield metrics, responder, address, now
    metrics.stop()
    responder.stop()
    upstream.stop()


def _scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_counters_follow_the_parts(running) -> None:  # type: ignore[no-untyped-def]
    metrics, responder, address, now = running
    port = responder.bound[0][1]
    for name in ("x.com", "www.x.com", "example.org"):
        dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    timed = metrics.timed(types.SimpleNamespace(apply=lambda state: None))
    timed.apply(None)
    samples = _scrape(address)
    assert samples[("lesfocus_agent_policy_info", (("version", "v1"),))] == 1
    assert samples[("lesfocus_agent_policy_age_seconds", ())] == 7200
    assert samples[("lesfocus_agent_policy_expires_in_seconds", ())] == 7 * 86400 - 7200
    assert samples[("lesfocus_agent_blocks_active", (("service", "twitter"),))] == 1
    assert samples[("lesfocus_agent_blocks_active", (("service", "tiktok"),))] == 0
    assert samples[("lesfocus_agent_segments_in_lesson", ())] == 1
    assert samples[("lesfocus_agent_dns_queries_total", (("decision", "refused"),))] == 2
    assert samples[("lesfocus_agent_dns_queries_total", (("decision", "forwarded"),))] == 1
    assert samples[("lesfocus_agent_apply_duration_seconds_count", ())] == 1
    assert samples[("lesfocus_agent_learned_addresses", ())] == 0
    metrics.enforcer.learn("twitter", ["198.51.100.10", "2001:db8::10"], 300)
    assert _scrape(address)[("lesfocus_agent_learned_addresses", ())] == 2
    assert samples[("lesfocus_agent_last_contact_timestamp_seconds", ())] == now.timestamp()


def test_no_label_value_is_an_address_or_a_domain_name(running) -> None:  # type: ignore
    _, responder, address, _ = running
    port = responder.bound[0][1]
    dns.query.udp(dns.message.make_query("x.com", "A"), "127.0.0.1", port=port, timeout=2)
    checked = 0
    for (name, labels), _value in _scrape(address).items():
        for key, value in labels:
            if key == "le":
                continue
            checked += 1
            with pytest.raises(ValueError):
                ipaddress.ip_network(value, strict=False)
            assert not DOMAIN.match(value), f"{name}: {key}={value!r}"
    assert checked >= 4


def test_a_failed_apply_is_counted_and_raised(running) -> None:  # type: ignore[no-untyped-def]
    metrics, _, address, _ = running

    def broken(state: object) -> None:
        raise OSError("nft: no such table")
    with pytest.raises(OSError):
        metrics.timed(types.SimpleNamespace(apply=broken)).apply(None)
    assert _scrape(address)[("lesfocus_agent_apply_failures_total", ())] == 1


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:9100", ("::1", 9100)), ("off", None)])
def test_the_listen_setting(value: str, expected: object) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value, words", [
    ("0.0.0.0:9464", "loopback only"), ("10.0.0.1:9464", "loopback only"),
    ("localhost", "ADDR:PORT"), ("127.0.0.1:99999", "not a port")])
def test_a_bad_listen_setting_is_a_config_error(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_listen(value)


def test_a_taken_port_leaves_the_agent_running_without_counters(running) -> None:  # type: ignore
    _, _, address, _ = running
    other = AgentMetrics(lambda: None, None, [])
    assert other.serve(address) is None
    other.stop()
