"""Benchmark: one server under a board's load (SPEC §5 "server under load"), SQLite and PostgreSQL
side by side in one run.

What is measured, each figure printed next to its target:
- lesson-status spread over every segment: each request carries the address of a random client
  in a random one of AGENTS (5,000) segments, in X-Forwarded-For as nginx sends it, and the server
  is configured to trust one proxy (docs/deploy-server.md). Most addresses are never seen twice;
  the answers of a segment are shared by its clients, as in a school. ROUNDS rounds, alone and
  while every gateway's agent long-polls; req/s, p50, p99, the server's CPU per request and the
  load generator's CPU (wrk, Debian's package) next to it;
- the same single address again and again: a labelled extra, not the figure;
- the same at a steady rate of about 1,300 req/s (the target's 1,000 and some), during which a
  teacher keeps reloading the "Nu" page: its p50 / p99 (the saturated rounds above show what
  the server gives at most; pages queued behind a saturated worker say nothing about the target);
- server memory per waiting agent: the serving processes' RSS before and with every poll waiting;
- grant -> the waiting agent of that gateway answered: GRANTS grants, p50 / p95.

The server is started as users start it: `lesfocus serve` with its defaults (the shipped
configuration), on 127.0.0.1 and an ephemeral port. Long polls come from one asyncio client
holding a connection per agent. Run with `make bench`, or
`.venv/bin/python -m pytest -o addopts= -p no:cacheprovider -s tests/bench/bench_api.py`
(LESFOCUS_BENCH_AGENTS=500 for a quick look). Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.processes import stop_process
from tests.support.postgres import fresh_database

AGENTS = int(os.environ.get("LESFOCUS_BENCH_AGENTS", "5000"))
SCHOOLS = 50
ROUNDS = 3
ROUND_SECONDS = 8
CONNECTIONS = 64
PACED_MS = 40  # 64 connections, each a request per 40 ms plus its answer: about 1,300 req/s
LONG_POLL_WAIT = 60
GRANTS = 10
AUDIENCE = "http://127.0.0.1"
PASSWORD = "bench-password"


# --- the board --------------------------------------------------------------------------------

def segment_network(index: int) -> str:
    """The /24 of the index-th segment (10.0.0.0/24, 10.0.1.0/24, ...)."""
    return f"10.{index // 256}.{index % 256}.0/24"


def build_board(instance: Path, database_url: str, gateways: int) -> dict[str, Any]:
    """SCHOOLS schools sharing `gateways` enrolled gateways of one classroom segment each, a
    school day of lessons in every room around now, a teacher teaching in school 0."""
    from flask_migrate import upgrade

    from server.app import create_app
    from server.extensions import db
    from server.models import (Gateway, Lesson, Person, Room, School, Segment, SegmentCidr,
                               lesson_rooms, lesson_teachers, segment_rooms)
    from server.passwords import hash_password
    from server.seed import seed_reminders, seed_services
    from server.tokens import public_key_pem

    app = create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": database_url,
                      "PUBLIC_URL": AUDIENCE})
    keys: dict[str, Ed25519PrivateKey] = {}
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    lessons_now: dict[str, int] = {}
    with app.app_context():
        upgrade()
        seed_services()
        schools = [School(slug=f"bench{n}", name=f"Benchcollege {n}", aliases=[])
                   for n in range(SCHOOLS)]
        db.session.add_all(schools)
        db.session.flush()
        for school in schools:
            seed_reminders(school)
        teacher = Person(school_id=schools[0].id, username="docent", roles=["teacher", "leader"],
                         display_name="Docent", password_hash=hash_password(PASSWORD))
        db.session.add(teacher)
        db.session.flush()
        conn = db.session.connection()
        school_ids = [s.id for s in schools]
        for index in range(gateways):
            key = Ed25519PrivateKey.generate()
            gateway_id = f"gw-{index:05d}"
            keys[gateway_id] = key
            school_id = school_ids[index % SCHOOLS]
            conn.execute(sa.insert(Gateway).values(
                id=gateway_id, school_id=school_id, name=gateway_id, created_at=now,
                public_key_pem=public_key_pem(key.public_key()), enrolled_at=now))
            room_id = conn.execute(sa.insert(Room).values(
                school_id=school_id, code=f"R{index:05d}")).inserted_primary_key[0]
            segment_id = conn.execute(sa.insert(Segment).values(
                school_id=school_id, gateway_id=gateway_id,
                name=f"lokaal {index}")).inserted_primary_key[0]
            cidrs = [segment_network(index)] + (["127.0.0.0/8"] if index == 0 else [])
            conn.execute(sa.insert(SegmentCidr), [{"segment_id": segment_id, "cidr": c}
                                                  for c in cidrs])
            conn.execute(sa.insert(segment_rooms).values(segment_id=segment_id, room_id=room_id))
            # Eight 50-minute periods around now.
            for period in range(-4, 4):
                start = now + timedelta(minutes=60 * period - 10)
                lesson_id = conn.execute(sa.insert(Lesson).values(
                    school_id=school_id, start=start, end=start + timedelta(minutes=50),
                    subject="bench", cancelled=False, source="bench",
                    source_id=f"{index}-{period}", updated_at=now)).inserted_primary_key[0]
                conn.execute(sa.insert(lesson_rooms).values(lesson_id=lesson_id, room_id=room_id))
                if period == 0:
                    lessons_now[gateway_id] = lesson_id
                    if school_id == school_ids[0] and index < 20 * SCHOOLS:
                        conn.execute(sa.insert(lesson_teachers).values(
                            lesson_id=lesson_id, person_id=teacher.id))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    if database_url.startswith("postgresql"):
        from tests.bench.bench_policy import vacuum_analyze
        vacuum_analyze(database_url)  # as autovacuum does after a bulk load
    return {"keys": keys, "lessons_now": lessons_now}


def agent_token(gateway_id: str, key: Ed25519PrivateKey) -> str:
    issued = int(time.time())
    return jwt.encode({"sub": gateway_id, "aud": AUDIENCE, "iat": issued, "exp": issued + 300,
                       "jti": uuid.uuid4().hex}, key, algorithm="EdDSA")


# --- the server, as users start it --------------------------------------------------------------

SERVING = re.compile(r"lesfocus: serving on http://127\.0\.0\.1:(\d+)/")


class Server:
    """`lesfocus serve` with its defaults, on an ephemeral port."""

    def __init__(self, instance: Path, database_url: str, log: Path) -> None:
        env = {**os.environ, "LESFOCUS_INSTANCE_PATH": str(instance),
               "LESFOCUS_DATABASE_URL": database_url, "LESFOCUS_PUBLIC_URL": AUDIENCE,
               # Behind one proxy (nginx), as docs/deploy-server.md deploys it.
               "LESFOCUS_TRUSTED_PROXIES": "1",
               "PYTHONUNBUFFERED": "1"}
        lesfocus = Path(sys.executable).with_name("lesfocus")
        self.log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(lesfocus), "serve", "--host", "127.0.0.1", "--port",
                                      "0"], env=env, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        self.port = 0
        while time.monotonic() < deadline and not self.port:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"lesfocus serve ended: {log.read_text()[-2000:]}")
            found = SERVING.search(line)
            if found:
                self.port = int(found.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[int]:
        """The master and its workers."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [self.proc.pid, *map(int, children.split())]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.processes():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_kib(self) -> int:
        total = 0
        for pid in self.processes():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


