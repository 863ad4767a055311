"""Health checks for a load balancer: `/healthz` (the process answers) and `/readyz` (it can
do its work: database reachable, signing key loaded, worker heartbeat fresh).

Both are public (SPEC §7) and say only which checks passed, in words: no versions, no error texts
(a driver's message names hosts and ports); the log gets the reason. The active `lesfocus worker`
writes its heartbeat here (`record_worker_heartbeat`) every few seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .imports import describe_database_error
from .models import WorkerHeartbeat, utcnow

log = logging.getLogger("lesfocus.health")

bp = Blueprint("health", __name__)

# The heartbeat row of the (one) active worker.
WORKER = "worker"


def record_worker_heartbeat(now: datetime) -> None:
    """Note that the active worker runs at `now` (in the session; the caller commits)."""
    row = db.session.get(WorkerHeartbeat, WORKER)
    if row is None:
        db.session.add(WorkerHeartbeat(name=WORKER, beat_at=now))
    else:
        row.beat_at = now


@dataclass(frozen=True)
class Readiness:
    """Each check's result in words ("ok" when it passed)."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(result == "ok" for result in self.checks.values())


def _signing_key_check(app: Flask) -> str:
    key = app.extensions.get("lesfocus.signing_key")
    if key is None:
        return "not loaded"
    try:
        key.sign({"readyz": 1})  # microseconds; shows the key can sign, not only that it is there
    except (TypeError, ValueError, AttributeError):
        return "cannot sign"
    return "ok"


def check_readiness(app: Flask, now: datetime) -> Readiness:
    """Run the readiness checks at `now` (inside an app context)."""
    checks = {"database": "ok", "signing_key": _signing_key_check(app), "worker": "ok"}
    query = select(WorkerHeartbeat.beat_at).where(WorkerHeartbeat.name == WORKER)
    try:
        try:
            beat = db.session.scalar(query)
        except SQLAlchemyError as err:
            if not getattr(err, "connection_invalidated", False):
                raise
            # A pooled connection the database closed (it restarted): the pool drops it, and
            # one more try on a fresh connection says whether the database answers now.
            db.session.rollback()
            beat = db.session.scalar(query)
    except SQLAlchemyError as err:
        db.session.rollback()
        log.warning("readyz: the database cannot be reached: %s", describe_database_error(err))
        checks["database"] = "unreachable"
        checks["worker"] = "unknown (database unreachable)"
        return Readiness(checks)
    if beat is None:
        checks["worker"] = "no heartbeat yet (is `lesfocus worker` running?)"
    else:
        age = (now - beat).total_seconds()
        limit = app.config["LESFOCUS_WORKER_STALE_SECONDS"]
        if age > limit:
            checks["worker"] = f"stale: last heartbeat {int(age)} s ago (limit {limit} s)"
    return Readiness(checks)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers (no database, nothing else checked)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    """200 with the checks when ready, 503 with the ones that failed."""
    result = check_readiness(current_app, utcnow())
    if result.ready:
        return jsonify({"status": "ready", "checks": result.checks})
    failed = [f"{name}: {outcome}" for name, outcome in result.checks.items() if outcome != "ok"]
    return jsonify({"error": "Service Unavailable", "message": "not ready: " + "; ".join(failed),
                    "status": "not ready", "checks": result.checks}), 503


def init_app(app: Flask) -> None:
    """Register /healthz and /readyz."""
    app.register_blueprint(bp)
