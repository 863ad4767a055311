"""`lesfocus worker`: the process that runs the scheduled jobs and the queued imports (SPEC §7).

Exactly one worker is active; any others stand by and take over when it stops. Who is active is
decided by a lock that the operating system or the database frees when its holder dies:
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`, see "Advisory Locks" in the
  PostgreSQL manual) on a connection of its own. A killed worker's connection closes and the lock
  goes with it; for a worker whose host vanished, the server's TCP keepalives set on that session
  end it within about 20 s. The active worker checks its connection every few seconds and stands
  down when it is gone, since the lock is gone with it.
- SQLite (one host): an exclusive `flock(2)` on `<instance>/worker.lock`, freed by the kernel
  when the process ends.
A standby retries every 5 s, so it takes over within 30 s. During a network split the old worker
may go on for a few seconds until its check fails; imports are claimed atomically and retention
is idempotent, so the overlap does no harm.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .extensions import db
from .health import record_worker_heartbeat
from .imports import describe_database_error, run_next_import
from .models import utcnow
from .scheduler import start_scheduler

log = logging.getLogger("lesfocus.worker")

STANDBY_RETRY_SECONDS = 5.0
HEARTBEAT_SECONDS = 5.0
POLL_SECONDS = 1.0
ERROR_BACKOFF_SECONDS = 5.0
# The advisory lock's key: one 64-bit number for "the lesfocus worker" in this database.
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"lesfocus worker").digest()[:8], "big",
                                   signed=True)
# Client side (libpq): notice a dead server or network. Server side (the session's settings):
# end the session, and free the lock, of a worker whose host stopped answering.
_LIBPQ_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                     "keepalives_count": 3, "tcp_user_timeout": 20000, "connect_timeout": 10,
                     "application_name": "lesfocus worker lock"}
_SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 5",
                      "SET tcp_keepalives_count = 3")


class LeaderLock(Protocol):
    """The lock that makes one worker active."""

    description: str

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this process holds it."""

    def still_held(self) -> bool:
        """True while the lock is (still) ours."""

    def release(self) -> None:
        """Let the lock go (a standby takes it)."""


class FileLeaderLock:
    """An exclusive flock(2) on a file: for SQLite, whose workers share one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"the lock file {path}"
        self._fd: int | None = None
        self._held = False

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it."""
        if self._held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._held = True
        # For people looking: which process is active.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def still_held(self) -> bool:
        """A flock lasts as long as its file descriptor."""
        return self._held

    def release(self) -> None:
        """Unlock and close the file."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd, self._held = None, False


class PostgresLeaderLock:
    """A session-level advisory lock on a connection of its own (not from the app's pool)."""

    def __init__(self, url: sa.URL) -> None:
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args=_LIBPQ_KEEPALIVES)
        self.description = f"PostgreSQL advisory lock {ADVISORY_LOCK_KEY}"
        self._conn: Connection | None = None
        self._held = False
        self._unreachable = False

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SERVER_KEEPALIVES:
                conn.exec_driver_sql(statement)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except SQLAlchemyError:
                pass
        self._conn = None

    def try_acquire(self) -> bool:
        """Try the lock once (never waits); False also when the database cannot be reached."""
        if self._held:
            return True
        try:
            got = self._connection().scalar(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": ADVISORY_LOCK_KEY})
        except SQLAlchemyError as err:
            if not self._unreachable:
                log.warning("cannot reach the database for the worker lock: %s",
                            type(err.orig or err).__name__)
            self._unreachable = True
            self._drop()
            return False
        self._unreachable = False
        self._held = bool(got)
        return self._held

    def still_held(self) -> bool:
        """True while the lock's session answers: the lock lives exactly as long as it."""
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.scalar(sa.text("SELECT 1"))
        except SQLAlchemyError:
            self._drop()
            return False
        return True

    def release(self) -> None:
        """Unlock and close the connection."""
        if self._held and self._conn is not None:
            try:
                self._conn.scalar(sa.text("SELECT pg_advisory_unlock(:key)"),
                                  {"key": ADVISORY_LOCK_KEY})
            except SQLAlchemyError:
                pass
        self._drop()
        self.engine.dispose()


def leader_lock_for(app: Flask) -> LeaderLock:
    """The lock for the app's database: an advisory lock on PostgreSQL, a lock file on SQLite."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(url)
    if url.get_backend_name() == "sqlite":
        return FileLeaderLock(Path(app.instance_path) / "worker.lock")
    raise ValueError(f"lesfocus worker needs PostgreSQL or SQLite, not {url.get_backend_name()}")


def run_worker(app: Flask, stop: threading.Event, *, lock: LeaderLock | None = None,
               clock: Callable[[], datetime] = utcnow,
               standby_seconds: float = STANDBY_RETRY_SECONDS,
               heartbeat_seconds: float = HEARTBEAT_SECONDS,
               poll_seconds: float = POLL_SECONDS) -> None:
    """Stand by until this worker holds the lock, then run jobs and imports until `stop` is set."""
    lock = lock or leader_lock_for(app)
    log.info("worker starting: instance folder %s, coordinating through %s",
             app.instance_path, lock.description)
    standing_by = False
    try:
        while not stop.is_set():
            if not lock.try_acquire():
                if not standing_by:
                    log.info("worker standing by: another worker is active; trying again every "
                             "%g s", standby_seconds)
                    standing_by = True
                stop.wait(standby_seconds)
                continue
            standing_by = False
            log.info("worker active (pid %d)", os.getpid())
            _work_while_active(app, stop, lock, clock, heartbeat_seconds, poll_seconds)
    finally:
        lock.release()
        log.info("worker stopped")


def _beat(app: Flask, exclusive: threading.Lock, clock: Callable[[], datetime]) -> None:
    """Write the heartbeat /readyz reads; a failure is logged (the next beat tries again)."""
    with exclusive, app.app_context():
        try:
            record_worker_heartbeat(clock())
            db.session.commit()
        except SQLAlchemyError as err:
            db.session.rollback()
            log.warning("worker heartbeat not written: %s", describe_database_error(err))
        finally:
            db.session.remove()


def _work_while_active(app: Flask, stop: threading.Event, lock: LeaderLock,
                       clock: Callable[[], datetime], heartbeat_seconds: float,
                       poll_seconds: float) -> None:
    # One writer at a time inside the worker: an import and a scheduled job never overlap.
    exclusive = threading.Lock()
    scheduler = start_scheduler(app, exclusive)
    _beat(app, exclusive, clock)
    checked = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() - checked >= heartbeat_seconds:
                if not lock.still_held():
                    log.warning("worker lost its lock (its database connection ended); "
                                "standing down")
                    return
                _beat(app, exclusive, clock)
                checked = time.monotonic()
            try:
                with exclusive, app.app_context():
                    ran = run_next_import(clock)
            except SQLAlchemyError as err:
                log.error("cannot run queued imports: %s", describe_database_error(err))
                stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            if not ran:
                stop.wait(poll_seconds)
    finally:
        scheduler.shutdown(wait=True)  # a job that is running finishes first
        with app.app_context():
            db.session.remove()
