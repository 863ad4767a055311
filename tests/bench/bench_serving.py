"""Serving (SPEC §5, "≤ 20 KiB per waiting agent"; docs/architecture.md, "Serving").

Starts `lesfocus serve` as users run it (gevent worker, tests/support/served.py) on a SQLite
instance with WAITING enrolled gateways, fetches each gateway's policy once (which fills the
policy cache: memory per gateway, printed apart), prints the worker's CPU per re-poll that ends
in 304 (one per gateway, its policy cached), then holds one long poll per gateway open and
prints the worker's resident memory with 0 and with WAITING polls waiting, the KiB per waiting
agent, the latency of fresh requests meanwhile, and how long a change takes to wake them all.
The load generator (this process) shares the machine's cores; its CPU is printed too.
Run: `.venv/bin/python -m pytest -o addopts="" -p no:cacheprovider -s tests/bench/bench_serving.py`
(LESFOCUS_BENCH_WAITING=N for another count).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.schools import seed_school
from tests.support.served import ServedApp
from tests.support.waiting_agents import (add_enrolled_gateways, add_lesson_in_shared_room,
                                          agent_token, current_versions, open_long_polls,
                                          raise_open_file_limit, read_status)

WAITING = int(os.environ.get("LESFOCUS_BENCH_WAITING", "2000"))
AUDIENCE = "http://127.0.0.1"
WAIT_SECONDS = 60


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


def _latencies(url: str, count: int = 20) -> list[float]:
    result = []
    for _ in range(count):
        began = time.monotonic()
        with urllib.request.urlopen(url + "/api/v1/keys", timeout=60) as answer:
            answer.read()
        result.append((time.monotonic() - began) * 1000)
    return result


def _figures(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {statistics.median(values):.1f} ms, max {values[-1]:.1f} ms"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (/proc/PID/stat, proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _re_polls(url: str, keys: dict[str, Any], versions: dict[str, str]) -> int:
    """One re-poll per gateway that ends in 304 at once (wait=0, its version known), as an
    agent's next poll after the last one ended; tokens are made first (the agents' cost)."""
    requests = [urllib.request.Request(
        f"{url}/api/v1/gateways/self/policy?wait=0&format=2", headers={
            "Authorization": f"Bearer {agent_token(gateway_id, key, AUDIENCE)}",
            "If-None-Match": f'"{versions[gateway_id]}"'}) for gateway_id, key in keys.items()]
    for request in requests:
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                raise AssertionError(f"a re-poll got {answer.status}, not 304")
        except urllib.error.HTTPError as refused:  # urllib raises for a 304 as well
            refused.close()
            assert refused.code == 304, refused.code
    return len(requests)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_memory_per_waiting_agent(tmp_path: Path) -> None:
    """Print the served worker's RSS with 0 and WAITING waiting long polls, and KiB per agent."""
    from flask_migrate import upgrade

    from server.app import create_app
    from server.extensions import db

    raise_open_file_limit(WAITING + 1000)
    settings = {"INSTANCE_PATH": str(tmp_path / "instance"),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'bench.sqlite3'}",
                "SECRET_KEY": "bench-secret", "PUBLIC_URL": AUDIENCE}
    app = create_app(settings)
    with app.app_context():
        upgrade()
        seed_school("test", "Benchcollege")
        db.session.commit()
    keys = add_enrolled_gateways(app, WAITING)
    served = ServedApp({f"LESFOCUS_{k}": v for k, v in settings.items()},
                       tmp_path / "serve.log", connections=WAITING + 500).start()
    polls = {}
    try:
        worker = _worker_pid(served.proc.pid)  # type: ignore[union-attr]
        started_kib = _rss_kib(worker)
        began = time.monotonic()
        versions = current_versions(served.url, keys, AUDIENCE)
        fetch_s = time.monotonic() - began
        cached_kib = _rss_kib(worker)
        alone = _latencies(served.url)
        rounds = []
        for _ in range(3):
            worker_cpu = _cpu_seconds(worker)
            count = _re_polls(served.url, keys, versions)
            rounds.append((_cpu_seconds(worker) - worker_cpu) / count * 1000)
        print(f"server CPU per re-poll ending in 304 (key check, policy cache, answer), "
              f"{WAITING} one after another, three rounds: "
              f"{', '.join(f'{ms:.2f}' for ms in rounds)} ms (worker CPU from /proc)",
              flush=True)
        idle_kib = _rss_kib(worker)
        sockets_before = _open_sockets(worker)
        print(f"\n{WAITING} gateways; worker RSS {started_kib} KiB after start, {cached_kib} KiB "
              f"after one policy fetch each ({fetch_s:.1f} s, 8 at a time; the policy cache: "
              f"{(cached_kib - started_kib) / WAITING:.1f} KiB per gateway)", flush=True)

        cpu_before = _own_cpu()
        began = time.monotonic()
        polls = open_long_polls(served.port, keys, versions, AUDIENCE, wait=WAIT_SECONDS)
        held = 0
        while time.monotonic() - began < 30:
            held = _open_sockets(worker) - sockets_before
            if held >= WAITING:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # every request read and parked on the change feed
        open_s = time.monotonic() - began
        waiting_kib = _rss_kib(worker)
        during = _latencies(served.url)
        per_agent = (waiting_kib - idle_kib) / WAITING
        print(f"worker RSS with 0 waiting: {idle_kib} KiB; with {WAITING} waiting: "
              f"{waiting_kib} KiB -> {per_agent:.1f} KiB per waiting agent (target <= 20); "
              f"{held} more sockets in the worker after {open_s:.1f} s; this client's CPU "
              f"{_own_cpu() - cpu_before:.1f} s",
              flush=True)
        print(f"GET /api/v1/keys alone: {_figures(alone)}; with {WAITING} waiting: "
              f"{_figures(during)}", flush=True)

        changed = time.monotonic()
        add_lesson_in_shared_room(app)
        statuses: dict[int, int] = {}
        for sock in polls.values():
            status = read_status(sock, timeout=WAIT_SECONDS + 30)
            statuses[status] = statuses.get(status, 0) + 1
        print(f"a lesson written by another process woke all {WAITING} in "
              f"{time.monotonic() - changed:.1f} s (statuses {statuses}; 304: its wait ended "
              f"first). Worst case: all gateways in one school, so each woken poll compiles "
              f"and signs its gateway's policy again; load average {os.getloadavg()[0]:.1f}",
              flush=True)
    finally:
        for sock in polls.values():
            sock.close()
        served.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
