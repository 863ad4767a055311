"""Enrolled gateways' public keys in memory, so an agent's re-poll needs no SQL (issue 10).

Every agent request carries a new JWT signed with its gateway's key (SPEC §4), and its signature
is checked on every request (server/auth.py). What is kept here is only what that check reads
from `gateways`: the gateway's public key and school. Kept how, and how long:

- A miss reads the row and keeps it, at most MAX_ENTRIES gateways (the least recently used go).
  Misses that come together are read together: the first waits GATHER_SECONDS for others, then
  reads all their rows in one query per RECHECK_BATCH while they wait for it. A disabled
  gateway's row counts as not enrolled. After a restart, or
  when entries grew old while no agent asked (the recheck runs only while requests come), 5,000
  re-polls then cost ten queries, not 5,000 that queue for the pool's connections (bench_api
  saw them wait past the pool's timeout while lesson-status kept the process busy).
- This process's own commits drop the entry of every gateway whose row they changed (a new key
  at re-enrolment, a removal, anything but the heartbeat's fields) or, for bulk statements on
  `gateways`, every entry.
- Other processes' commits: while requests come, one of them every RECHECK_SECONDS reads the rows
  of all kept gateways again in one query per 500 and drops what differs or is gone. An entry
  that no read has confirmed for MAX_AGE_SECONDS is not used (its row is read again). So a
  gateway removed, or re-enrolled with a new key, through any process is refused by every
  process within MAX_AGE_SECONDS, on SQLite and PostgreSQL alike. (Agent requests do not wait
  for that: the replay check of server/agent_tokens.py writes through the gateway's row and
  refuses such a gateway at once.)

Writes never rely on this: the heartbeat reads its gateway's row and compares the key
(server/auth.py, `agent_gateway`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask, current_app, has_app_context
from sqlalchemy import Table, event, inspect, select
from sqlalchemy.orm import Session, UOWTransaction

from .extensions import db
from .models import Gateway
from .tokens import load_public_key

RECHECK_SECONDS = 5.0
MAX_AGE_SECONDS = 10.0
MAX_ENTRIES = 50_000
RECHECK_BATCH = 500
GATHER_SECONDS = 0.005
# How long a miss waits for the read of the batch it joined before it reads its row itself.
BATCH_WAIT_SECONDS = 30.0

# Written by every heartbeat; they change nothing an agent's token is checked against.
HEARTBEAT_FIELDS = frozenset({"last_contact_at", "policy_version_applied", "policy_applied_at",
                              "agent_version"})
_EXTENSION = "lesfocus.agent_keys"
_CHANGED = "lesfocus.agent_keys.changed"
EVERY_GATEWAY = "*"


@dataclass(frozen=True)
class AgentKey:
    """An enrolled gateway as its agent's tokens are checked: id, school, public key."""

    gateway_id: str
    school_id: int
    public_key_pem: str
    key: Ed25519PublicKey


