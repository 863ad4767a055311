"""The nftables enforcer: the ruleset as data, and its effect on a real kernel in a netns trio."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent.domains import DOH
from agent.enforcers.base import Enforcer
from agent.enforcers.dry_run import DryRunEnforcer
from agent.enforcers.nftables import (REDIRECT_LEASE_SECONDS, NftablesEnforcer, block_elements,
                                      build_ruleset, diff_elements, render_apply, render_delta,
                                      render_learn, render_redirect_lease, set_names)
from agent.errors import EnforcerError
from agent.state import BlockState, SegmentState
from tests.support import netns
from tests.support.netns import GatewayLab, TcpServer, UdpEchoServer, tcp_connect
from tests.support.policies import SERVICES, make_policy, make_state

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
# -- the ruleset as data -------------------------------------------------------------------

def test_ruleset_has_four_sets_per_service_and_the_nine_shared_sets() -> None:
    rs = build_ruleset(SERVICES, lan_interfaces=["lan1", "lan2"], dns_port=5353)
    names = {s.name for s in rs.sets}
    assert {"blocked4", "blocked6", "doh4", "doh6", "learned4", "learned6", "dns_redirect",
            "flows4", "flows6"} <= names
    for sid, i in rs.service_index.items():
        assert set(set_names(i).values()) <= names, sid
    assert len(rs.sets) == 9 + 4 * len(SERVICES)


def test_source_sets_are_intervals_with_timeouts_and_never_auto_merge() -> None:
    rs = build_ruleset(SERVICES)
    for spec in rs.sets:
        if spec.name.startswith(("src", "blocked")):
            assert spec.flags == ("interval", "timeout")
        else:
            assert spec.flags == ("timeout",)
    assert "auto-merge" not in rs.render()


def test_rendered_ruleset_replaces_the_table_in_one_batch() -> None:
    text = build_ruleset(SERVICES, table="t1").render()
    lines = text.splitlines()
    assert lines[:3] == ["add table inet t1", "delete table inet t1", "table inet t1 {"]
    assert text.count("table inet t1 {") == 1


@pytest.mark.parametrize("needle", [
    "ip daddr @addr4_0 ip saddr @src4_0 goto refuse",
    "ip6 daddr @addr6_1 ip6 saddr @src6_1 goto refuse",
    "ip daddr @learned4 jump services4",
    "ip6 daddr @learned6 jump services6",
    "meta l4proto . th dport vmap { udp . 443 : goto refuse, udp . 853 : goto refuse, "
    "tcp . 853 : goto refuse }",
    "ip daddr @doh4 goto refuse",
    "chain refuse {\n\t\tmeta l4proto tcp reject with tcp reset\n"
    "\t\treject with icmpx admin-prohibited\n\t}",
    "meta l4proto tcp ip saddr . tcp sport . ip daddr . tcp dport @flows4 reject with tcp reset",
    'iifname { "lan1", "lan2" } ip saddr @blocked4 meta l4proto { tcp, udp } th dport @dns_redirect '
    "redirect to :5353",
    'iifname { "lan1", "lan2" } ip6 saddr @blocked6 jump blocked_traffic',
])
def test_ruleset_contains_rule(needle: str) -> None:
    text = build_ruleset(SERVICES, lan_interfaces=["lan2", "lan1"], dns_port=5353).render()
    assert needle in text


def test_no_rule_matches_the_return_direction_or_only_new_connections() -> None:
    text = build_ruleset(SERVICES).render()
    assert "ct state" not in text
    assert "daddr @src" not in text and "daddr @blocked" not in text
    assert " drop" not in text


def test_block_elements_time_out_at_the_block_end_and_skip_ended_blocks() -> None:
    rs = build_ruleset(SERVICES)
    state = make_state(NOW, {"twitter": NOW + timedelta(minutes=50),
                             "tiktok": NOW - timedelta(seconds=1)},
                       {"tiktok": NOW + timedelta(minutes=10)})
    elements, owners = block_elements(rs, state, NOW)
    tw, tt = rs.service_index["twitter"], rs.service_index["tiktok"]
    seg1 = netns.SEG1_CIDRS[0]
    seg2_6 = netns.SEG2_CIDRS[1]
    assert elements[f"src4_{tw}"] == {seg1: NOW + timedelta(minutes=50)}
    assert seg1 not in elements[f"src4_{tt}"]
    assert elements[f"src6_{tt}"] == {seg2_6: NOW + timedelta(minutes=10)}
    assert elements["blocked4"][seg1] == NOW + timedelta(minutes=50)
    assert owners[f"src6_{tt}"][seg2_6] == (2, "tiktok")
    batch = render_apply("lesfocus", elements, NOW)
    assert f"flush set inet lesfocus src4_{tw}\n" in batch
    assert "10.81.1.0/24 timeout 3000000ms" in batch


def test_elements_are_canonical_network_text_whatever_the_state_spelled() -> None:
    rs = build_ruleset(SERVICES)
    state = BlockState(NOW, (SegmentState(1, "a", ("10.0.1.7/24", "FD00:0001:0::/64"), {
        "twitter": NOW + timedelta(seconds=60)}),), None)
    elements, _ = block_elements(rs, state, NOW)
    assert set(elements["blocked4"]) | set(elements["blocked6"]) == {"10.0.1.0/24", "fd00:1::/64"}


def test_overlapping_networks_in_one_interval_set_keep_the_wider_with_the_later_end() -> None:
    rs = build_ruleset(SERVICES)
    state = BlockState(NOW, (
        SegmentState(1, "a", ("10.0.0.0/16",), {"twitter": NOW + timedelta(seconds=60)}),
        SegmentState(2, "b", ("10.0.5.0/24",), {"twitter": NOW + timedelta(seconds=90)})), None)
    elements, _ = block_elements(rs, state, NOW)
    assert elements["src4_" + str(rs.service_index["twitter"])] == {
        "10.0.0.0/16": NOW + timedelta(seconds=90)}


def test_learn_batch_refreshes_by_delete_and_add_in_one_transaction() -> None:
    batch = render_learn("t", "addr4_0", ["192.0.2.1"], ["192.0.2.2"], 3600)
    items = "{ 192.0.2.2 timeout 3600s, 192.0.2.1 timeout 3600s }"
    assert batch == ("delete element inet t addr4_0 { 192.0.2.2 }\n"
                     f"add element inet t addr4_0 {items}\n"
                     # the union: add, so that the delete cannot fail; delete; add afresh
                     f"add element inet t learned4 {items}\n"
                     "delete element inet t learned4 { 192.0.2.2, 192.0.2.1 }\n"
                     f"add element inet t learned4 {items}\n")


def test_every_packet_from_a_blocked_segment_meets_the_same_few_rules_whatever_the_services(
        ) -> None:
    few = build_ruleset(SERVICES).chains
    many = build_ruleset([f"service-{i}" for i in range(16)]).chains
    chain = {c.name: c for c in many}
    assert {c.name: c.rules for c in few}["blocked_traffic"] == chain["blocked_traffic"].rules
    assert len(chain["blocked_traffic"].rules) == 5
    # The walk over the services is reached only by packets to a learned address.
    assert len(chain["services4"].rules) == 16 + 1
    assert sum("services4" in r for c in many for r in c.rules) == 1


def test_dry_run_logs_the_same_transactions_and_skips_repeated_learns() -> None:
    logged: list[str] = []
    enf = DryRunEnforcer(logged.append, table="t", lan_interfaces=["lan1"], dns_port=5353,
                         clock=lambda: NOW)
    assert isinstance(enf, Enforcer)
    enf.start(make_policy())
    assert logged[0] == (build_ruleset(SERVICES, "t", ["lan1"], 5353).render()
                         + render_redirect_lease("t", REDIRECT_LEASE_SECONDS))
    enf.keep_alive()
    assert len(logged) == 1  # a dry run never redirects, so it has no lease to renew
    enf.apply(make_state(NOW, {"twitter": NOW + timedelta(hours=1)}))
    assert logged[-1].startswith("add element inet t blocked4 { 10.81.1.0/24 timeout 3600000ms }")
    count = len(logged)
    enf.apply(make_state(NOW, {"twitter": NOW + timedelta(hours=1)}))
    assert len(logged) == count  # nothing changed, nothing to log
    enf.learn("twitter", ["198.51.100.10", "2001:db8::10", "not-an-address", "0.0.0.0"], 60)
    assert "add element inet t addr4_1 { 198.51.100.10 timeout 3600s }" in logged[-1]
    assert "add element inet t addr6_1 { 2001:db8::10 timeout 3600s }" in logged[-1]
    count = len(logged)
    enf.learn("twitter", ["198.51.100.10"], 60)
    enf.learn("unknown-service", ["198.51.100.11"], 60)
    assert len(logged) == count
    enf.learn(DOH, ["192.0.2.53"], 300)
    assert "add element inet t doh4 { 192.0.2.53 timeout 3600s }" in logged[-1]


def test_redirect_lease_is_renewed_by_add_delete_add_in_one_batch() -> None:
    # add first: the delete of an element the kernel already expired would fail the batch.
    assert render_redirect_lease("t", 20) == (
        "add element inet t dns_redirect { 53 timeout 20000ms }\n"
        "delete element inet t dns_redirect { 53 }\n"
        "add element inet t dns_redirect { 53 timeout 20000ms }\n")
    batches: list[str] = []
    enf = NftablesEnforcer(table="t", runner=batches.append, redirect_lease=20)
    enf.keep_alive()
    assert batches == []  # nothing to renew before the table exists
    enf.start(make_policy())
    assert batches[0].endswith(render_redirect_lease("t", 20))  # same transaction as the rebuild
    enf.keep_alive()
    assert batches[1] == render_redirect_lease("t", 20)


# -- apply changes only what differs from the last apply -------------------------------------

def segments_state(at: datetime, blocked: dict[int, dict[str, datetime]]) -> BlockState:
    """Segments 1..5 (10.0.<id>.0/24 and fd00:<id>::/64), blocked as given."""
    return BlockState(at, tuple(
        SegmentState(i, f"lokaal {i}", (f"10.0.{i}.0/24", f"fd00:{i}::/64"), blocked.get(i, {}))
        for i in range(1, 6)), None)


def recording(clock: list[datetime]) -> tuple[NftablesEnforcer, list[str]]:
    """An enforcer whose batches are recorded (no kernel), on the clock `clock[0]`, started."""
    batches: list[str] = []
    enf = NftablesEnforcer(table="t", runner=batches.append, clock=lambda: clock[0],
                           cut_on_apply=False)
    enf.start(make_policy(now=NOW))
    batches.clear()
    return enf, batches


def all_blocked(until: datetime, *segment_ids: int) -> dict[int, dict[str, datetime]]:
    return {i: {sid: until for sid in SERVICES} for i in segment_ids}


def test_grant_on_one_segment_renders_a_batch_naming_only_that_segments_networks() -> None:
    clock = [NOW]
    enf, batches = recording(clock)
    end = NOW + timedelta(minutes=50)
    enf.apply(segments_state(NOW, all_blocked(end, 1, 2, 3, 4, 5)))
    assert len(batches) == 1 and all(f"10.0.{i}.0/24" in batches[0] for i in range(1, 6))
    clock[0] = NOW + timedelta(minutes=5, seconds=0.4)
    granted = all_blocked(end, 1, 2, 3, 4, 5)
    del granted[3]["twitter"]
    enf.apply(segments_state(clock[0], granted))
    tw = enf.ruleset.service_index["twitter"]  # type: ignore[union-attr]
    # Segment 3 is still blocked for tiktok until the same end: the unions stay as they are.
    assert batches[1] == (f"delete element inet t src4_{tw} {{ 10.0.3.0/24 }}\n"
                          f"delete element inet t src6_{tw} {{ fd00:3::/64 }}\n")


def test_unchanged_state_renders_no_batch_even_with_a_clock_between_seconds() -> None:
    clock = [NOW + timedelta(seconds=0.25)]
    enf, batches = recording(clock)
    state = segments_state(NOW, all_blocked(NOW + timedelta(minutes=50), 1, 2))
    enf.apply(state)
    for jitter in (0.7, 1.3, 61.9):
        clock[0] = NOW + timedelta(seconds=jitter)
        enf.apply(segments_state(clock[0], all_blocked(NOW + timedelta(minutes=50), 1, 2)))
    assert len(batches) == 1


def test_end_moved_later_renders_delete_and_add_of_that_element_only() -> None:
    clock = [NOW]
    enf, batches = recording(clock)
    blocked = {1: {"twitter": NOW + timedelta(minutes=50)},
               2: {"twitter": NOW + timedelta(minutes=50)}}
    enf.apply(segments_state(NOW, blocked))
    clock[0] = NOW + timedelta(minutes=10)
    blocked[1] = {"twitter": NOW + timedelta(minutes=95)}  # the next lesson follows on
    enf.apply(segments_state(clock[0], blocked))
    tw = enf.ruleset.service_index["twitter"]  # type: ignore[union-attr]
    left = 85 * 60 * 1000
    assert batches[1] == (
        f"delete element inet t blocked4 {{ 10.0.1.0/24 }}\n"
        f"add element inet t blocked4 {{ 10.0.1.0/24 timeout {left}ms }}\n"
        f"delete element inet t blocked6 {{ fd00:1::/64 }}\n"
        f"add element inet t blocked6 {{ fd00:1::/64 timeout {left}ms }}\n"
        f"delete element inet t src4_{tw} {{ 10.0.1.0/24 }}\n"
        f"add element inet t src4_{tw} {{ 10.0.1.0/24 timeout {left}ms }}\n"
        f"delete element inet t src6_{tw} {{ fd00:1::/64 }}\n"
        f"add element inet t src6_{tw} {{ fd00:1::/64 timeout {left}ms }}\n")


def test_an_element_whose_end_passed_is_never_deleted() -> None:
    clock = [NOW]
    enf, batches = recording(clock)
    enf.apply(segments_state(NOW, {1: {"twitter": NOW + timedelta(minutes=5)},
                                   2: {"twitter": NOW + timedelta(minutes=50)}}))
    # The bell at 09:05 (and a little later): segment 1's element ended in the kernel already.
    for late in (0, 0.3):
        clock[0] = NOW + timedelta(minutes=5, seconds=late)
        enf.apply(segments_state(clock[0], {2: {"twitter": NOW + timedelta(minutes=50)}}))
    assert len(batches) == 1
    # Later segment 2 is granted: its element goes, segment 1's is not named.
    clock[0] = NOW + timedelta(minutes=20)
    enf.apply(segments_state(clock[0], {}))
    assert "10.0.2.0/24" in batches[-1] and "10.0.1.0/24" not in batches[-1]


def test_an_ended_element_blocked_again_is_added_so_that_no_step_can_fail() -> None:
    rs = build_ruleset(SERVICES)
    tw = rs.service_index["twitter"]
    first, _ = block_elements(rs, segments_state(NOW, {1: {"twitter": NOW + timedelta(
        minutes=5)}}), NOW)
    bell = NOW + timedelta(minutes=5)
    again, _ = block_elements(rs, segments_state(bell, {1: {"twitter": bell + timedelta(
        minutes=45)}}), bell)
    delta = diff_elements(first, again, bell)
    net = "10.0.1.0/24"
    assert delta.lapsed[f"src4_{tw}"] == [net] and not delta.removed and not delta.changed
    # The kernel may still hold it for a moment: add (cannot fail), delete, add with the timeout.
    assert (f"add element inet t src4_{tw} {{ 10.0.1.0/24 timeout 2700000ms }}\n"
            f"delete element inet t src4_{tw} {{ 10.0.1.0/24 }}\n"
            f"add element inet t src4_{tw} {{ 10.0.1.0/24 timeout 2700000ms }}\n"
            ) in render_delta("t", delta, bell)


def test_diff_from_nothing_adds_everything_and_to_nothing_deletes_the_live_elements() -> None:
    rs = build_ruleset(SERVICES)
    ends, _ = block_elements(rs, segments_state(NOW, all_blocked(NOW + timedelta(hours=1), 1, 2)),
                             NOW)
    up = diff_elements({}, ends, NOW)
    assert sum(len(v) for v in up.added.values()) == 2 * 2 * (len(SERVICES) + 1)
    assert "delete" not in render_delta("t", up, NOW)
    empty, _ = block_elements(rs, segments_state(NOW, {}), NOW)
    down = diff_elements(ends, empty, NOW + timedelta(minutes=1))
    assert not down.added and sum(len(v) for v in down.removed.values()) == 2 * 2 * 3
    assert "add" not in render_delta("t", down, NOW)
    assert not diff_elements(ends, empty, NOW + timedelta(hours=1))  # all ended by then
    assert render_delta("t", diff_elements(ends, ends, NOW), NOW) == ""


def test_an_element_passing_to_another_segment_is_replaced_so_its_count_stays_with_the_first(
        ) -> None:
    rs = build_ruleset(SERVICES)
    end = NOW + timedelta(hours=1)
    one = BlockState(NOW, (SegmentState(1, "a", ("10.0.1.0/24",), {"twitter": end}),), None)
    two = BlockState(NOW, (SegmentState(2, "b", ("10.0.1.0/24",), {"twitter": end}),), None)
    (ends1, owners1), (ends2, owners2) = block_elements(rs, one, NOW), block_elements(rs, two, NOW)
    delta = diff_elements(ends1, ends2, NOW, owners1, owners2)
    assert delta.changed == {f"src4_{rs.service_index['twitter']}": ["10.0.1.0/24"]}


def test_a_refused_delta_falls_back_to_setting_every_source_set_afresh() -> None:
    clock = [NOW]
    batches: list[str] = []

    def runner(batch: str) -> None:
        batches.append(batch)
        if batch.startswith("delete element"):
            raise EnforcerError("nftables refused the batch: element does not exist")

    enf = NftablesEnforcer(table="t", runner=runner, clock=lambda: clock[0], cut_on_apply=False)
    enf.start(make_policy(now=NOW))
    enf.apply(segments_state(NOW, all_blocked(NOW + timedelta(minutes=50), 1, 2)))
    clock[0] = NOW + timedelta(minutes=1)
    enf.apply(segments_state(clock[0], all_blocked(NOW + timedelta(minutes=50), 2)))
    assert batches[-2].startswith("delete element inet t blocked4 { 10.0.1.0/24 }")
    fallback = batches[-1]
    assert fallback.startswith("flush set inet t blocked4\n")
    assert fallback.count("flush set") == 2 + 2 * len(SERVICES)
    assert "10.0.2.0/24 timeout 2940000ms" in fallback and "10.0.1.0/24" not in fallback
    # The enforcer now remembers the kernel as the fallback left it: nothing more to do.
    count = len(batches)
    enf.apply(segments_state(clock[0], all_blocked(NOW + timedelta(minutes=50), 2)))
    assert len(batches) == count


def test_start_forgets_what_was_applied_so_the_first_apply_adds_everything() -> None:
    clock = [NOW]
    enf, batches = recording(clock)
    state = segments_state(NOW, all_blocked(NOW + timedelta(minutes=50), 1))
    enf.apply(state)
    enf.start(make_policy(now=NOW))
    enf.apply(state)
    assert batches[-1] == batches[0] and "delete" not in batches[-1]


def test_apply_before_start_is_an_enforcer_error() -> None:
    enf = DryRunEnforcer(lambda batch: None)
    with pytest.raises(EnforcerError, match="not been started"):
        enf.apply(make_state(NOW, {}))


# -- on a real kernel ----------------------------------------------------------------------

TW4, TW6, OTHER4, DOH4 = "198.51.100.10", "2001:db8::10", "198.51.100.20", "198.51.100.53"


@pytest.fixture
def lab() -> Iterator[GatewayLab]:
    from tests.support.realparts import require
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    with GatewayLab() as lab:
        for addr in (TW4, TW6, OTHER4, DOH4):
            lab.add_server_address(addr)
        for addr in (TW4, TW6, OTHER4, DOH4):
            for port in (443, 853):
                server = TcpServer(lab.inet, addr, port)
                lab.on_close(server.stop)
        quic = UdpEchoServer(lab.inet, OTHER4, 443)
        lab.on_close(quic.stop)
        yield lab


def started(lab: GatewayLab, table: str = "lesfocus") -> NftablesEnforcer:
    enf = NftablesEnforcer(table=table, lan_interfaces=["lan1", "lan2"], dns_port=5353)
    with lab.gw.entered():
        enf.start(make_policy())
    return enf


def udp_roundtrip(ns: netns.Netns, host: str, port: int) -> str:
    s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.connect((host, port))
        s.send(b"quic?")
        return "answered" if s.recv(100) == b"quic?" else "garbled"
    except (TimeoutError, socket.timeout):
        return "timeout"
    except OSError as exc:  # an ICMP reject: refused, or admin-prohibited (host unreachable)
        return "rejected" if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH) else str(exc)
    finally:
        s.close()


@pytest.mark.netns
def test_blocked_segment_gets_resets_to_learned_addresses_and_the_other_segment_does_not(
        lab: GatewayLab) -> None:
    enf = started(lab)
    with lab.gw.entered():
        enf.learn("twitter", [TW4, TW6], 300)
        enf.apply(make_state(datetime.now(timezone.utc),
                             {"twitter": datetime.now(timezone.utc) + timedelta(minutes=5)}))
    assert tcp_connect(lab.c1, TW4, 443) == "reset"
    assert tcp_connect(lab.c1, TW6, 443) == "reset"
    assert tcp_connect(lab.c1, OTHER4, 443) == "open"
    assert tcp_connect(lab.c2, TW4, 443) == "open"
    assert tcp_connect(lab.c2, TW6, 443) == "open"
    with lab.gw.entered():
        counters = enf.counters()
    assert counters[(1, "twitter")]["rejected_packets"] >= 2
    assert (2, "twitter") not in counters


@pytest.mark.netns
def test_quic_dot_and_doh_are_rejected_for_blocked_segments_only(lab: GatewayLab) -> None:
    enf = started(lab)
    with lab.gw.entered():
        enf.learn(DOH, [DOH4], 300)
        enf.apply(make_state(datetime.now(timezone.utc),
                             {"tiktok": datetime.now(timezone.utc) + timedelta(minutes=5)}))
    assert udp_roundtrip(lab.c1, OTHER4, 443) == "rejected"
    assert tcp_connect(lab.c1, OTHER4, 853) == "reset"
    assert tcp_connect(lab.c1, DOH4, 443) == "reset"
    assert udp_roundtrip(lab.c2, OTHER4, 443) == "answered"
    assert tcp_connect(lab.c2, OTHER4, 853) == "open"
    assert tcp_connect(lab.c2, DOH4, 443) == "open"


@pytest.mark.netns
def test_element_timeout_releases_the_block_without_the_agent(lab: GatewayLab) -> None:
    enf = started(lab)
    now = datetime.now(timezone.utc)
    with lab.gw.entered():
        enf.learn("twitter", [TW4], 300)
        enf.apply(make_state(now, {"twitter": now + timedelta(seconds=1.5)}))
    assert tcp_connect(lab.c1, TW4, 443) == "reset"
    del enf  # the agent is gone; only the kernel's timeouts are left
    deadline = time.monotonic() + 5
    while tcp_connect(lab.c1, TW4, 443, timeout=0.5) != "open":
        assert time.monotonic() < deadline, "the block outlived its element timeout"
        time.sleep(0.2)


@pytest.mark.netns
def test_restart_rebuilds_the_table_with_no_duplicate_rules(lab: GatewayLab) -> None:
    for _ in range(3):
        enf = started(lab)
    listing = lab.gw.exec(["nft", "list", "table", "inet", "lesfocus"]).stdout
    assert listing.count("chain forward {") == 1
    assert listing.count("reject with tcp reset") == len(build_ruleset(SERVICES).render().split(
        "reject with tcp reset")) - 1
    assert lab.gw.exec(["nft", "list", "tables"]).stdout.count("lesfocus") == 1
    with lab.gw.entered():
        enf.stop()
    assert "lesfocus" not in lab.gw.exec(["nft", "list", "tables"]).stdout


@pytest.mark.netns
def test_refused_batch_raises_with_the_batch_in_the_error(lab: GatewayLab) -> None:
    enf = started(lab)
    with lab.gw.entered(), pytest.raises(EnforcerError) as info:
        enf.run("add element inet lesfocus no_such_set { 192.0.2.1 }\n")
    assert "no_such_set" in str(info.value) and "--- batch ---" in str(info.value)


@pytest.mark.netns
@pytest.mark.slow
def test_open_flow_is_cut_within_a_second_of_the_bell(lab: GatewayLab) -> None:
    enf = started(lab)
    with lab.gw.entered():
        enf.learn("twitter", [TW4], 300)
    sock = lab.c1.socket()
    sock.settimeout(5)
    sock.connect((TW4, 443))
    sock.sendall(b"before the bell\n")
    assert sock.recv(100) == b"before the bell\n"
    # The flow is idle at the bell: the cut must not wait for the client to send something.
    result: dict[str, float | str] = {}

    def watch() -> None:
        try:
            data = sock.recv(100)
            result["outcome"] = "closed" if data == b"" else "data"
        except ConnectionResetError:
            result["outcome"] = "reset"
        except (TimeoutError, socket.timeout):
            result["outcome"] = "timeout"
        result["at"] = time.monotonic()

    watcher = threading.Thread(target=watch)
    watcher.start()
    bell = time.monotonic()
    with lab.gw.entered():
        now = datetime.now(timezone.utc)
        enf.apply(make_state(now, {"twitter": now + timedelta(minutes=5)}))
    watcher.join(5)
    sock.close()
    assert result.get("outcome") == "reset"
    assert float(result["at"]) - bell < 1.0


# -- conntrack: which open flows are cut at the bell -------------------------------------------

CONNTRACK_OUTPUT = """\
ipv4     2 tcp      6 431999 ESTABLISHED src=10.81.1.10 dst=198.51.100.10 sport=40001 dport=443 \
src=198.51.100.10 dst=10.81.1.10 sport=443 dport=40001 [ASSURED] mark=0 use=1
ipv4     2 tcp      6 431999 ESTABLISHED src=10.81.2.10 dst=198.51.100.10 sport=40002 dport=443 \
src=198.51.100.10 dst=10.81.2.10 sport=443 dport=40002 [ASSURED] mark=0 use=1
ipv4     2 udp      17 29 src=10.81.1.10 dst=198.51.100.20 sport=5000 dport=53 \
src=198.51.100.20 dst=10.81.1.10 sport=53 dport=5000 mark=0 use=1
ipv6     10 tcp      6 120 SYN_SENT src=fd81:1::10 dst=2001:db8::10 sport=40003 dport=443 \
[UNREPLIED] src=2001:db8::10 dst=fd81:1::10 sport=443 dport=40003 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.
"""


def test_conntrack_output_is_parsed_and_only_segment_to_service_flows_are_selected() -> None:
    from agent.conntrack import Flow, parse_conntrack, select_flows
    flows = parse_conntrack(CONNTRACK_OUTPUT)
    assert len(flows) == 4
    assert flows[0] == Flow("tcp", "10.81.1.10", "198.51.100.10", 40001, 443, "ESTABLISHED")
    assert flows[2].state == "" and flows[2].dport == 53
    chosen = select_flows(flows, netns.SEG1_CIDRS, [TW4, TW6, "not an address"])
    assert [(f.src, f.sport) for f in chosen] == [("10.81.1.10", 40001), ("fd81:1::10", 40003)]


@pytest.mark.netns
def test_dns_redirect_lapses_when_the_agent_stops_renewing_it(lab: GatewayLab) -> None:
    from tests.support.netns import FakeDnsServer, dns_query
    resolver = FakeDnsServer(lab.inet, netns.INET_ADDR, {"example.org": ["192.0.2.80"]})
    lab.on_close(resolver.stop)
    enf = NftablesEnforcer(table="lesfocus", lan_interfaces=["lan1", "lan2"], dns_port=5353,
                           redirect_lease=1.5)
    now = datetime.now(timezone.utc)
    with lab.gw.entered():
        enf.start(make_policy())
        enf.apply(make_state(now, {"twitter": now + timedelta(minutes=5)}))

    def reaches_resolver() -> bool:
        before = len(resolver.queries)
        try:
            dns_query(lab.c1, netns.INET_ADDR, "example.org", timeout=0.5)
        except (OSError, Exception):  # redirected to a port where no responder listens
            pass
        return len(resolver.queries) > before

    # While renewed, queries of the blocked segment are redirected (here: to no responder).
    for _ in range(3):
        with lab.gw.entered():
            enf.keep_alive()
        assert not reaches_resolver()
        time.sleep(0.6)
    # The agent "dies": no renewal. Within the lease, DNS goes its usual way again...
    deadline = time.monotonic() + 5
    while not reaches_resolver():
        assert time.monotonic() < deadline, "the DNS redirect outlived its lease"
        time.sleep(0.3)
    # ...while the block itself stays in the kernel until its own end.
    assert "10.81.1.0/24" in lab.gw.exec(["nft", "list", "set", "inet", "lesfocus",
                                          "blocked4"]).stdout


# -- incremental applies on a real kernel ----------------------------------------------------

def kernel_elements(lab: GatewayLab, name: str) -> dict[str, dict]:
    """The elements of one set in gw's kernel: network text -> its JSON body (expires, counter)."""
    import json
    data = json.loads(lab.gw.exec(["nft", "-j", "list", "set", "inet", "lesfocus", name]).stdout)
    out = {}
    for item in data["nftables"]:
        for elem in (item.get("set") or {}).get("elem", []):
            body = elem["elem"]
            prefix = body["val"]["prefix"]
            out[f"{prefix['addr']}/{prefix['len']}"] = body
    return out


