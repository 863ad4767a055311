"""First-flight reassembly: its speed, its memory under a flood, real Chromium ClientHellos against
its bounds, and the observer's load with the widened capture filter. Figures only; run with
`make bench` (or `pytest tests/bench/bench_first_flight.py -s`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import tracemalloc
from datetime import datetime, timezone

import pytest

from agent.observers.firstflight import (FLIGHT_SECONDS, MAX_FLIGHT_BYTES, MAX_SEGMENTS,
                                         FirstFlightReassembler)
from agent.observers.parsers import NAME, client_hello_progress
from tests.support.clienthello import scapy_client_hello

ROUNDS = 3
SOL_PACKET, PACKET_STATISTICS = 263, 6


def spread(values: list[float]) -> str:
    return (f"min {min(values):,.0f} / median {statistics.median(values):,.0f} / "
            f"max {max(values):,.0f}")


def test_bench_reassembler_segments_per_second() -> None:
    hello = scapy_client_hello("www.instagram.com", before=480)  # ~2 KB, name in segment 2
    shapes = {"2 segments (Chromium)": [0, 1448], "1+5+rest (evasion)": [0, 1, 6]}
    for label, cuts in shapes.items():
        bounds = cuts + [len(hello)]
        pieces = [(a, hello[a:b]) for a, b in zip(bounds, bounds[1:])]
        rates = []
        for _ in range(ROUNDS):
            r = FirstFlightReassembler()
            n = 5000
            start = time.perf_counter()
            for i in range(n):
                key = ("10.81.1.10", "198.51.100.12", i, 443)
                r.syn(key, i * 4096, 0.0)
                for off, data in pieces:
                    r.segment(key, i * 4096 + 1 + off, 1, data, 0.0)
            rates.append(n * (len(pieces) + 1) / (time.perf_counter() - start))
        print(f"\n  reassembler, {label}: packets/s {spread(rates)} "
              f"({ROUNDS} rounds of 5,000 flows)")


def test_bench_flood_of_half_started_flows() -> None:
    hello = scapy_client_hello("www.instagram.com", before=480)
    r = FirstFlightReassembler()
    tracemalloc.start()
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        key = (f"10.{i % 250}.{i // 250 % 250}.1", "198.51.100.12", 1024 + i % 60000, 443)
        r.segment(key, i, 1, hello[:1448], 0.0)
        r.segment(key, i + 9000, 1, b"y" * 1400, 0.0)
    elapsed = time.perf_counter() - start
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\n  flood of {n:,} half-started flows (1,448 + 1,400 bytes each, never completed): "
          f"{len(r):,} followed at the end, {r.held / 2**20:.1f} MiB payload held, "
          f"traced memory {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB), "
          f"{2 * n / elapsed:,.0f} segments/s")


def test_bench_real_chromium_client_hellos_against_the_bounds() -> None:
    """Chromium's own ClientHellos (post-quantum key share on, as shipped) on loopback."""
    if not shutil.which("chromium"):
        pytest.skip("needs Debian's chromium")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    seen: list[tuple[int, int, str]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, socket.timeout):
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while client_hello_progress(data)[0] == "need-more" or \
                            len(data) < 5 + int.from_bytes(data[3:5], "big"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                seen.append((len(data), data.find(b"www.instagram.com"),
                             client_hello_progress(data)[0]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(prefix="lesfocus-bench-chromium-")
    try:
        for _ in range(3):
            proc = subprocess.Popen(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--host-resolver-rules=MAP www.instagram.com 127.0.0.1:{port}",
                 "https://www.instagram.com/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(5)
            proc.terminate()
            proc.wait(10)
    finally:
        stop.set()
        thread.join(2)
        srv.close()
        shutil.rmtree(profile, ignore_errors=True)
    sizes = [s for s, _, _ in seen]
    late = sum(1 for _, at, _ in seen if at >= 1448)
    print(f"\n  Chromium ClientHellos: {len(seen)}, {min(sizes)}-{max(sizes)} bytes (bound "
          f"{MAX_FLIGHT_BYTES}), server name after byte 1,448 in {late} of {len(seen)}, "
          f"read by client_hello_progress: {sum(st == NAME for _, _, st in seen)} of {len(seen)}")
    assert seen


def _socket_stats(observer) -> dict[int, tuple[int, int]]:
    """(frames, drops) per socket role since the last call (reading PACKET_STATISTICS resets
    the kernel's counts): 0 = starts, 1 = rest."""
    out = {0: (0, 0), 1: (0, 0)}
    for role, sock in observer._sockets:
        frames, drops = struct.unpack("II", sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                                8))
        out[role] = (out[role][0] + frames, out[role][1] + drops)
    return out


@pytest.mark.netns
@pytest.mark.parametrize("offloads", ["on", "off"])
def test_bench_observer_load_with_the_first_flight_filter(offloads: str) -> None:
    """An upload to tcp/443 from a segment in a lesson vs one without: packets the observer
    handles, its CPU, kernel drops on its sockets, and the upload's rate."""
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        pytest.skip("needs root and iperf3")
    from tests.support import netns
    from tests.support.netns import GatewayLab

    with GatewayLab() as lab:
        if offloads == "off":  # MSS-sized segments, as on a real link
            for ns, dev in ((lab.c1, "eth0"), (lab.c2, "eth0"), (lab.gw, "lan1"),
                            (lab.gw, "lan2"), (lab.gw, "wan"), (lab.inet, "eth0")):
                ns.exec(["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"])
        lab.inet.popen(["iperf3", "-s", "-B", netns.INET_ADDR, "-p", "443"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        state = netns.twitter_lesson_on_lokaal_1(datetime.now(timezone.utc))
        enforcer, observer = netns.start_observed_gateway(lab, lambda: state)
        try:
            rows: dict[str, dict[str, list[float]]] = {}
            for _ in range(ROUNDS):
                for label, client in (("segment in a lesson", lab.c1),
                                      ("segment without a block", lab.c2)):
                    row = rows.setdefault(label, {"mbit": [], "pps": [], "cpu": [],
                                                  "starts": [], "rest": [],
                                                  "starts dropped": [], "rest dropped": []})
                    before_pkts, before_cpu = observer.stats["packets"], time.process_time()
                    _socket_stats(observer)
                    start = time.monotonic()
                    out = client.exec(["iperf3", "-c", netns.INET_ADDR, "-p", "443", "-t", "3",
                                       "-J"], timeout=40).stdout
                    elapsed = time.monotonic() - start
                    bits = json.loads(out)["end"]["sum_received"]["bits_per_second"]
                    row["mbit"].append(bits / 1e6)
                    row["pps"].append((observer.stats["packets"] - before_pkts) / elapsed)
                    row["cpu"].append(100 * (time.process_time() - before_cpu) / elapsed)
                    stats = _socket_stats(observer)
                    for role, name in ((0, "starts"), (1, "rest")):
                        row[name].append(stats[role][0] / elapsed)
                        row[name + " dropped"].append(100 * stats[role][1]
                                                      / max(1, stats[role][0]))
            print(f"\n  iperf3 upload to tcp/443 through gw (veth offloads {offloads}), {ROUNDS} "
                  f"alternating rounds of 3 s:")
            for label, row in rows.items():
                print(f"    {label:24} {spread(row['mbit'])} Mbit/s; observer handled "
                      f"{spread(row['pps'])} packets/s at CPU % {spread(row['cpu'])}; "
                      f"starts sockets {spread(row['starts'])} frames/s, % dropped "
                      f"{spread(row['starts dropped'])}; rest sockets {spread(row['rest'])} "
                      f"frames/s, % dropped {spread(row['rest dropped'])}")
            print(f"    bounds: {MAX_FLIGHT_BYTES} bytes, {MAX_SEGMENTS} segments, "
                  f"{FLIGHT_SECONDS} s per flight; refused flights: {observer.stats['refused']}")
        finally:
            observer.stop()
            with lab.gw.entered():
                enforcer.stop()
