"""The nftables enforcer's apply and counters() on a real kernel, by number of segments.

In a network namespace of its own: the shipped service catalog (16 services), 15 / 60 / 240 /
1,000 segments (a /24 and a /64 each; two thirds blocked for every service until various ends),
20,000 learned addresses spread over the services. Timed over several rounds: (a) the first full
apply after start(), (b) an apply of a one-segment change (a grant: the segment's services shrink
to all but one, or its revocation), (c) an apply of an unchanged state, (d) counters().
Run with `make bench` or `pytest -s tests/bench/bench_enforcer_apply.py`; it prints, it does not
assert speed. Flow cuts (conntrack) are off: this measures the enforcer's own kernel work.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.enforcers.nftables import NftablesEnforcer
from agent.state import BlockState, Policy, PolicySegment, SegmentState, Service
from tests.support import netns

CATALOG = Path(__file__).resolve().parents[2] / "server" / "data" / "social-services.json"
SIZES = (15, 60, 240, 1000)
LEARNED = 20_000
ROUNDS = int(os.environ.get("LESFOCUS_BENCH_ROUNDS", "10"))
FULL_ROUNDS = max(3, ROUNDS // 2)
TARGET = "agent apply ≤ 150 ms at 240 segments with 20k learned addresses"
# A fixed instant: nothing here depends on the date; the enforcer's clock runs from it.
T0 = datetime(2026, 11, 23, 8, 30, tzinfo=timezone.utc)


def catalog() -> dict[str, Service]:
    """The shipped services (server/data/social-services.json)."""
    data = json.loads(CATALOG.read_text())
    return {s["id"]: Service(s["id"], s["name"], tuple(s["domains"])) for s in data["services"]}


def segments(count: int) -> list[tuple[int, tuple[str, str]]]:
    """(id, (a /24, a /64)) for `count` segments."""
    return [(i + 1, (f"10.{i // 256}.{i % 256}.0/24", f"2001:db8:{i:x}::/64"))
            for i in range(count)]


def block_state(segs: list[tuple[int, tuple[str, str]]], services: list[str], at: datetime,
                grant: int | None = None) -> BlockState:
    """Two segments of three blocked for every service, until ends 30 to 65 minutes on; the
    segment `grant` has all services but the first."""
    out = []
    for seg_id, cidrs in segs:
        blocked: dict[str, datetime] = {}
        if seg_id % 3:
            until = T0 + timedelta(minutes=30 + 5 * (seg_id % 8))
            blocked = {sid: until for sid in services
                       if not (seg_id == grant and sid == services[0])}
        out.append(SegmentState(seg_id, f"lokaal {seg_id}", cidrs, blocked))
    return BlockState(at, tuple(out), None)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered):7.1f}  p95 {p95:7.1f}  min {ordered[0]:7.1f}  "
            f"spread {ordered[-1] - ordered[0]:6.1f} ms  (n={len(ordered)})")


def learn_all(enforcer: NftablesEnforcer, services: list[str]) -> None:
    """LEARNED addresses, two thirds IPv4, dealt round-robin over the services."""
    base4 = int(ipaddress.ip_address("100.64.0.0"))
    base6 = int(ipaddress.ip_address("2001:db8:ffff::"))
    per: dict[str, list[str]] = {sid: [] for sid in services}
    for k in range(LEARNED):
        addr = ipaddress.ip_address(base4 + k) if k % 3 else ipaddress.ip_address(base6 + k)
        per[services[k % len(services)]].append(str(addr))
    for sid, addresses in per.items():
        enforcer.learn(sid, addresses, 3600)


def bench_size(count: int, services: dict[str, Service]) -> dict[str, list[float]]:
    ids = sorted(services)
    segs = segments(count)
    policy = Policy("bench", "gw-bench", T0, T0 + timedelta(days=7), "Europe/Amsterdam", services,
                    tuple(PolicySegment(i, f"lokaal {i}", cidrs, ()) for i, cidrs in segs))
    started = time.monotonic()

    def clock() -> datetime:
        return T0 + timedelta(seconds=time.monotonic() - started)

    enforcer = NftablesEnforcer(table="lfbench", lan_interfaces=["lan1"], dns_port=5353,
                                clock=clock, cut_on_apply=False)
    granted = next(i for i, _ in segs if i % 3)
    results: dict[str, list[float]] = {"full": [], "one": [], "same": [], "counters": []}
    for _ in range(FULL_ROUNDS):
        enforcer.start(policy)
        learn_all(enforcer, ids)
        state = block_state(segs, ids, clock())
        results["full"].append(timed(lambda: enforcer.apply(state)))
    for r in range(ROUNDS):
        # Alternate a grant and its revocation: each is a change of one segment.
        changed = block_state(segs, ids, clock(), grant=granted if r % 2 == 0 else None)
        results["one"].append(timed(lambda: enforcer.apply(changed)))
    for _ in range(ROUNDS):
        same = block_state(segs, ids, clock())
        results["same"].append(timed(lambda: enforcer.apply(same)))
    for _ in range(ROUNDS):
        results["counters"].append(timed(enforcer.counters))
    enforcer.stop()
    return results


@pytest.mark.netns
def test_bench_enforcer_apply_by_segments() -> None:
    if not netns.available():
        pytest.skip("needs root with ip(8) and nft(8)")
    services = catalog()
    ns = netns.Netns(f"lfbench{secrets.token_hex(3)}")
    ns.create()
    try:
        figures = {}
        with ns.entered():
            for count in SIZES:
                figures[count] = bench_size(count, services)
    finally:
        ns.delete()
    labels = {"full": "(a) first full apply", "one": "(b) one-segment change",
              "same": "(c) unchanged state", "counters": "(d) counters()"}
    print(f"\n  NftablesEnforcer, {len(services)} services, {LEARNED:,} learned addresses, "
          f"2/3 of the segments blocked for every service")
    for count, results in figures.items():
        print(f"  {count:>5} segments")
        for key, label in labels.items():
            mark = f"   [target: {TARGET}]" if count == 240 and key != "counters" else ""
            print(f"    {label:<24} {summary(results[key])}{mark}")