def recorded(enf: NftablesEnforcer) -> list[str]:
    """Every command the enforcer sends from now on (queries and batches), in order."""
    commands: list[str] = []
    query, run = enf.query, enf.run

    def record_query(command: str) -> dict:
        commands.append(command)
        return query(command)

    def record_run(batch: str) -> str:
        commands.append(batch)
        return run(batch)

    enf.query, enf.run = record_query, record_run  # type: ignore[method-assign]
    return commands


def clocked(lab: GatewayLab, clock: list[datetime]) -> NftablesEnforcer:
    enf = NftablesEnforcer(table="lesfocus", lan_interfaces=["lan1", "lan2"], dns_port=5353,
                           clock=lambda: clock[0], cut_on_apply=False)
    with lab.gw.entered():
        enf.start(make_policy(now=NOW))
    return enf


@pytest.mark.netns
def test_kernel_sets_hold_exactly_the_state_after_block_grant_and_revoke(lab: GatewayLab) -> None:
    clock = [NOW]
    enf = clocked(lab, clock)
    tw = f"{enf.ruleset.service_index['twitter']}"  # type: ignore[union-attr]
    tt = f"{enf.ruleset.service_index['tiktok']}"  # type: ignore[union-attr]
    seg1, seg2 = netns.SEG1_CIDRS, netns.SEG2_CIDRS
    end1, end2 = NOW + timedelta(minutes=50), NOW + timedelta(minutes=40)
    both = {"twitter": end1, "tiktok": end1}
    steps = [
        # (clock, segment 1's blocks, segment 2's blocks, expected v4/v6 networks per set)
        (NOW, both, {"twitter": end2, "tiktok": end2},
         {"src_tw": {1, 2}, "src_tt": {1, 2}, "blocked": {1, 2}}),
        (NOW + timedelta(minutes=3, seconds=0.5), {"tiktok": end1}, {"twitter": end2,
                                                                     "tiktok": end2},
         {"src_tw": {2}, "src_tt": {1, 2}, "blocked": {1, 2}}),  # a grant on segment 1
        (NOW + timedelta(minutes=7), both, {"twitter": end2, "tiktok": end2},
         {"src_tw": {1, 2}, "src_tt": {1, 2}, "blocked": {1, 2}}),  # its revocation
        (NOW + timedelta(minutes=8), both, {},
         {"src_tw": {1}, "src_tt": {1}, "blocked": {1}}),  # segment 2's lesson cut short
    ]
    commands = recorded(enf)
    for at, blocked1, blocked2, expected in steps:
        clock[0] = at
        with lab.gw.entered():
            enf.apply(make_state(at, blocked1, blocked2))
        for key, names in (("src_tw", (f"src4_{tw}", f"src6_{tw}")),
                           ("src_tt", (f"src4_{tt}", f"src6_{tt}")),
                           ("blocked", ("blocked4", "blocked6"))):
            for fam, name in enumerate(names):
                want = {(seg1, seg2)[i - 1][fam] for i in expected[key]}
                assert set(kernel_elements(lab, name)) == want, (at, name)
    # The revocation re-added segment 1's twitter element with the timeout to its own end.
    expires = kernel_elements(lab, f"src4_{tw}")[seg1[0]]["expires"]
    assert abs(expires - (end1 - steps[2][0]).total_seconds()) < 120
    assert not any("list table" in c or "addr" in c for c in commands)
    assert len([c for c in commands if not c.startswith("list")]) == len(steps)


