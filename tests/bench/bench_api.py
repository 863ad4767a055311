"""API under load (SPEC §5): lesson-status req/s and p99, alone and while 500 agents long-poll.

The server runs as `lesfocus serve` would (gunicorn gthread) in a subprocess on 127.0.0.1 with an
ephemeral port. Load comes from `wrk` (Debian package) when present, else from an asyncio client
in this process. Long polls come from an asyncio client holding one connection per agent.
Run: `make bench`, or
`.venv/bin/python -m pytest -o addopts="" -p no:cacheprovider -s tests/bench/bench_api.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AGENTS = int(os.environ.get("LESFOCUS_BENCH_AGENTS", "500"))
# A school board (SPEC §5's compile benchmark has 50 schools): the agents spread over 50 schools.
SCHOOLS = int(os.environ.get("LESFOCUS_BENCH_SCHOOLS", "50"))
SERVER_THREADS = AGENTS + 64
LOAD_SECONDS = 10
LOAD_CONNECTIONS = int(os.environ.get("LESFOCUS_BENCH_CONNECTIONS", "8"))
LONG_POLL_WAIT = 60
AUDIENCE = "http://127.0.0.1"


# --- the server process ---------------------------------------------------------------------------

def serve(instance: str, database_url: str, threads: int) -> None:
    """Run the app as `lesfocus serve` does on an ephemeral port; print the port for the parent."""
    from server.app import create_app
    from server.serving import run_server

    def factory() -> Any:
        return create_app({"INSTANCE_PATH": instance, "DATABASE_URL": database_url,
                           "PUBLIC_URL": AUDIENCE})

    run_server(factory, "127.0.0.1", 0, threads,
               on_ready=lambda port: print(f"PORT {port}", flush=True))


def _build_world(instance: Path, database_url: str, agents: int) -> dict[str, Any]:
    """SCHOOLS schools with `agents` enrolled gateways (one segment each), lessons running now."""
    from flask_migrate import upgrade
    from sqlalchemy import select

    from server.app import create_app
    from server.extensions import db
    from server.models import Gateway, Lesson, Person, Room, School, Segment, SegmentCidr
    from server.passwords import hash_password
    from server.seed import seed_reminders, seed_services
    from server.tokens import public_key_pem

    app = create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": database_url,
                      "PUBLIC_URL": AUDIENCE})
    keys: dict[str, Ed25519PrivateKey] = {}
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with app.app_context():
        upgrade()
        seed_services()
        schools = [School(slug=f"bench{n}", name=f"Benchcollege {n}", aliases=[])
                   for n in range(SCHOOLS)]
        db.session.add_all(schools)
        db.session.flush()
        for school in schools:
            seed_reminders(school)
        leader = Person(school_id=schools[0].id, username="leader", roles=["leader"],
                        password_hash=hash_password("bench-password"))
        db.session.add(leader)
        for index in range(agents):
            school = schools[index % SCHOOLS]
            key = Ed25519PrivateKey.generate()
            gateway = Gateway(school_id=school.id, name=f"gw{index:04d}",
                              public_key_pem=public_key_pem(key.public_key()), enrolled_at=now)
            db.session.add(gateway)
            db.session.flush()
            keys[gateway.id] = key
            room = Room(school_id=school.id, code=f"R{index:04d}")
            # Gateway 0 serves loopback, so the load generator's requests hit a real segment.
            cidr = "127.0.0.0/8" if index == 0 else f"10.{index // 250}.{index % 250}.0/24"
            db.session.add(Segment(school_id=school.id, gateway_id=gateway.id,
                                   name=f"seg{index}", cidrs=[SegmentCidr(cidr=cidr)],
                                   rooms=[room]))
            # A timetable of a school day per room: eight 50-minute lessons around now.
            for period in range(-4, 4):
                start = now + timedelta(minutes=60 * period - 10)
                db.session.add(Lesson(school_id=school.id, start=start,
                                      end=start + timedelta(minutes=50), subject="bench",
                                      source="bench", source_id=f"{index}-{period}",
                                      rooms=[room]))
        db.session.commit()
        lesson_now = db.session.scalar(
            select(Lesson.id).join(Lesson.rooms).where(Room.code == "R0000",
                                                       Lesson.start <= now, Lesson.end > now))
    return {"keys": keys, "lesson_now": lesson_now}


def _agent_token(gateway_id: str, key: Ed25519PrivateKey) -> str:
    issued = int(time.time())
    return jwt.encode({"sub": gateway_id, "aud": AUDIENCE, "iat": issued, "exp": issued + 300,
                       "jti": uuid.uuid4().hex}, key, algorithm="EdDSA")


# --- HTTP clients -------------------------------------------------------------------------------

async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                   path: str, headers: dict[str, str] | None = None,
                   body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    answer_headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    length = int(answer_headers.get("content-length", "0"))
    data = await reader.readexactly(length) if length else b""
    return status, answer_headers, data


async def _python_load(port: int, seconds: float, connections: int) -> tuple[int, list[float]]:
    """Keep-alive GETs of lesson-status from `connections` loops; (requests, latencies in s)."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            began = time.perf_counter()
            status, _, _ = await _request(reader, writer, "GET", "/api/v1/lesson-status")
            latencies.append(time.perf_counter() - began)
            assert status == 200
        writer.close()

    await asyncio.gather(*(loop() for _ in range(connections)))
    return len(latencies), latencies