# --- load -----------------------------------------------------------------------------------

def spread_script(folder: Path, segments: int, paced_ms: int = 0) -> Path:
    """A wrk script: every request from a random client of a random segment, via one proxy;
    with `paced_ms`, each connection waits that long between its requests (a steady rate
    instead of as fast as the server goes)."""
    script = folder / (f"spread-{paced_ms}ms.lua" if paced_ms else "spread.lua")
    script.write_text(
        (f"delay = function() return {paced_ms} end\n" if paced_ms else "")
        + "math.randomseed(os.time())\n"
        "request = function()\n"
        f"  local i = math.random(0, {segments - 1})\n"
        "  local address = string.format('10.%d.%d.%d', math.floor(i / 256), i % 256,\n"
        "                                 math.random(1, 254))\n"
        "  return wrk.format('GET', '/api/v1/lesson-status',\n"
        "                    {['X-Forwarded-For'] = address})\n"
        "end\n")
    return script


def wrk_round(server: Server, script: Path | None, base: str | None = None) -> dict[str, float]:
    """One round of wrk against lesson-status (at `base`, by default the server itself): req/s,
    latency percentiles (ms), CPU of the server and of wrk."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{ROUND_SECONDS}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    before_server = server.cpu_seconds()
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([*command, f"{base or server.base}/api/v1/lesson-status"],
                         capture_output=True,
                         text=True, timeout=ROUND_SECONDS + 60).stdout
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() - before_server

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    req_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore
    figures = {"req_s": req_s}
    for pct in ("50", "99"):
        figures[f"p{pct}"] = ms(re.search(rf"\s{pct}(?:\.000)?%\s+(\S+)", out).group(1))  # type: ignore
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["errors"] = float(errors.group(1)) if errors else 0.0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sockets:
        figures["errors"] += sum(int(n) for n in sockets.groups())
    requests = req_s * ROUND_SECONDS
    figures["server_ms"] = server_cpu / requests * 1000 if requests else float("nan")
    figures["wrk_cpu"] = ((after_wrk.ru_utime + after_wrk.ru_stime)
                          - (before_wrk.ru_utime + before_wrk.ru_stime)) / ROUND_SECONDS
    return figures


def rounds_line(label: str, rounds: list[dict[str, float]]) -> str:
    rates = [r["req_s"] for r in rounds]
    p99s = ", ".join(f"{r['p99']:.0f}" for r in rounds)
    return (f"  {label:44s} {statistics.median(rates):6.0f} req/s (rounds "
            f"{', '.join(f'{r:.0f}' for r in rates)}), p50 "
            f"{statistics.median(r['p50'] for r in rounds):5.1f} ms, p99 "
            f"{p99s} ms, errors "
            f"{sum(r['errors'] for r in rounds):.0f}; server CPU "
            f"{statistics.median(r['server_ms'] for r in rounds):.2f} ms/req, wrk "
            f"{statistics.median(r['wrk_cpu'] for r in rounds):.2f} cores")


class DashboardSampler(threading.Thread):
    """A teacher who keeps reloading the "Nu" page over a real HTTP session."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = self.opener.open(f"{base}/login", timeout=30).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore
        form = urllib.parse.urlencode({"username": "docent", "password": PASSWORD,
                                       "csrf_token": token}).encode()
        self.opener.open(f"{base}/login", data=form, timeout=30).read()

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.perf_counter()
            try:
                with self.opener.open(f"{self.base}/nu", timeout=30) as answer:
                    answer.read()
                    ok = answer.status == 200 and answer.url.endswith("/nu")
            except OSError:
                ok = False
            self.latencies.append(time.perf_counter() - began)
            self.failures += not ok
            self.stopping.wait(0.05)

    def figures(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return "no page loaded"
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                f"(target <= 200), {len(ordered)} pages, {self.failures} failed")