@pytest.mark.netns
def test_counters_survive_their_element_being_replaced_and_deleted(lab: GatewayLab) -> None:
    clock = [NOW]
    enf = clocked(lab, clock)
    with lab.gw.entered():
        enf.learn("twitter", [TW4], 300)
        enf.apply(make_state(NOW, {"twitter": NOW + timedelta(minutes=50)},
                             {"twitter": NOW + timedelta(minutes=50)}))
    commands = recorded(enf)
    assert tcp_connect(lab.c1, TW4, 443) == "reset"
    with lab.gw.entered():
        first = enf.counters()[(1, "twitter")]["rejected_packets"]
    assert first >= 1
    # The lesson is extended: segment 1's element is deleted and added with the new end.
    clock[0] = NOW + timedelta(minutes=10)
    with lab.gw.entered():
        enf.apply(make_state(clock[0], {"twitter": NOW + timedelta(minutes=95)},
                             {"twitter": NOW + timedelta(minutes=50)}))
        assert enf.counters()[(1, "twitter")]["rejected_packets"] == first
    assert tcp_connect(lab.c1, TW4, 443) == "reset"
    with lab.gw.entered():
        second = enf.counters()[(1, "twitter")]["rejected_packets"]
        assert second > first
        # A grant deletes the element; its packets stay counted.
        clock[0] = NOW + timedelta(minutes=20)
        enf.apply(make_state(clock[0], {}, {"twitter": NOW + timedelta(minutes=50)}))
        assert enf.counters()[(1, "twitter")]["rejected_packets"] == second
    assert tcp_connect(lab.c1, TW4, 443) == "open"
    queries = [c for c in commands if c.startswith("list")]
    assert queries and all(c.startswith("list set inet lesfocus src") for c in queries)
    assert not any("list table" in c or "addr" in c for c in commands)


@pytest.mark.parametrize("networks, calls", [(2, 4), (8, 16), (9, 4), (1000, 4)])
def test_dns_flows_are_forgotten_in_a_bounded_number_of_conntrack_calls(
        monkeypatch: pytest.MonkeyPatch, networks: int, calls: int) -> None:
    import agent.conntrack as conntrack
    made: list[list[str]] = []
    monkeypatch.setattr(conntrack.shutil, "which", lambda name: "/usr/sbin/conntrack")
    monkeypatch.setattr(conntrack.subprocess, "run", lambda argv, **kw: made.append(argv))
    cidrs = [f"10.{160 + i // 256}.{i % 256}.0/24" for i in range(networks)]
    assert conntrack.forget_dns_flows(cidrs) == calls == len(made)
    assert all(argv[:2] == ["conntrack", "-D"] and "--orig-port-dst" in argv for argv in made)
    if networks <= conntrack.MAX_NETWORKS_ONE_BY_ONE:
        assert {argv[argv.index("-s") + 1] for argv in made} == {c.split("/")[0] for c in cidrs}