def _wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk against lesson-status; req/s and latency percentiles in ms."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}/api/v1/lesson-status"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    result = {"req_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore
    for pct in ("50", "90", "99"):
        result[f"p{pct}"] = ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))  # type: ignore
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    sockets = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = sockets.group(1) if sockets else "none"  # type: ignore[assignment]
    return result


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children: gunicorn's worker does the
    serving (from /proc, see proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _measure_lesson_status(port: int, label: str, pid: int) -> dict[str, float]:
    """Load lesson-status and print req/s, latency and the server's CPU time per request.

    CPU per request is the figure that survives a shared machine: req/s and p99 also measure
    whatever else the two cores are doing (print the load average next to them).
    """
    cpu_before = _cpu_seconds(pid)
    if shutil.which("wrk"):
        figures = _wrk(port, LOAD_SECONDS, LOAD_CONNECTIONS)
        tool = "wrk"
    else:
        count, latencies = asyncio.run(_python_load(port, LOAD_SECONDS, LOAD_CONNECTIONS))
        latencies.sort()
        figures = {"req_s": count / LOAD_SECONDS,
                   "p50": statistics.median(latencies) * 1000,
                   "p90": latencies[int(len(latencies) * 0.90)] * 1000,
                   "p99": latencies[int(len(latencies) * 0.99)] * 1000}
        tool = "asyncio client"
    cpu = _cpu_seconds(pid) - cpu_before
    requests = figures["req_s"] * LOAD_SECONDS
    figures["cpu_ms_per_req"] = cpu / requests * 1000 if requests else float("nan")
    print(f"lesson-status {label} ({tool}, {LOAD_CONNECTIONS} connections, {LOAD_SECONDS} s): "
          f"{figures['req_s']:.0f} req/s, p50 {figures['p50']:.1f} ms, "
          f"p90 {figures['p90']:.1f} ms, p99 {figures['p99']:.1f} ms"
          + (f", non-2xx {figures.get('non_2xx', 0):.0f}, socket errors "
             f"{figures.get('socket_errors')}" if tool == "wrk" else "")
          + f"; server CPU {figures['cpu_ms_per_req']:.2f} ms/request (= "
          f"{1000 / figures['cpu_ms_per_req']:.0f} req/s per core); load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    return figures


# --- the benchmark --------------------------------------------------------------------------------

async def _long_polls(port: int, keys: dict[str, Ed25519PrivateKey], lesson_id: int,
                      during: Any) -> dict[str, Any]:
    """Hold long polls (in steps up to one per agent), run `during(n)` while n wait; then grant
    an exception and time the wake-up of the agent it concerns."""
    versions: dict[str, str] = {}
    semaphore = asyncio.Semaphore(8)

    async def first_fetch(gateway_id: str) -> None:
        async with semaphore:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, headers, _ = await _request(
                reader, writer, "GET", "/api/v1/gateways/self/policy",
                {"Authorization": f"Bearer {_agent_token(gateway_id, keys[gateway_id])}"})
            assert status == 200, status
            versions[gateway_id] = headers["etag"].strip('"')
            writer.close()

    began = time.monotonic()
    await asyncio.gather(*(first_fetch(gid) for gid in keys))
    print(f"first policy fetch of {len(keys)} gateways: {time.monotonic() - began:.1f} s "
          f"({(time.monotonic() - began) / len(keys) * 1000:.1f} ms each, 8 at a time)",
          flush=True)

    outcomes: dict[str, tuple[int, float]] = {}
    waiting = 0

    async def poll(gateway_id: str) -> None:
        nonlocal waiting
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        waiting += 1
        status, _, _ = await _request(
            reader, writer, "GET", f"/api/v1/gateways/self/policy?wait={LONG_POLL_WAIT}",
            {"Authorization": f"Bearer {_agent_token(gateway_id, keys[gateway_id])}",
             "If-None-Match": f'"{versions[gateway_id]}"'})
        outcomes[gateway_id] = (status, time.monotonic())
        writer.close()

    # Add waiting agents in steps and measure lesson-status at each step: waitress's select
    # loop visits every open connection on each turn, so its cost grows with the waiters.
    gateway_ids = list(keys)
    steps = sorted({n for n in (AGENTS // 5, AGENTS // 2, AGENTS) if n > 0})
    polls: list[asyncio.Task[None]] = []
    figures: dict[int, dict[str, float]] = {}
    for target in steps:
        polls += [asyncio.create_task(poll(gid)) for gid in gateway_ids[len(polls):target]]
        while waiting < target:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the server has read every request and is waiting
        figures[target] = await asyncio.to_thread(during, target)
    early = len(outcomes)

    # Grant an exception for the lesson in gateway 0's room and time its agent's wake-up.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    import json
    _, _, body = await _request(reader, writer, "POST", "/api/v1/auth/token",
                                {"Content-Type": "application/json"},
                                json.dumps({"username": "leader",
                                            "password": "bench-password"}).encode())
    token = json.loads(body)["token"]
    first_gateway = next(iter(keys))
    granted = time.monotonic()
    status, _, body = await _request(
        reader, writer, "POST", "/api/v1/exceptions",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        json.dumps({"scope": "lesson", "lesson_id": lesson_id, "minutes": 10}).encode())
    assert status == 201, body
    writer.close()
    while first_gateway not in outcomes and time.monotonic() - granted < LONG_POLL_WAIT:
        await asyncio.sleep(0.005)
    wake = outcomes.get(first_gateway, (0, float("nan")))
    await asyncio.gather(*polls)
    statuses: dict[int, int] = {}
    for status, _ in outcomes.values():
        statuses[status] = statuses.get(status, 0) + 1
    return {"figures": figures, "early": early, "statuses": statuses,
            "wake_status": wake[0], "wake_ms": (wake[1] - granted) * 1000}


def test_api_under_load(tmp_path: Path) -> None:
    """Print lesson-status throughput and p99, alone and during 500 long polls; and wake latency."""
    database_url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    began = time.monotonic()
    world = _build_world(tmp_path / "instance", database_url, AGENTS)
    print(f"\nbuilt {SCHOOLS} schools, {AGENTS} gateways and {AGENTS * 8} lessons in "
          f"{time.monotonic() - began:.1f} s", flush=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_api", "serve", str(tmp_path / "instance"),
         database_url, str(SERVER_THREADS)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(line.split()[1])
        print(f"lesfocus serve (gunicorn gthread) on 127.0.0.1:{port} with {SERVER_THREADS} "
              f"threads (master pid {server.pid})", flush=True)
        _measure_lesson_status(port, "warm-up", server.pid)
        alone = _measure_lesson_status(port, "alone", server.pid)
        result = asyncio.run(_long_polls(
            port, world["keys"], world["lesson_now"],
            lambda n: _measure_lesson_status(port, f"while {n} agents long-poll", server.pid)))
        print(f"long polls: {result['early']} answered before the load ran (want 0); "
              f"final statuses {result['statuses']}", flush=True)
        print(f"grant -> waiting agent woken: {result['wake_ms']:.0f} ms "
              f"(status {result['wake_status']})", flush=True)
        during = result["figures"][AGENTS]
        target = "meets" if during["req_s"] >= 1000 and during["p99"] <= 100 else "MISSES"
        print(f"target (>= 1000 req/s, p99 <= 100 ms with {AGENTS} long polls): {target} "
              f"({during['req_s']:.0f} req/s, p99 {during['p99']:.1f} ms); "
              f"alone {alone['req_s']:.0f} req/s", flush=True)
        assert result["early"] == 0, "long polls must not return before their wait"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "serve":
    serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
