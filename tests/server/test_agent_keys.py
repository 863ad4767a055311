"""Agents' keys in memory (server/agent_keys.py): a re-poll reads no gateway row, and a gateway
removed or re-enrolled with a new key is refused by this process at once and by every other
process within MAX_AGE_SECONDS.

Two apps on one database stand for two `lesfocus serve` processes. The other process's cache
runs on a clock the test moves, so the bound is checked without waiting for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import delete, event
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server import agent_keys
from server.agent_keys import MAX_AGE_SECONDS, RECHECK_SECONDS, keys_of
from server.extensions import db
from server.gateways import issue_enrollment_token
from server.models import Gateway
from server.tokens import public_jwk

from tests.support.api import Agent, new_gateway


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _enrol(app: Flask, gateway_id: str) -> Agent:
    """Enrol the gateway (again) through `app` with a new key; the agent with that key."""
    with app.app_context():
        token = issue_enrollment_token(db.session.get(Gateway, gateway_id), actor="test",
                                       reenrol=True)
        db.session.commit()
    key = Ed25519PrivateKey.generate()
    answer = app.test_client().post("/api/v1/gateways/enroll", json={
        "token": token, "public_key": public_jwk(key.public_key())})
    assert answer.status_code == 201, answer.get_json()
    return Agent(gateway_id, key, [])


def _poll(app: Flask, agent: Agent) -> int:
    return app.test_client().get("/api/v1/gateways/self/policy",
                                 headers=agent.headers()).status_code


def _heartbeat(app: Flask, agent: Agent) -> int:
    return app.test_client().post("/api/v1/gateways/self/heartbeat", headers=agent.headers(),
                                  json={"agent_version": "test"}).status_code


@contextmanager
def _later(app: Flask, clock: Clock, after: float) -> Iterator[None]:
    """`after` s later for `app`'s key cache. At MAX_AGE_SECONDS the recheck is held, as if
    another request were running it, so that only the kept entries' age can refuse a key."""
    cache = keys_of(app)
    held = after >= MAX_AGE_SECONDS
    if held:
        assert cache.rechecking.acquire(blocking=False)
    clock.now += after
    try:
        yield
    finally:
        if held:
            cache.rechecking.release()


@pytest.fixture
def two_processes(make_app: Callable[..., Flask]) -> Iterator[tuple[Flask, Flask, Clock]]:
    """Two apps on one database; the first one's key cache runs on a test clock."""
    first, second = make_app(), make_app()
    clock = Clock()
    cache = keys_of(first)
    cache.clock, cache.rechecked_at = clock, clock.now
    yield first, second, clock


@pytest.fixture
def agent(two_processes: tuple[Flask, Flask, Clock]) -> Agent:
    """A gateway enrolled through the second app, whose key the first one keeps."""
    first, second, _ = two_processes
    gateway_id, _token = new_gateway(second, "gw-keys")
    enrolled = _enrol(second, gateway_id)
    assert _poll(first, enrolled) == 200
    return enrolled


def test_a_re_poll_reads_no_gateway_row(two_processes, agent) -> None:
    first, _, _ = two_processes
    statements: list[str] = []
    with first.app_context():
        engine = db.engine

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            assert _poll(first, agent) == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # A row of `gateways` is read with its key (other statements that name the table, such as
    # a count, do not read a row's key).
    # The replay check's INSERT ... SELECT (server/agent_tokens.py) reads the row in the write
    # every request makes anyway; no query of its own reads it.
    assert not [s for s in statements if "gateways.public_key_pem" in s
                and not s.lstrip().upper().startswith("INSERT INTO AGENT_TOKEN_USES")], statements


def test_re_enrolment_through_this_process_refuses_the_old_key_at_once(two_processes,
                                                                       agent) -> None:
    first, _, _ = two_processes
    renewed = _enrol(first, agent.gateway_id)
    assert _poll(first, agent) == 401
    assert _poll(first, renewed) == 200


@pytest.mark.parametrize("after", [RECHECK_SECONDS, MAX_AGE_SECONDS])
def test_re_enrolment_through_another_process_refuses_the_old_key_within_the_bound(
        two_processes, agent, after: float) -> None:
    first, second, clock = two_processes
    renewed = _enrol(second, agent.gateway_id)
    with _later(first, clock, after):
        assert _poll(first, agent) == 401
    assert _poll(first, renewed) == 200


def test_a_new_key_works_at_once_in_every_process(two_processes, agent) -> None:
    first, second, _ = two_processes
    renewed = _enrol(second, agent.gateway_id)
    # No clock moved: a token the kept key refuses makes the row decide, and it is kept then.
    assert _poll(first, renewed) == 200
    assert _poll(first, agent) == 401


