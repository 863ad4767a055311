"""Agent tokens are good for one request: a `jti` seen once is refused again (issue 13, item 7).

The rule comes from the agent itself: `agent/policy_source.py` (`ServerClient._headers`) signs a
new token, with a new random `jti`, for every request it sends (each long poll and each
heartbeat, retries included). So a second request with the same (gateway, jti) within the
token's lifetime is a copy someone else sends: it is refused with 401 and the reason. A token
without a `jti` is refused too, since a replay of it could not be told apart.

What is kept: one row of `agent_token_uses` per accepted token (gateway id, jti, when the token's
lifetime ends), written with the request's own session before the view runs, so every process
sees it (the primary key decides, `INSERT ... SELECT ... ON CONFLICT DO NOTHING`: two copies
racing through two processes cannot both win). The SELECT is the gateway's row with the key
that verified the token and no `disabled_at`, so the same write refuses, in every process at
once, a gateway that was disabled, removed or re-enrolled meanwhile. The rows are bounded by the tokens' lifetime: a token lives at
most LESFOCUS_AGENT_TOKEN_MAX_SECONDS (300 s) plus the 30 s leeway, and once that is over its
row is deleted, by one request every PURGE_SECONDS in each process and by the worker's
retention job. With 5,000 gateways that send about two requests a minute that is at most some
55,000 small rows.

A retry that repeats the same bytes (a proxy's `proxy_next_upstream` after a server died while
holding the request) is refused as well; the agent then backs off about a second and asks again
with a new token.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db
from .models import AgentTokenUse, Gateway, UTCDateTime, utcnow
from .tokens import TokenError

MAX_JTI_LENGTH = 128


class GatewayRemoved(TokenError):
    """The token's gateway is gone, disabled, or enrolled with another key now."""


PURGE_SECONDS = 60.0

_purge_lock = threading.Lock()
_purged_at = 0.0


def _expires(claims: dict[str, Any], max_lifetime: int, leeway: int, now: float) -> datetime:
    # A token is accepted until exp + leeway, and never longer than max_lifetime from now.
    until = min(float(claims["exp"]), now + max_lifetime) + leeway
    return datetime.fromtimestamp(until, timezone.utc)


def claim(gateway_id: str, public_key_pem: str, claims: dict[str, Any], *, max_lifetime: int,
          leeway: int = 30, now: float | None = None) -> None:
    """Record the token's `jti` as used by `gateway_id` (committed); TokenError when it was
    used already, when the token carries none, and GatewayRemoved when the gateway's row no
    longer has this key or is disabled.

    One statement does it, `INSERT ... SELECT` from the gateway's row: so the row is read on
    every agent request after all, by the write that is needed anyway, and a gateway disabled,
    removed or re-enrolled through any process is refused from the moment that commit is
    visible, whatever the key cache of server/agent_keys.py still holds."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise TokenError("token has no jti: every agent request needs a new token with its own "
                         "jti")
    if len(jti) > MAX_JTI_LENGTH:
        raise TokenError(f"token jti is longer than {MAX_JTI_LENGTH} characters")
    current = time.time() if now is None else now
    expires = _expires(claims, max_lifetime, leeway, current)
    dialect = db.session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    live_gateway = (select(Gateway.id, literal(jti, String()), literal(expires, UTCDateTime()))
                    .where(Gateway.id == gateway_id, Gateway.disabled_at.is_(None),
                           Gateway.public_key_pem == public_key_pem))
    # RETURNING, not rowcount: psycopg reports -1 for this statement through SQLAlchemy.
    statement = (builder(AgentTokenUse)
                 .from_select(["gateway_id", "jti", "expires_at"], live_gateway)
                 .on_conflict_do_nothing().returning(AgentTokenUse.jti))
    inserted = len(db.session.execute(statement).all())
    used = inserted == 0 and db.session.get(AgentTokenUse, (gateway_id, jti)) is not None
    db.session.commit()
    if used:
        raise TokenError("this token was used already (replay refused): every request needs a "
                         "new token")
    if inserted == 0:
        raise GatewayRemoved("unknown, disabled or not enrolled gateway")
    _purge_now_and_then(current)


def _purge_now_and_then(now: float) -> None:
    global _purged_at
    if now - _purged_at < PURGE_SECONDS or not _purge_lock.acquire(blocking=False):
        return
    try:
        _purged_at = now
        purge_expired()
    finally:
        _purge_lock.release()


def purge_expired(now: datetime | None = None) -> int:
    """Delete the rows of tokens whose lifetime is over (committed); how many."""
    result = db.session.execute(delete(AgentTokenUse).where(
        AgentTokenUse.expires_at < (utcnow() if now is None else now)))
    db.session.commit()
    return result.rowcount or 0