# --- long polls -------------------------------------------------------------------------------

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


class LongPolls:
    """Every agent's long poll, held by one asyncio loop in a thread of its own."""

    def __init__(self, port: int, keys: dict[str, Ed25519PrivateKey]) -> None:
        self.port = port
        self.keys = keys
        self.versions: dict[str, str] = {}
        self.waiting = 0
        self.early = 0
        self.answered: dict[str, tuple[int, float]] = {}
        self.errors: list[str] = []
        self.statuses: dict[int, int] = {}  # answers other than 200 and 304, by status
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stopping = False
        self.tasks: list[asyncio.Future[None]] = []

    def run(self, coroutine: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def first_fetch(self) -> float:
        semaphore = asyncio.Semaphore(16)

        async def fetch(gateway_id: str) -> None:
            async with semaphore:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                status, headers, _ = await _request(
                    reader, writer, "GET", "/api/v1/gateways/self/policy?format=2",
                    {"Authorization": f"Bearer {agent_token(gateway_id, self.keys[gateway_id])}"})
                assert status == 200, status
                self.versions[gateway_id] = headers["etag"].strip('"')
                writer.close()

        began = time.monotonic()
        await asyncio.gather(*(fetch(g) for g in self.keys))
        return time.monotonic() - began

    async def _poll(self, gateway_id: str) -> None:
        # An agent polls again at once after each answer, as agent/runner.py does.
        while not self.stopping:
            writer = None
            counted = False
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                self.waiting += 1
                counted = True
                began = time.monotonic()
                status, headers, _ = await _request(
                    reader, writer, "GET",
                    f"/api/v1/gateways/self/policy?format=2&wait={LONG_POLL_WAIT}",
                    {"Authorization": f"Bearer {agent_token(gateway_id, self.keys[gateway_id])}",
                     "If-None-Match": f'"{self.versions[gateway_id]}"'})
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as err:
                self.errors.append(f"{type(err).__name__}: {err}")
                await asyncio.sleep(1)
                continue
            finally:
                if counted:
                    self.waiting -= 1
                if writer is not None:
                    writer.close()
            if status == 200:
                self.versions[gateway_id] = headers["etag"].strip('"')
            elif status == 304 and time.monotonic() - began < LONG_POLL_WAIT * 5 / 6 - 1:
                self.early += 1
            elif status != 304:
                # A refusal counts as an error; like agent/policy_source.py the poll then waits
                # at least the server's Retry-After (else a second) before it asks again.
                self.errors.append(f"HTTP {status}")
                self.statuses[status] = self.statuses.get(status, 0) + 1
                wanted = headers.get("retry-after", "")
                await asyncio.sleep(min(int(wanted), 300) if wanted.isdigit() else 1)
                continue
            self.answered[gateway_id] = (status, time.monotonic())

    async def start_polls(self) -> None:
        semaphore = asyncio.Semaphore(64)

        async def start(gateway_id: str) -> None:
            async with semaphore:
                self.tasks.append(asyncio.ensure_future(self._poll(gateway_id)))
                await asyncio.sleep(0.002)

        await asyncio.gather(*(start(g) for g in self.keys))

    def wait_for_all(self, timeout: float = 300) -> bool:
        deadline = time.monotonic() + timeout
        while self.waiting < len(self.keys) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # the server has read every request and is waiting
        return self.waiting >= len(self.keys)

    async def _cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def stop(self) -> None:
        """Hang up every poll (their connections close) and end the loop."""
        self.stopping = True
        self.run(self._cancel(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def grant_wakes(server: Server, polls: LongPolls, lessons_now: dict[str, int]) -> list[float]:
    """GRANTS grants, each for the running lesson of another gateway; seconds until that
    gateway's waiting poll is answered with its new policy."""
    request = urllib.request.Request(f"{server.base}/api/v1/auth/token", method="POST",
                                     data=json.dumps({"username": "docent",
                                                      "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
    token = json.loads(urllib.request.urlopen(request, timeout=30).read())["token"]
    # The teacher's school: gateways 0, SCHOOLS, 2 * SCHOOLS, ...
    ids = sorted(polls.keys)[::SCHOOLS][1:GRANTS + 1]
    wakes = []
    for gateway_id in ids:
        before = polls.answered.get(gateway_id)
        granted = time.monotonic()
        request = urllib.request.Request(
            f"{server.base}/api/v1/exceptions", method="POST",
            data=json.dumps({"scope": "lesson", "lesson_id": lessons_now[gateway_id],
                             "minutes": 10, "services": ["youtube"]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        status = urllib.request.urlopen(request, timeout=30).status
        assert status == 201, status
        while polls.answered.get(gateway_id) == before and time.monotonic() - granted < 30:
            time.sleep(0.002)
        wakes.append(polls.answered.get(gateway_id, (0, float("nan")))[1] - granted)
    return wakes


def through_nginx(tmp: Path, server: Server) -> list[dict[str, float]]:
    """Rounds through Debian's nginx with the shipped site file, terminating TLS. wrk's
    connections all come from 127.0.0.1 (nginx forwards the real peer), so this is the one-address
    path plus the proxy's cost."""
    from tests.support.nginx import NginxProxy, find_nginx, make_self_signed_certificate
    binary = find_nginx()
    if binary is None:
        return []
    certificate, key = make_self_signed_certificate(tmp / "tls")
    proxy = NginxProxy(tmp / "nginx", binary, upstreams=[f"127.0.0.1:{server.port}"],
                       certificate=certificate, key=key).start()
    try:
        return [wrk_round(server, None, proxy.public_url) for _ in range(ROUNDS)]
    finally:
        proxy.stop()


# --- the benchmark --------------------------------------------------------------------------------

def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * AGENTS + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def measure(label: str, tmp: Path, database_url: str) -> list[str]:
    """Everything above for one database; the lines to print."""
    began = time.monotonic()
    board = build_board(tmp / "instance", database_url, AGENTS)
    lines = [f"{label}: {SCHOOLS} schools, {AGENTS} gateways of one segment each, "
             f"{AGENTS * 8} lessons (built in {time.monotonic() - began:.0f} s)"]
    server = Server(tmp / "instance", database_url, tmp / "serve.log")
    script = spread_script(tmp, AGENTS)
    paced = spread_script(tmp, AGENTS, PACED_MS)
    polls: LongPolls | None = None
    try:
        # As after a restart: every agent fetches its policy first (each is compiled).
        polls = LongPolls(server.port, board["keys"])
        fetched = polls.run(polls.first_fetch())
        wrk_round(server, script)  # warm-up: every segment's first answer
        alone = [wrk_round(server, script) for _ in range(ROUNDS)]
        single = [wrk_round(server, None) for _ in range(ROUNDS)]
        proxied = through_nginx(tmp, server)
        rss_before = server.rss_kib()  # every policy compiled and cached: the waiting's cost
        polls.run(polls.start_polls())
        all_waiting = polls.wait_for_all()
        rss_waiting = server.rss_kib()
        during = [wrk_round(server, script) for _ in range(ROUNDS)]
        sampler = DashboardSampler(server.base)
        sampler.start()
        steady = [wrk_round(server, paced) for _ in range(ROUNDS)]
        sampler.stopping.set()
        sampler.join(60)
        wakes = sorted(grant_wakes(server, polls, board["lessons_now"]))
        per_agent = (rss_waiting - rss_before) / max(polls.waiting, 1)
        lines += [
            f"  first policy fetch of {AGENTS} gateways: {fetched:.1f} s "
            f"({fetched / AGENTS * 1000:.1f} ms each, 16 at a time)",
            rounds_line("lesson-status spread, alone", alone),
            rounds_line(f"lesson-status spread, {polls.waiting} polls waiting", during),
            rounds_line(f"the same paced ({CONNECTIONS} x 1 per {PACED_MS} ms + answer)", steady),
            rounds_line("lesson-status one address (extra, not the figure)", single),
            (rounds_line("the same through nginx, TLS (docs/nginx)", proxied) if proxied
             else "  through nginx: not measured (no nginx)"),
            f"  dashboard Nu page during the paced load: {sampler.figures()}",
            f"  memory: {rss_before / 1024:.0f} MiB before, {rss_waiting / 1024:.0f} MiB with "
            f"{polls.waiting} polls waiting{'' if all_waiting else ' (not all got waiting)'}: "
            f"{per_agent:.1f} KiB per waiting agent (target <= 20)",
            f"  grant -> that gateway's waiting poll answered: p50 "
            f"{statistics.median(wakes) * 1000:.0f} ms, p95 "
            f"{wakes[min(len(wakes) - 1, int(len(wakes) * 0.95))] * 1000:.0f} ms, max "
            f"{wakes[-1] * 1000:.0f} ms (n={len(wakes)}, target p95 <= 1000)",
            f"  long polls answered before their wait without a change: {polls.early} "
            f"(want 0); poll errors: {len(polls.errors)}"
            + (f" (first: {polls.errors[0]}; by status: "
               f"{', '.join(f'{k}: {v}' for k, v in sorted(polls.statuses.items())) or 'none'})"
               if polls.errors else ""),
        ]
        target = (min(r["req_s"] for r in steady) >= 1000
                  and max(r["p99"] for r in steady) <= 100)
        lines.append(f"  target (>= 1000 req/s, p99 <= 100 ms spread over {AGENTS} segments "
                     f"with {AGENTS} agents waiting): {'meets' if target else 'MISSES'}")
    finally:
        if polls is not None:
            polls.stop()
        server.stop()
    served = (tmp / "serve.log").read_text(errors="replace")
    lines.append(f"  server log: {served.count('unhandled error')} unhandled errors (500), "
                 f"{served.count('database unavailable')} lines on database refusals (503)")
    return lines


def test_bench_server_under_a_boards_load(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/wrk"):
        pytest.skip("wrk (Debian package) is not installed")
    _raise_file_limit()
    print(f"\nload average at the start: {os.getloadavg()[0]:.1f} (2 cores; wrk and the asyncio "
          "client share them with the server)")
    results: list[str] = []
    have_postgres = bool(os.environ.get("LESFOCUS_TEST_POSTGRES_URL"))
    for label in ("SQLite", "PostgreSQL"):
        if label == "PostgreSQL" and not have_postgres:
            results.append("PostgreSQL: not measured (no LESFOCUS_TEST_POSTGRES_URL)")
            continue
        folder = tmp_path / label
        folder.mkdir()
        context: Callable[[], Any] = (
            (lambda: nullcontext(f"sqlite:///{folder / 'bench.sqlite3'}")) if label == "SQLite"
            else (lambda: fresh_database("bench_api")))
        with context() as url:
            results += measure(label, folder, url)
    print("\n".join(results))
