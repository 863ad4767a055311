"""Who is calling: gateway agents (their own JWTs) and people (API tokens, later session logins).

`require_agent` and `require_user(*roles)` guard views. `current_person()` finds the person behind
a request: a `Bearer` API token first, then any loader registered with `register_user_loader`
(the dashboard registers its session-cookie login there), so API views serve both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request

from . import agent_keys, agent_tokens
from .agent_keys import AgentKey
from .bounds import parse_id
from .errors import ApiError
from .extensions import db
from .models import Gateway, Person
from .passwords import password_marker
from .tokens import TokenError, unverified_subject, verify_agent_token, verify_api_token

F = TypeVar("F", bound=Callable[..., Any])
UserLoader = Callable[[], "Person | None"]

_user_loaders: list[UserLoader] = []


def register_user_loader(loader: UserLoader) -> None:
    """Add a way to find the signed-in person of a request without a bearer token (a session)."""
    if loader not in _user_loaders:
        _user_loaders.append(loader)


def _unauthorized(message: str, error: str = "invalid_token") -> ApiError:
    # RFC 6750 §3: a 401 names the scheme and, for a bad token, the error code.
    challenge = 'Bearer realm="lesfocus"'
    if error:
        challenge += f', error="{error}"'
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None when there is no such header."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    return token.strip()


PUBLIC_URL_MISSING = ("LESFOCUS_PUBLIC_URL is not set: agent tokens are addressed to the "
                      "server's public URL, so no agent request can be checked; set it to the "
                      "URL the gateways reach this server on (such as "
                      "https://lesfocus.school.example)")


def agent_audience() -> list[str]:
    """The `aud` values an agent token may carry: LESFOCUS_PUBLIC_URL, with or without a final
    slash. Never the request's own Host header (issue 13, item 7: whoever sends a Host names the
    audience then): without the setting agent requests are answered 503, and `lesfocus serve`
    does not start (server/cli.py)."""
    base = str(current_app.config.get("LESFOCUS_PUBLIC_URL") or "").rstrip("/")
    if not base:
        raise ApiError(503, PUBLIC_URL_MISSING)
    return [base, base + "/"]


def _verify_agent(token: str, agent: AgentKey) -> dict[str, Any]:
    return verify_agent_token(token, agent.key, gateway_id=agent.gateway_id,
                              audience=agent_audience(),
                              max_lifetime=current_app.config["LESFOCUS_AGENT_TOKEN_MAX_SECONDS"])


def authenticate_agent() -> AgentKey:
    """The enrolled gateway whose key signed this request's bearer token; ApiError 401 otherwise.

    The token's signature is checked on every request, and its `jti` must be new
    (server/agent_tokens.py: one row per accepted token); the gateway's key comes from memory
    (server/agent_keys.py). The replay check's write reads the gateway's row with the key that
    verified the token, so a removal, a disable or a new key through any process is refused at
    once whatever the kept key says.
    """
    token = bearer_token()
    if token is None:
        raise _unauthorized("this endpoint needs an agent token (Authorization: Bearer <JWT>)", "")
    try:
        gateway_id = unverified_subject(token)
        agent = agent_keys.lookup(gateway_id) if len(gateway_id) <= 36 else None
        if agent is None:
            raise TokenError("unknown, disabled or not enrolled gateway")
        try:
            claims = _verify_agent(token, agent)
        except TokenError:
            # Re-enrolled with a new key since it was kept: the row decides.
            fresh = agent_keys.read(gateway_id)
            if fresh is None:
                raise TokenError("unknown, disabled or not enrolled gateway") from None
            if fresh.public_key_pem == agent.public_key_pem:
                raise
            claims = _verify_agent(token, fresh)
            agent = fresh
        # Signed by the gateway and addressed here: now it must be the first use of its jti.
        try:
            agent_tokens.claim(agent.gateway_id, agent.public_key_pem, claims,
                               max_lifetime=current_app.config["LESFOCUS_AGENT_TOKEN_MAX_SECONDS"])
        except agent_tokens.GatewayRemoved:
            agent_keys.keys_of(current_app).forget([agent.gateway_id])
            raise
    except TokenError as err:
        raise _unauthorized(f"agent token refused: {err}") from None
    return agent


def require_agent(view: F) -> F:
    """Let only an enrolled agent through; its gateway id, school and key are `g.agent`."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.agent = authenticate_agent()
        return view(*args, **kwargs)

    return cast(F, wrapper)


def agent_gateway() -> Gateway:
    """The calling agent's gateway row, read now, for a view that writes; 401 when the gateway
    was removed, disabled, or enrolled with another key than the one that signed the request's
    token."""
    agent: AgentKey = g.agent
    gateway = db.session.get(Gateway, agent.gateway_id)
    if gateway is not None and gateway.disabled_at is not None:
        agent_keys.keys_of(current_app).forget([agent.gateway_id])
        raise _unauthorized("agent token refused: this gateway was disabled by IT")
    if gateway is None or gateway.public_key_pem != agent.public_key_pem:
        agent_keys.keys_of(current_app).forget([agent.gateway_id])
        raise _unauthorized("agent token refused: unknown, disabled or not enrolled gateway")
    return gateway


def _person_from_api_token(token: str) -> Person:
    key = current_app.extensions["lesfocus.signing_key"]
    try:
        claims = verify_api_token(key, token)
    except TokenError as err:
        raise _unauthorized(f"API token refused: {err}") from None
    person_id = parse_id(str(claims["sub"]))
    person = None if person_id is None else db.session.get(Person, person_id)
    if person is None or not person.active or person.school_id != claims.get("sch"):
        raise _unauthorized("API token refused: the account no longer exists or is disabled")
    if claims.get("pwd") != password_marker(person.password_hash):
        raise _unauthorized("API token refused: the password changed since it was issued; "
                            "sign in again")
    return person


def current_person() -> Person | None:
    """The person making this request (bearer API token, else a registered loader), or None.

    A request with a bad bearer token is refused with 401 rather than treated as anonymous.
    """
    if "lesfocus_person" in g:
        return cast("Person | None", g.lesfocus_person)
    token = bearer_token()
    person: Person | None = None
    if token is not None:
        person = _person_from_api_token(token)
    else:
        for loader in _user_loaders:
            person = loader()
            if person is not None:
                break
        if person is not None and not person.active:
            person = None
    g.lesfocus_person = person
    return person


def require_user(*roles: str) -> Callable[[F], F]:
    """Let through a signed-in person holding one of `roles` (any role when none are given).

    401 without a valid login, 403 with the wrong role. The person is `g.person`.
    """

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            person = current_person()
            if person is None:
                raise _unauthorized("sign in first: POST /api/v1/auth/token, then send "
                                    "'Authorization: Bearer <token>'", "")
            if roles and not person.has_role(*roles):
                raise ApiError(403, f"this needs the role {' or '.join(roles)}")
            g.person = person
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
