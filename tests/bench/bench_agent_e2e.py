"""Benchmark, end to end through the netns gateway (SPEC §5): grant -> first allowed connection
(p95 <= 1 s), bell -> blocked including a flow opened in the break (<= 1 s), and the agent's CPU
and memory at idle. Same lab as tests/e2e (real server in `inet`, lesfocus-agent with nftables in
`gw`). Run with `make bench` or `pytest -s -o addopts= tests/bench/bench_agent_e2e.py`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.realparts import require
from tests.support.fakenet import resolve
from tests.support.world import SCHOOL_DNS, World, utcnow

GRANTS = 12
BELLS = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    w = World(tmp_path_factory.mktemp("bench-e2e")).open()
    try:
        yield w
    finally:
        w.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def test_grant_to_first_allowed_connection(world: World) -> None:
    # Room 1.02 (client c2), so this long lesson leaves room 1.01 free for the bell benchmark.
    start, end = world.lesson(starts_in=1, length=180, room="1.02")
    world.sleep_until(start + timedelta(seconds=1))
    token = world.server.login()
    assert world.visit("tiktok.com", n=2).startswith("dns:NXDOMAIN")
    latencies, api, accepted, applied = [], [], [], []
    for _ in range(GRANTS):
        mark = len(world.log_text())
        wall0, t0 = time.time(), time.monotonic()
        status, body = world.server.api("POST", "/api/v1/exceptions", {
            "scope": "room", "room": "1.02", "services": ["tiktok"], "minutes": 2}, token)
        api.append(time.monotonic() - t0)
        assert status == 201, body
        world.wait("tiktok to open",
                   lambda: world.visit("tiktok.com", n=2) == "ok:hello tiktok.com", 10, every=0.01)
        latencies.append(time.monotonic() - t0)
        new_lines = world.log_text()[mark:].splitlines()
        accepted.append(_log_time(new_lines, " accepted (issued") - wall0)
        applied.append(_log_time(new_lines, ": unblocked tiktok") - wall0)
        status, _ = world.server.api("DELETE", f"/api/v1/exceptions/{body['id']}", None, token)
        assert status in (200, 204)
        world.wait("tiktok to close", lambda: world.visit("tiktok.com", n=2).startswith("dns:"),
                   10, every=0.01)
    print(f"\ngrant (API call) -> first allowed HTTPS connection through gw, {GRANTS} grants: "
          f"median {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
          f"(target p95 <= 1000 ms)")
    print(f"  of which: API answer median {statistics.median(api) * 1000:.0f} ms; agent accepted "
          f"the new policy at median {statistics.median(accepted) * 1000:.0f} ms; kernel and "
          f"responder updated at median {statistics.median(applied) * 1000:.0f} ms after the call")


def _log_time(lines: list[str], marker: str) -> float:
    """The wall-clock time (epoch seconds) of the first agent log line containing `marker`."""
    from datetime import datetime
    for line in lines:
        if marker in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.astimezone().timestamp()
    return float("nan")


def test_bell_to_blocked_including_open_flows(world: World) -> None:
    dns_delays, flow_delays = [], []
    for _ in range(BELLS):
        start, end = world.lesson(starts_in=3, length=4)
        cached = resolve(world.client(1), SCHOOL_DNS, "tiktok.com")
        flow = world.open_flow(cached, "tiktok.com")
        assert flow.get() == "ok:hello tiktok.com"
        world.sleep_until(start - timedelta(milliseconds=200))
        dns_at = flow_at = None
        try:
            while (dns_at is None or flow_at is None) and utcnow() < end:
                if flow_at is None and not flow.get().startswith("ok:"):
                    flow_at = utcnow()
                if dns_at is None and resolve(world.client(1), SCHOOL_DNS, "tiktok.com",
                                              timeout=0.5) == "NXDOMAIN":
                    dns_at = utcnow()
                time.sleep(0.005)
        finally:
            flow.close()
        assert dns_at is not None and flow_at is not None, "not blocked during the lesson"
        dns_delays.append((dns_at - start).total_seconds())
        flow_delays.append((flow_at - start).total_seconds())
        world.sleep_until(end + timedelta(seconds=1))
    print(f"\nbell -> gateway DNS answers NXDOMAIN, {BELLS} bells: "
          f"{', '.join(f'{d * 1000:.0f}' for d in dns_delays)} ms; "
          f"bell -> flow opened in the break fails: "
          f"{', '.join(f'{d * 1000:.0f}' for d in flow_delays)} ms (target <= 1000 ms)")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_agent_cpu_and_memory_at_idle(world: World) -> None:
    assert world.agent is not None
    pid = world.agent.pid
    time.sleep(2)
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(20)
    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
    print(f"\nagent at idle (observers on lan1+lan2, responder, long poll; 20 s): "
          f"CPU {(cpu1 - cpu0) / (t1 - t0) * 100:.2f} % of one core, RSS {_rss_mib(pid):.1f} MiB")