class _Batch:
    """Gateways whose rows one read fetches for every request that asked meanwhile."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.done = threading.Event()
        self.found: dict[str, AgentKey | None] = {}
        self.error: BaseException | None = None


class AgentKeyCache:
    """The kept keys of one app (tests build several apps in one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.rechecking = threading.Lock()
        # gateway id -> (key, when a read last confirmed it), least recently used first
        self.entries: OrderedDict[str, tuple[AgentKey, float]] = OrderedDict()
        self.rechecked_at = clock()
        # Moves with every forget: a row read before a forget is not kept after it.
        self.forgets = 0
        self.batch: _Batch | None = None  # open for misses to join, until its read starts

    def lookup(self, gateway_id: str) -> AgentKey | None:
        """The gateway's key, from memory when confirmed recently; None when not enrolled."""
        now = self.clock()
        if now - self.rechecked_at >= RECHECK_SECONDS:
            self._recheck()
        with self.lock:
            found = self.entries.get(gateway_id)
            if found is not None and now - found[1] < MAX_AGE_SECONDS:
                self.entries.move_to_end(gateway_id)
                return found[0]
        return self._read_together(gateway_id)

    def _read_together(self, gateway_id: str) -> AgentKey | None:
        """The gateway's key as its row has it now, read with the other misses of the moment."""
        with self.lock:
            batch = self.batch
            leading = batch is None
            if batch is None:
                batch = self.batch = _Batch()
            batch.ids.add(gateway_id)
        if not leading:
            if not batch.done.wait(BATCH_WAIT_SECONDS):
                return self.read(gateway_id)
            if batch.error is not None:
                raise batch.error  # the pool's timeout, say: the same answer for all of them
            return batch.found.get(gateway_id)
        try:
            self._gather()
            with self.lock:
                self.batch = None  # from now on misses start the next batch
                forgets = self.forgets
            read_at = self.clock()
            batch.found = self._read_rows(sorted(batch.ids))
            self._keep(batch.found, read_at, forgets)
        except BaseException as err:
            batch.error = err
            raise
        finally:
            with self.lock:
                if self.batch is batch:
                    self.batch = None
            batch.done.set()
        return batch.found.get(gateway_id)

    def _gather(self) -> None:
        """The first miss's pause for others to join (a greenlet's sleep under serve)."""
        time.sleep(GATHER_SECONDS)

    def _read_rows(self, gateway_ids: list[str]) -> dict[str, AgentKey | None]:
        """The keys of `gateway_ids` as their rows have them (None: not enrolled)."""
        found: dict[str, AgentKey | None] = dict.fromkeys(gateway_ids)
        for gateway_id, school_id, pem in _key_rows(gateway_ids):
            if pem:
                found[gateway_id] = AgentKey(gateway_id, school_id, pem, load_public_key(pem))
        return found

    def _keep(self, found: dict[str, AgentKey | None], read_at: float, forgets: int) -> None:
        """Keep what a read found, unless a forget came after the read began; drop the gone."""
        with self.lock:
            kept = self.forgets == forgets
            if any(agent is None for agent in found.values()):
                self.forgets += 1  # as forget() does: a read still running keeps nothing
            for gateway_id, agent in found.items():
                if agent is None:
                    self.entries.pop(gateway_id, None)
                elif kept:
                    self.entries[gateway_id] = (agent, read_at)
                    self.entries.move_to_end(gateway_id)
            while len(self.entries) > MAX_ENTRIES:
                self.entries.popitem(last=False)

    def read(self, gateway_id: str) -> AgentKey | None:
        """The gateway's key as its row has it now (and keep it); None when not enrolled."""
        with self.lock:
            forgets = self.forgets
        read_at = self.clock()
        found = self._read_rows([gateway_id])
        self._keep(found, read_at, forgets)
        return found[gateway_id]

    def forget(self, gateway_ids: list[str] | None = None) -> None:
        """Drop the entries of `gateway_ids` (None: all of them)."""
        with self.lock:
            self.forgets += 1
            if gateway_ids is None:
                self.entries.clear()
            for gateway_id in gateway_ids or ():
                self.entries.pop(gateway_id, None)

    def _recheck(self) -> None:
        # One request rechecks; the others go on meanwhile (entries stay usable until their
        # MAX_AGE_SECONDS, which is twice the interval).
        if not self.rechecking.acquire(blocking=False):
            return
        try:
            started = self.clock()
            if started - self.rechecked_at < RECHECK_SECONDS:
                return
            with self.lock:
                kept = dict(self.entries)
            rows = {gateway_id: (school_id, pem)
                    for gateway_id, school_id, pem in _key_rows(list(kept))}
            with self.lock:
                self.rechecked_at = started
                for gateway_id, (agent, _) in kept.items():
                    current = self.entries.get(gateway_id)
                    # Forgotten meanwhile, or read again since: that read is the newer one.
                    if current is None or current[0] is not agent:
                        continue
                    if rows.get(gateway_id) == (agent.school_id, agent.public_key_pem):
                        self.entries[gateway_id] = (agent, started)
                    else:
                        del self.entries[gateway_id]
        finally:
            self.rechecking.release()


def _key_rows(gateway_ids: list[str]) -> Iterator[tuple[str, int, str | None]]:
    """(id, school, public key) of those of `gateway_ids` that exist, one query per
    RECHECK_BATCH ids (a miss's read and the recheck alike). A gateway IT disabled has no key
    here: its tokens are refused as those of a gateway not enrolled."""
    for start in range(0, len(gateway_ids), RECHECK_BATCH):
        for gateway_id, school_id, pem, disabled_at in db.session.execute(
                select(Gateway.id, Gateway.school_id, Gateway.public_key_pem,
                       Gateway.disabled_at)
                .where(Gateway.id.in_(gateway_ids[start:start + RECHECK_BATCH]))):
            yield gateway_id, school_id, None if disabled_at is not None else pem


def keys_of(app: Flask) -> AgentKeyCache:
    """The key cache of `app`."""
    cache: AgentKeyCache = app.extensions[_EXTENSION]
    return cache


def lookup(gateway_id: str) -> AgentKey | None:
    """The current app's kept key of `gateway_id` (see AgentKeyCache.lookup)."""
    return keys_of(current_app).lookup(gateway_id)


def read(gateway_id: str) -> AgentKey | None:
    """The current app's key of `gateway_id` as its row has it now."""
    return keys_of(current_app).read(gateway_id)


# --- this process's own writes: session events --------------------------------------------------

def _changed(session: Session) -> set[str]:
    changed: set[str] = session.info.setdefault(_CHANGED, set())
    return changed


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    for obj in session.deleted:
        if isinstance(obj, Gateway):
            _changed(session).add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, Gateway):
            state = inspect(obj)
            if any(attr.history.has_changes() for attr in state.attrs
                   if attr.key not in HEARTBEAT_FIELDS):
                _changed(session).add(obj.id)


def _do_orm_execute(state: Any) -> None:
    if state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if isinstance(table, Table) and table.name == Gateway.__tablename__:
            _changed(state.session).add(EVERY_GATEWAY)


def _after_commit(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    if changed and has_app_context():
        cache = current_app.extensions.get(_EXTENSION)
        if cache is not None:
            cache.forget(None if EVERY_GATEWAY in changed else sorted(changed))


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # rolled back or closed: nothing was changed
        session.info.pop(_CHANGED, None)


_registered = False


def init_app(app: Flask) -> None:
    """Give `app` its key cache and register the session events (once per process)."""
    global _registered
    app.extensions[_EXTENSION] = AgentKeyCache()
    if _registered:
        return
    _registered = True
    event.listen(db.session, "after_flush", _after_flush)
    event.listen(db.session, "do_orm_execute", _do_orm_execute)
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_transaction_end", _after_transaction_end)
