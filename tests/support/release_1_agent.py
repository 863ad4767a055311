"""The policy reader of the first release's agent, kept as it shipped (commit 98c60a5:
agent/policy_source.py, "the policy document" part, and agent/schedule.py's reading of blocks).

A server must keep serving agents of the previous release during a rolling upgrade; the tests use
this frozen reader to check that the documents the server sends them still verify and mean the
same. Do not "fix" this file: it stands for code already running on gateways.
"""

from __future__ import annotations

import ipaddress
import re
import time
from datetime import datetime, timezone
from typing import Any

import jwt

from agent.errors import PolicyError
from agent.policy_source import Enrollment
from lesfocus_policy.model import Block, Policy, PolicySegment, Service

ALGORITHMS = ["EdDSA"]
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

def _utc(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise ValueError(f"{where}: expected a UTC ISO-8601 time ending in Z, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise ValueError(f"{where}: not an ISO-8601 time: {value!r}") from None
    return parsed.astimezone(timezone.utc)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    return value


def _services(value: Any) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for sid, body in _object(value, "services").items():
        where = f"services.{sid}"
        body = _object(body, where)
        domains = []
        for n, domain in enumerate(_list(body.get("domains"), f"{where}.domains")):
            domain = _string(domain, f"{where}.domains[{n}]").lower().rstrip(".")
            if not _DOMAIN.match(domain):
                raise ValueError(f"{where}.domains[{n}]: not a domain name: {domain!r}")
            domains.append(domain)
        services[sid] = Service(id=_string(sid, where), name=_string(body.get("name"),
                                f"{where}.name"), domains=tuple(domains))
    return services


def _segments(value: Any, services: dict[str, Service]) -> tuple[PolicySegment, ...]:
    segments: list[PolicySegment] = []
    networks: list[tuple[Any, str]] = []
    seen_ids: set[int] = set()
    for n, body in enumerate(_list(value, "segments")):
        where = f"segments[{n}]"
        body = _object(body, where)
        sid = _int(body.get("id"), f"{where}.id")
        if sid in seen_ids:
            raise ValueError(f"{where}.id: segment {sid} appears twice")
        seen_ids.add(sid)
        cidrs = []
        for m, cidr in enumerate(_list(body.get("cidrs"), f"{where}.cidrs")):
            try:
                network = ipaddress.ip_network(_string(cidr, f"{where}.cidrs[{m}]"), strict=False)
            except ValueError:
                raise ValueError(f"{where}.cidrs[{m}]: not a CIDR: {cidr!r}") from None
            for other, other_where in networks:
                if network.version == other.version and network.overlaps(other):
                    raise ValueError(f"{where}.cidrs[{m}]: {network} overlaps {other_where}")
            networks.append((network, f"{where}.cidrs[{m}]"))
            cidrs.append(str(network))
        blocks: list[Block] = []
        for m, raw in enumerate(_list(body.get("blocks"), f"{where}.blocks")):
            bwhere = f"{where}.blocks[{m}]"
            raw = _object(raw, bwhere)
            start, end = _utc(raw.get("start"), f"{bwhere}.start"), _utc(raw.get("end"),
                                                                         f"{bwhere}.end")
            if end <= start:
                raise ValueError(f"{bwhere}: end is not after start")
            if blocks and start < blocks[-1].end:
                raise ValueError(f"{bwhere}: starts before the previous block ends "
                                 "(blocks must be sorted and disjoint)")
            names = _list(raw.get("services"), f"{bwhere}.services")
            for k, name in enumerate(names):
                if name not in services:
                    raise ValueError(f"{bwhere}.services[{k}]: unknown service {name!r}")
            blocks.append(Block(start=start, end=end, services=frozenset(names)))
        segments.append(PolicySegment(id=sid, name=_string(body.get("name"), f"{where}.name"),
                                      cidrs=tuple(cidrs), blocks=tuple(blocks)))
    return tuple(segments)


def parse_policy(claims: Any) -> Policy:
    """A Policy from verified JWS claims, strictly; ValueError names the first bad field."""
    claims = _object(claims, "claims")
    _string(claims.get("iss"), "iss")
    iat, exp = _int(claims.get("iat"), "iat"), _int(claims.get("exp"), "exp")
    if exp <= iat:
        raise ValueError("exp: not after iat")
    tz = _string(claims.get("tz"), "tz")
    if "window" in claims:
        window = _object(claims["window"], "window")
        if _utc(window.get("end"), "window.end") < _utc(window.get("start"), "window.start"):
            raise ValueError("window: end before start")
    services = _services(claims.get("services"))
    return Policy(version=_string(claims.get("ver"), "ver"),
                  gateway_id=_string(claims.get("aud"), "aud"),
                  issued_at=datetime.fromtimestamp(iat, timezone.utc),
                  expires_at=datetime.fromtimestamp(exp, timezone.utc),
                  timezone=tz, services=services,
                  segments=_segments(claims.get("segments"), services))


def verify_policy(token: Any, enrollment: Enrollment, now: float | None = None) -> Policy:
    """Verify a policy JWS with the pinned keys (EdDSA only), for us, unexpired; parse it."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise PolicyError("the policy is not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as err:
        raise PolicyError(f"the policy's JWS header is unreadable: {err}") from None
    if header.get("alg") not in ALGORITHMS:
        raise PolicyError(f"the policy is signed with alg {header.get('alg')!r}, not EdDSA")
    keys = enrollment.public_keys()
    kid = header.get("kid")
    candidates = [key for key_id, key in keys if kid is None or key_id in (None, kid)]
    if not candidates:
        raise PolicyError(f"the policy is signed with key {kid!r}, which is not pinned")
    last_error: Exception | None = None
    for key in candidates:
        try:
            # Expiry is checked below against the caller's clock (tests pass one; the agent
            # passes time.time()); iat is not checked because the server's clock may run ahead.
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=enrollment.gateway_id,
                options={"require": ["exp", "iat", "aud", "iss"], "verify_exp": False,
                         "verify_iat": False})
            break
        except jwt.InvalidSignatureError as err:
            last_error = err
            continue
        except jwt.InvalidTokenError as err:
            raise PolicyError(f"the policy is refused: {err}") from None
    else:
        raise PolicyError(f"the policy is refused: {last_error}")
    now = time.time() if now is None else now
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise PolicyError(f"the policy is refused: it expired (exp {claims.get('exp')!r})")
    try:
        return parse_policy(claims)
    except ValueError as err:
        raise PolicyError(f"the policy is malformed: {err}") from None


