"""Who is calling: gateway agents (their own JWTs) and people (API tokens, later session logins).

`require_agent` and `require_user(*roles)` guard views. `current_person()` finds the person behind
a request: a `Bearer` API token first, then any loader registered with `register_user_loader`
(the dashboard registers its session-cookie login there), so API views serve both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import current_app, g, request

from .errors import ApiError
from .extensions import db
from .models import Gateway, Person
from .tokens import TokenError, load_public_key, unverified_subject, verify_agent_token, \
    verify_api_token

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


def agent_audience() -> list[str]:
    """The `aud` values an agent token may carry: LESFOCUS_PUBLIC_URL, else this request's base."""
    base = (current_app.config.get("LESFOCUS_PUBLIC_URL") or request.host_url).rstrip("/")
    return [base, base + "/"]


@lru_cache(maxsize=4096)
def _gateway_key(pem: str) -> Ed25519PublicKey:
    return load_public_key(pem)


def authenticate_agent() -> Gateway:
    """The enrolled gateway whose key signed this request's bearer token; ApiError 401 otherwise."""
    token = bearer_token()
    if token is None:
        raise _unauthorized("this endpoint needs an agent token (Authorization: Bearer <JWT>)", "")
    try:
        gateway_id = unverified_subject(token)
        gateway = db.session.get(Gateway, gateway_id) if len(gateway_id) <= 36 else None
        if gateway is None or not gateway.public_key_pem:
            raise TokenError("unknown or not enrolled gateway")
        verify_agent_token(token, _gateway_key(gateway.public_key_pem), gateway_id=gateway.id,
                           audience=agent_audience(),
                           max_lifetime=current_app.config["LESFOCUS_AGENT_TOKEN_MAX_SECONDS"])
    except TokenError as err:
        raise _unauthorized(f"agent token refused: {err}") from None
    return gateway


def require_agent(view: F) -> F:
    """Let only an enrolled agent through; the gateway is `g.gateway`."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.gateway = authenticate_agent()
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _person_from_api_token(token: str) -> Person:
    key = current_app.extensions["lesfocus.signing_key"]
    try:
        claims = verify_api_token(key, token)
    except TokenError as err:
        raise _unauthorized(f"API token refused: {err}") from None
    person = db.session.get(Person, int(claims["sub"]))
    if person is None or not person.active or person.school_id != claims.get("sch"):
        raise _unauthorized("API token refused: the account no longer exists or is disabled")
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