@pytest.mark.parametrize("after", [RECHECK_SECONDS, MAX_AGE_SECONDS])
def test_a_gateway_removed_through_another_process_is_refused_within_the_bound(
        two_processes, agent, after: float) -> None:
    first, second, clock = two_processes
    with second.app_context():
        db.session.execute(delete(Gateway).where(Gateway.id == agent.gateway_id))
        db.session.commit()
    with _later(first, clock, after):
        assert _poll(first, agent) == 401


def test_a_heartbeat_with_the_old_key_is_refused_at_once_in_every_process(two_processes,
                                                                          agent) -> None:
    first, second, _ = two_processes
    assert _heartbeat(first, agent) == 200
    _enrol(second, agent.gateway_id)
    # No clock moved: a write reads its gateway's row and compares the key.
    assert _heartbeat(first, agent) == 401
    with first.app_context():
        assert db.session.get(Gateway, agent.gateway_id).agent_version == "test"
        assert agent.gateway_id not in keys_of(first).entries


def test_the_cache_keeps_at_most_max_entries(app: Flask, monkeypatch) -> None:
    monkeypatch.setattr(agent_keys, "MAX_ENTRIES", 2)
    agents = [_enrol(app, new_gateway(app, f"gw-{n}")[0]) for n in range(3)]
    for enrolled in agents:
        assert _poll(app, enrolled) == 200
    assert list(keys_of(app).entries) == [a.gateway_id for a in agents[1:]]
    # The one that went is read again when it comes back.
    assert _poll(app, agents[0]) == 200


AGENTS_AT_ONCE = 8


def _many_agents(app: Flask) -> list[Agent]:
    agents = [_enrol(app, new_gateway(app, f"gw-many-{n}")[0]) for n in range(AGENTS_AT_ONCE)]
    keys_of(app).forget()  # as after a restart: nothing kept
    return agents


def _all_at_once(app: Flask, agents: list[Agent], monkeypatch) -> tuple[list[int], list[int]]:
    """Every agent polls at once; the first miss waits until all have joined its read (so the
    test does not depend on how fast threads start). The polls' statuses, and the sizes of the
    gateway reads."""
    cache = keys_of(app)
    reads: list[int] = []
    real_read_rows = cache._read_rows

    def gather() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with cache.lock:
                if cache.batch is not None and len(cache.batch.ids) >= len(agents):
                    return
            time.sleep(0.005)

    def read_rows(ids: list[str]) -> Any:
        reads.append(len(ids))
        return real_read_rows(ids)

    monkeypatch.setattr(cache, "_gather", gather)
    monkeypatch.setattr(cache, "_read_rows", read_rows)
    with ThreadPoolExecutor(len(agents)) as pool:
        statuses = list(pool.map(lambda a: _poll(app, a), agents))
    return statuses, reads


def test_misses_that_come_together_are_read_in_one_query(app: Flask, monkeypatch) -> None:
    agents = _many_agents(app)
    statuses, reads = _all_at_once(app, agents, monkeypatch)
    assert statuses == [200] * AGENTS_AT_ONCE
    assert reads == [AGENTS_AT_ONCE]
    assert set(keys_of(app).entries) == {a.gateway_id for a in agents}


def test_when_the_joint_read_fails_every_request_it_served_is_told_to_come_back(
        app: Flask, monkeypatch) -> None:
    agents = _many_agents(app)
    cache = keys_of(app)

    def no_connection(ids: list[str]) -> Any:
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    monkeypatch.setattr(cache, "_read_rows", no_connection)
    statuses, _ = _all_at_once(app, agents, monkeypatch)
    assert statuses == [503] * AGENTS_AT_ONCE
    assert not cache.entries and cache.batch is None
    monkeypatch.undo()
    assert _poll(app, agents[0]) == 200  # the next miss starts a new read


def test_a_joint_read_keeps_the_enrolled_and_drops_the_removed(app: Flask, monkeypatch) -> None:
    agents = _many_agents(app)
    with app.app_context():
        db.session.execute(delete(Gateway).where(Gateway.id == agents[0].gateway_id))
        db.session.commit()
    statuses, reads = _all_at_once(app, agents, monkeypatch)
    assert statuses == [401] + [200] * (AGENTS_AT_ONCE - 1)
    assert reads == [AGENTS_AT_ONCE]
    assert set(keys_of(app).entries) == {a.gateway_id for a in agents[1:]}
